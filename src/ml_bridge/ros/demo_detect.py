"""The detection half of ``make demo-vision``: ``shapes_det`` with the ``detect`` pipeline.

Against a node serving ``shapes_det`` with ``pipeline:=detect`` on the camera topic (started
by :mod:`ml_bridge.ros.demo_vision` on its master): train it on ``shape_scenes`` through the
``~train`` action, measure the held-out mAP@0.5 through the node itself (held-out frames
published on the camera topic, ``~detections`` compared with their true boxes), then run the
synthetic camera (a circle, a square and a triangle moving over a textured ground) and save
``~overlay`` PNGs with the boxes under the work directory.
"""
import argparse
import os
import subprocess
import time
from typing import Any, List, Tuple

import numpy as np

from ml_bridge.ros.demo_vision import CAMERA, NS, SHOTS, SPACING, Frames

#: The node's labels the synthetic camera always shows, one of each.
CAMERA_SHAPES = ("circle", "square", "triangle")
#: The held-out mAP@0.5 through the node below which the demo fails. ``~train`` with the
#: defaults and 15 epochs reaches 0.9 on held-out data (measured with scores from 0.01);
#: the node keeps scores from ``~score_threshold`` (0.25), which loses a little recall.
MIN_MAP50 = 0.8


def boxes_of(msg: Any) -> Any:
    """A Detection2DArray -> :class:`ml_bridge.core.detection.Boxes` (x1 y1 x2 y2)."""
    from ml_bridge.core.detection import Boxes

    rows = [(d.bbox.center.x - d.bbox.size_x / 2, d.bbox.center.y - d.bbox.size_y / 2,
             d.bbox.center.x + d.bbox.size_x / 2, d.bbox.center.y + d.bbox.size_y / 2)
            for d in msg.detections]
    return Boxes(np.array(rows, np.float32).reshape(-1, 4),
                 np.array([d.results[0].score for d in msg.detections], np.float32),
                 np.array([d.results[0].id for d in msg.detections], np.int64))


def heldout_map50(publisher: Any, detections: Frames) -> Tuple[float, int]:
    """(mAP@0.5 of the node's ~detections on the held-out shape_scenes frames, frames)."""
    import rospy

    from ml_bridge.core.box_metrics import average_precision
    from ml_bridge.core.shape_scenes import SCENE_LABELS, scene_frames
    from ml_bridge.ros.conversions import array_to_image

    frames, truths = scene_frames(heldout=True)
    found = []
    for i, image in enumerate(frames):
        msg = array_to_image(np.ascontiguousarray(image), "rgb8")
        msg.header.stamp = rospy.Time(200000 + i)
        got = None
        for _ in range(40):  # the first frames may go out before the connection is up
            publisher.publish(msg)
            got = detections.wait(msg.header.stamp, 0.5)
            if got is not None:
                break
        if got is None:
            raise RuntimeError(f"no ~detections for held-out frame {i}")
        found.append(boxes_of(got))
    return average_precision(found, list(truths), len(SCENE_LABELS)), len(frames)


def detect_story(launch: "subprocess.Popen[bytes]", camera: List["subprocess.Popen[bytes]"],
                 args: argparse.Namespace) -> bool:
    """Trains, measures and runs the detector; True when every step did what it should."""
    import cv2
    import rospy
    from actionlib_msgs.msg import GoalStatus
    from sensor_msgs.msg import Image

    from ml_bridge.msg import Prediction, TrainGoal
    from ml_bridge.ros.cli_train import TrainClient, format_metrics, state_name
    from ml_bridge.ros.conversions import image_to_array
    from ml_bridge.ros.detection_array import message_classes
    from ml_bridge.ros.processes import wait_for_node
    from ml_bridge.srv import GetInfo

    if not wait_for_node(launch, NS + "/info", "ml_bridge_demo_vision"):
        print(f"the detect node did not come up; see {os.path.join(args.workdir, 'detect.log')}")
        return False
    info = rospy.ServiceProxy(NS + "/info", GetInfo)()
    print(f"== serving {info.model} on {info.backend}, pipeline detect on {CAMERA}, labels "
          f"{', '.join(info.labels)}")
    print(f"== training {args.det_epochs} epochs on 'shape_scenes' through the ~train action")
    start = time.perf_counter()
    state, result = TrainClient(NS).run(TrainGoal(epochs=args.det_epochs, dataset="shape_scenes",
                                                  validation_split=0.1))
    print(f"   {state_name(state)} in {time.perf_counter() - start:.0f} s: {result.message}")
    print(f"   loss {result.loss:.4f} "
          f"{format_metrics(list(result.metric_names), list(result.metric_values))}")
    ok = state == GoalStatus.SUCCEEDED

    publisher = rospy.Publisher(CAMERA, Image, queue_size=2)
    detections = Frames(NS + "/detections", message_classes()[0])
    map50, count = heldout_map50(publisher, detections)
    print(f"== held-out 'shape_scenes' through the node's ~detections ({count} frames): "
          f"mAP@0.5 {map50:.3f} (the demo's bar {MIN_MAP50}: the node keeps scores from "
          f"~score_threshold; the contract's 0.9 counts scores from 0.01)")
    ok = ok and map50 >= MIN_MAP50
    detections.sub.unregister()
    publisher.unregister()

    print(f"== the synthetic camera on {CAMERA} (320 x 240, 10 Hz); saving {SHOTS} frames")
    overlays = Frames(NS + "/overlay", Image)
    preds = Frames(NS + "/predictions", Prediction)
    camera.append(subprocess.Popen(
        ["rosrun", "ml_bridge", "camera", "--source", "synthetic", "--rate", "10",
         f"image:={CAMERA}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True))
    deadline = time.time() + 60
    with overlays.cond:
        overlays.cond.wait_for(lambda: len(overlays.order) >= SPACING * SHOTS, 60)
    saved: List[str] = []
    all_three = 0
    for k, stamp in enumerate(overlays.order[::SPACING][:SHOTS]):
        pred = preds.wait(stamp, max(0.0, deadline - time.time()))
        if pred is None:
            continue
        path = os.path.join(args.workdir, f"detect_{k}_overlay.png")
        image = image_to_array(overlays.by_stamp[stamp])
        cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        saved.append(path)
        found = ", ".join(f"{label} {score:.2f}" for label, score in zip(pred.labels, pred.scores))
        all_three += set(CAMERA_SHAPES) <= set(pred.labels)
        print(f"   frame {stamp.to_sec():.2f}: {found or 'nothing'}")
    for path in saved:
        print(f"   {path}")
    # Reported, not required: the held-out mAP above is the measure of the detector. The
    # camera's scenes are not shape_scenes' (shapes cross and hide one another, the frame is
    # letterboxed), and the small detector scores some of their shapes, squares most, near or
    # under ~score_threshold; the tracking part's scene is drawn as it was trained.
    print(f"== the circle, the square and the triangle all found in {all_three} of "
          f"{len(saved)} saved frames")
    return ok and len(saved) == SHOTS
