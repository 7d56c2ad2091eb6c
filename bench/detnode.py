"""Stream figures of the detect pipeline: the node against the same pipeline in-process and
against a detector node written by hand, on the private master.

The node serves :data:`bench.detfigs.MODEL` (YOLOv8n's shapes) with ``pipeline:=detect`` on
one camera topic; the hand-written node (``bench.handwritten_detect``) the same weights on
another. A camera (``bench.imagepub``, 640 x 480 rgb8) publishes to one of them at a time at
1.5x the in-process rate (faster than either keeps up: the latest frame wins). Each side
publishes the detections (vision_msgs/Detection2DArray) and the frame with the boxes drawn;
the benchmark subscribes to both on both sides (``rospy.AnyMsg``: nothing is deserialized
here) and counts the detections messages:

- detect_fps_ratio: the node's detections per second / the pipeline in-process (frame ->
  letterbox -> model -> decode, NMS, boxes to the frame -> detections and overlay);
- detect_vs_handwritten_fps: the node's detections per second / the hand-written node's,
  the two measured one after the other in each repetition (the order alternating).
"""
import struct
import time
from typing import Any, Dict, FrozenSet, List, Tuple

import numpy as np
import rospy

from bench.common import Figure, p50
from bench.harness import Group
from bench.peer import process_cpu_seconds
from bench.pipelines import camera_frame
from bench.rosfigs import _rates, _wait_connected, stream_with_cpu
from ml_bridge.core.context import Context
from ml_bridge.core.model import BackendModel, ModelStamp
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines.base import Frame

#: The node's camera, and the hand-written node's.
OURS_TOPIC = "/bench/det_image"
HAND_TOPIC = "/bench/det_image_hand"
#: What is subscribed to on each side: (detections, the frame with the boxes drawn).
OURS = ("/ml_bridge/detections", "/ml_bridge/overlay")
HAND = ("/bench_handwritten_detect/detections", "/bench_handwritten_detect/image")
#: The node's outputs the benchmark subscribes to; the in-process side computes the same.
WANTED: FrozenSet[str] = frozenset({"detections", "overlay"})


def in_process(model: BackendModel, context: Context,
               seconds: float) -> Tuple[float, float, float, float]:
    """(p50 seconds per frame, frames per second, CPU seconds per frame, p50 model seconds) of
    the detect pipeline run in-process on a 640 x 480 frame for ``seconds`` (the outputs the
    node is asked for, as it computes them)."""
    from ml_bridge.pipelines.detect import DetectPipeline

    pipeline = DetectPipeline(model, {})
    stamp = ModelStamp.of(model, 1)
    image = camera_frame()
    model_times: List[float] = []

    def predict(inputs: List[np.ndarray]) -> Prediction:
        start = time.perf_counter()
        outputs = model.predict(inputs)
        model_times.append(time.perf_counter() - start)
        return Prediction(outputs, stamp, 0.0)

    times: List[float] = []
    with context:
        for _ in range(3):  # warm
            pipeline.run(Frame(image), predict, wanted=WANTED)
        model_times.clear()
        cpu = time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 10:
            start = time.perf_counter()
            pipeline.run(Frame(image), predict, wanted=WANTED)
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
    return p50(times), 1.0 / float(np.mean(times)), cpu / len(times), p50(model_times)


def _stamp(msg: Any) -> float:
    """The header stamp of a serialized message that starts with a std_msgs/Header."""
    _seq, secs, nsecs = struct.unpack_from("<3I", msg._buff)
    return float(secs + nsecs * 1e-9)


def _side(group: Group, name: str, camera: str, topics: Tuple[str, str], rate: float,
          seconds: float) -> Tuple[float, float, float, float]:
    """Publishes on ``camera`` at ``rate`` for ``seconds``; (detections per second, p50
    latency s, published frames per second, the camera process's CPU seconds)."""
    events: List[Tuple[float, float]] = []
    subs = [rospy.Subscriber(topics[0], rospy.AnyMsg,
                             lambda m: events.append((time.time(), _stamp(m))), queue_size=1000),
            rospy.Subscriber(topics[1], rospy.AnyMsg, lambda _m: None, queue_size=1)]
    try:
        for sub in subs:
            _wait_connected(sub)
        published, camera_cpu = stream_with_cpu(group, name, camera, rate, seconds)
        time.sleep(0.5)  # the last frames' results are on their way
    finally:
        for sub in subs:
            sub.unregister()
    fps, latency = _rates(events, warmup=1.0)
    return fps, latency, published, camera_cpu


def detect_figures(group: Group, model: BackendModel, context: Context, reps: int,
                   seconds: float, pids: Dict[str, int]) -> List[Figure]:
    """detect_fps_ratio and detect_vs_handwritten_fps, repetition by repetition (``pids``:
    ``ours`` and ``hand``, whose CPU time per frame goes into the details)."""
    keys = ("fps", "latency_ms", "published_fps", "cpu_ms_per_frame")
    fps = Figure("detect_fps_ratio", ">= 0.9",
                 details={"model": "bench.yolo_shaped:yolov8n_shaped", "frame": "640x480 rgb8",
                          "outputs": sorted(WANTED), "in_process_fps": [],
                          "in_process_frame_ms": [], "in_process_model_ms": [],
                          "in_process_cpu_ms_per_frame": [], **{k: [] for k in keys}})
    hand = Figure("detect_vs_handwritten_fps", ">= 1.0",
                  details={"handwritten": "bench/handwritten_detect.py", "hand_first": [],
                           **{f"hand_{k}": [] for k in keys}})
    for rep in range(reps):
        frame_s, in_fps, in_cpu, model_s = in_process(model, context, min(seconds, 3.0))
        rate = 1.5 * in_fps
        order = [("hand", HAND_TOPIC, HAND), ("ours", OURS_TOPIC, OURS)]
        if rep % 2 == 0:
            order.reverse()
        got: Dict[str, Tuple[float, float, float, float]] = {}
        for side, camera, topics in order:
            before = process_cpu_seconds(pids[side])
            rate_got, latency, published, _camera_cpu = _side(group, f"camera_det_{side}",
                                                              camera, topics, rate, seconds)
            cpu = process_cpu_seconds(pids[side]) - before
            got[side] = (rate_got, latency, published,
                         cpu / max(1.0, rate_got * seconds) * 1e3)
        fps.values.append(got["ours"][0] / in_fps)
        hand.values.append(got["ours"][0] / got["hand"][0])
        for key, value in (("in_process_fps", in_fps), ("in_process_frame_ms", frame_s * 1e3),
                           ("in_process_model_ms", model_s * 1e3),
                           ("in_process_cpu_ms_per_frame", in_cpu * 1e3)):
            fps.details[key].append(value)
        for i, key in enumerate(keys):
            value = got["ours"][i] * (1e3 if key == "latency_ms" else 1.0)
            fps.details[key].append(value)
            hand.details[f"hand_{key}"].append(got["hand"][i] *
                                               (1e3 if key == "latency_ms" else 1.0))
        hand.details["hand_first"].append(rep % 2 == 1)
    return [fps, hand]


def wait_for_topic(topic: str, proc: Any, timeout: float) -> None:
    """Waits until ``topic`` is advertised on the master (the process that will advertise it
    is ``proc``); raises if it exits or ``timeout`` s pass first."""
    deadline = time.time() + timeout
    while not any(name == topic for name, _type in rospy.get_published_topics()):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{topic} was not advertised in {timeout:.0f} s (process "
                               f"{'exited' if proc.poll() is not None else 'still running'})")
        time.sleep(0.2)
