"""``make demo-vision``: segmentation and detection on a camera stream, on a private master.

Serve ``shapes_seg`` with ``pipeline:=segment``, train it 10 epochs on ``shapes`` through the
``~train`` action, measure the held-out mean IoU through the node itself (held-out frames
published on the camera topic, ``~mask`` compared with their true masks), then run the
synthetic camera and save overlay and mask PNGs under ``build/demo/``. Then the same with
``shapes_det`` and ``pipeline:=detect`` on the same master (:mod:`ml_bridge.ros.demo_detect`):
train on ``shape_scenes``, held-out mAP@0.5 through ``~detections``, overlay PNGs with boxes.
Then that trained detector with ``~track`` and a count line on a scripted camera of shapes
crossing the line (:mod:`ml_bridge.ros.demo_track`): counts per label and line against the
truth, overlay PNGs with boxes, track ids and the line.
"""
import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ml_bridge.ros.processes import private_master, stop, wait_for_node

CAMERA = "/camera/image_raw"
NS = "/ml_bridge"
SHOTS = 4
SPACING = 10  # frames between two saved ones (10 Hz camera)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the vision demo; returns 0 when every step did what it should."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="torch", choices=["torch", "tensorflow"])
    parser.add_argument("--workdir", default=os.path.join(os.getcwd(), "build", "demo"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--det-epochs", type=int, default=15,
                        help="epochs of shapes_det on shape_scenes (0: no detection and no "
                             "tracking part)")
    args = parser.parse_args(argv)
    port = private_master(args.workdir)
    # The master is a process of its own, so that it outlives the segment node's launch and
    # the detect node (the same node name) registers with the master this process knows.
    master = subprocess.Popen(["rosmaster", "--core", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    print(f"== starting a private master on port {port} and the ml_bridge node (backend "
          f"{args.backend}, model shapes_seg, pipeline segment on {CAMERA}); log: "
          f"{os.path.join(args.workdir, 'server.log')}")
    camera: List[subprocess.Popen[bytes]] = []
    launch = _launch(port, args, "shapes_seg", "segment", "server.log")
    try:
        ok = _story(launch, camera, args)
        if args.det_epochs > 0:
            from ml_bridge.ros.demo_detect import detect_story

            _stop_all(camera, launch)
            print(f"== the detect node (model shapes_det, pipeline detect on {CAMERA}); log: "
                  f"{os.path.join(args.workdir, 'detect.log')}")
            launch = _launch(port, args, "shapes_det", "detect", "detect.log")
            ok = detect_story(launch, camera, args) and ok
            from ml_bridge.ros.demo_track import start_node, track_story

            _stop_all(camera, launch)
            print(f"== the tracking node (the trained shapes_det, ~track, a count line); log: "
                  f"{os.path.join(args.workdir, 'track.log')}")
            launch = start_node(port, args)
            ok = track_story(launch, args) and ok
        print("== demo-vision " + ("finished: all steps as expected" if ok else
                                   "FAILED: see above"))
        return 0 if ok else 1
    finally:
        _stop_all(camera, launch)
        stop(master)
        print("== stopped the camera, the node and the master")


def _launch(port: int, args: argparse.Namespace, model: str, pipeline: str,
            log_name: str) -> "subprocess.Popen[bytes]":
    """roslaunch of the node serving ``model`` with ``pipeline`` on the camera topic, its
    output to ``log_name`` in the work directory."""
    with open(os.path.join(args.workdir, log_name), "wb") as log:
        return subprocess.Popen(
            ["roslaunch", "-p", str(port), "ml_bridge", "server.launch",
             f"backend:={args.backend}", f"model:={model}", f"pipeline:={pipeline}",
             f"image:={CAMERA}", f"checkpoint_dir:={args.workdir}/checkpoints/{model}",
             f"data_root:={args.workdir}/data"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_all(camera: List["subprocess.Popen[bytes]"], launch: "subprocess.Popen[bytes]") -> None:
    """Stops the camera processes (forgotten after) and the node's launch."""
    for proc in camera:
        stop(proc)
    camera.clear()
    stop(launch)


class Frames:
    """The newest messages of one topic, and a wait for the one with a given stamp."""

    def __init__(self, topic: str, msg_type: type) -> None:
        import rospy

        self.cond = threading.Condition()
        self.by_stamp: Dict[Any, Any] = {}
        self.order: List[Any] = []
        self.sub = rospy.Subscriber(topic, msg_type, self._got, queue_size=50)

    def _got(self, msg: Any) -> None:
        with self.cond:
            self.by_stamp[msg.header.stamp] = msg
            self.order.append(msg.header.stamp)
            self.cond.notify_all()

    def wait(self, stamp: Any, timeout: float) -> Optional[Any]:
        with self.cond:
            self.cond.wait_for(lambda: stamp in self.by_stamp, timeout)
            return self.by_stamp.get(stamp)


def _heldout_iou(publisher: Any, masks: Frames) -> "tuple[float, float]":
    """Mean IoU and pixel accuracy of the node's ~mask on the held-out shapes frames."""
    import rospy

    from ml_bridge.core.metrics import confusion_matrix, mean_iou, pixel_accuracy
    from ml_bridge.core.synthetic import SHAPE_LABELS, shapes_frames
    from ml_bridge.ros.conversions import array_to_image, image_to_array

    frames, truth = shapes_frames(heldout=True)
    total = np.zeros((len(SHAPE_LABELS), len(SHAPE_LABELS)), np.int64)
    for i, (image, target) in enumerate(zip(frames, truth)):
        msg = array_to_image(image, "rgb8")
        msg.header.stamp = rospy.Time(100000 + i)
        got = None
        for _ in range(40):  # the first frames may go out before the connection is up
            publisher.publish(msg)
            got = masks.wait(msg.header.stamp, 0.5)
            if got is not None:
                break
        if got is None:
            raise RuntimeError(f"no ~mask for held-out frame {i}")
        total += confusion_matrix(image_to_array(got), target, len(SHAPE_LABELS))
    return mean_iou(total), pixel_accuracy(total)


def _story(launch: "subprocess.Popen[bytes]", camera: List["subprocess.Popen[bytes]"],
           args: argparse.Namespace) -> bool:
    import cv2
    import rospy
    from actionlib_msgs.msg import GoalStatus
    from sensor_msgs.msg import Image

    from ml_bridge.msg import Prediction, TrainGoal
    from ml_bridge.ros.cli_train import TrainClient, format_metrics, state_name
    from ml_bridge.ros.conversions import image_to_array
    from ml_bridge.srv import GetInfo

    if not wait_for_node(launch, NS + "/info", "ml_bridge_demo_vision"):
        print(f"the node did not come up; see {os.path.join(args.workdir, 'server.log')}")
        return False
    info = rospy.ServiceProxy(NS + "/info", GetInfo)()
    print(f"== serving {info.model} on {info.backend} {info.framework_version} ({info.device}), "
          f"labels {', '.join(info.labels)}")
    publisher = rospy.Publisher(CAMERA, Image, queue_size=2)
    masks = Frames(NS + "/mask", Image)
    print(f"== training {args.epochs} epochs on 'shapes' through the ~train action")
    start = time.perf_counter()
    state, result = TrainClient(NS).run(TrainGoal(epochs=args.epochs, dataset="shapes",
                                                  validation_split=0.1))
    print(f"   {state_name(state)} in {time.perf_counter() - start:.0f} s: {result.message}")
    print(f"   loss {result.loss:.4f} "
          f"{format_metrics(list(result.metric_names), list(result.metric_values))}")
    ok = state == GoalStatus.SUCCEEDED
    iou, accuracy = _heldout_iou(publisher, masks)
    print(f"== held-out 'shapes' through the node's ~mask: mean IoU {iou:.3f}, pixel accuracy "
          f"{accuracy:.3f}")
    ok = ok and iou >= 0.8
    masks.sub.unregister()
    publisher.unregister()

    print(f"== the synthetic camera on {CAMERA} (320 x 240, 10 Hz); saving {SHOTS} frames")
    overlays = Frames(NS + "/overlay", Image)
    masks = Frames(NS + "/mask", Image)
    preds = Frames(NS + "/predictions", Prediction)
    camera.append(subprocess.Popen(
        ["rosrun", "ml_bridge", "camera", "--source", "synthetic", "--rate", "10",
         f"image:={CAMERA}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True))
    saved: List[str] = []
    deadline = time.time() + 60
    with overlays.cond:
        overlays.cond.wait_for(lambda: len(overlays.order) >= SPACING * SHOTS, 60)
    stamps = overlays.order[::SPACING][:SHOTS]  # a second apart: the shapes have moved
    palette = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 60], [60, 90, 230]], np.uint8)
    for k, stamp in enumerate(stamps):
        overlay = overlays.by_stamp[stamp]
        mask = masks.wait(stamp, max(0.0, deadline - time.time()))
        pred = preds.wait(stamp, max(0.0, deadline - time.time()))
        if mask is None or pred is None:
            continue
        base = os.path.join(args.workdir, f"segment_{k}")
        cv2.imwrite(base + "_overlay.png", cv2.cvtColor(image_to_array(overlay), cv2.COLOR_RGB2BGR))
        ids = image_to_array(mask)
        cv2.imwrite(base + "_mask.png", ids)  # mono8 class ids, as published
        cv2.imwrite(base + "_mask_color.png",
                    cv2.cvtColor(palette[np.minimum(ids, len(palette) - 1)], cv2.COLOR_RGB2BGR))
        present = ", ".join(f"{label} {score:.2f}" for label, score in zip(pred.labels, pred.scores))
        print(f"   frame {stamp.to_sec():.2f}: {present}")
        saved += [base + "_overlay.png", base + "_mask.png", base + "_mask_color.png"]
    ok = ok and len(saved) == 3 * SHOTS
    for path in saved:
        print(f"   {path}")
    print(f"== held-out mean IoU {iou:.3f} (model version {result.model_version})")
    for frames in (overlays, masks, preds):
        frames.sub.unregister()
    return ok


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
