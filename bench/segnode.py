"""Stream figures of the segment pipeline against a node with four cameras on the private master.

The node serves ``bench.models:shapes_seg_128`` with ``pipeline:=segment`` on four image topics
(outputs under ``~cam0/`` .. ``~cam3/``). The benchmark subscribes to each camera's ``mask`` and
``predictions`` (so both are computed and published) and counts predictions per camera:

- segment_fps_ratio: one camera publishing 640 x 480 rgb8 at 1.5x the in-process rate; the
  node's rate / the same pipeline run in-process (frame -> request -> model -> mask and classes);
- cameras_scaling: cameras at a camera's usual 30 frames per second (from one process): the
  sum of the four cameras' rates / one camera's rate, both measured in the same repetition.
  4 means the node keeps up with four cameras as with one.
"""
import time
from typing import Dict, FrozenSet, List, Tuple

import numpy as np
import rospy
from ml_bridge.msg import Prediction as PredictionMsg
from sensor_msgs.msg import Image

from bench.common import Figure, p50
from bench.harness import Group
from bench.peer import process_cpu_seconds
from bench.pipelines import camera_frame
from bench.rosfigs import _rates, _wait_connected, stream_with_cpu
from ml_bridge.core.context import Context
from ml_bridge.core.model import BackendModel, ModelStamp
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines.base import Frame

MODEL = "bench.models:shapes_seg_128"
#: Frames per second of each camera in cameras_scaling.
CAMERA_FPS = 30.0
CAMERAS = ["/cam0/image", "/cam1/image", "/cam2/image", "/cam3/image"]
#: What the benchmark subscribes to, per camera; the in-process side computes the same.
WANTED: FrozenSet[str] = frozenset({"mask", "predictions"})


def in_process(model: BackendModel, context: Context,
               seconds: float) -> Tuple[float, float, float, float]:
    """(p50 seconds per frame, frames per second, CPU seconds per frame, p50 model seconds) of
    the segment pipeline run in-process on a 640 x 480 frame for ``seconds`` (the wanted outputs
    only, as the node computes them)."""
    from ml_bridge.pipelines.segment import SegmentPipeline

    pipeline = SegmentPipeline(model, {})
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
        model_times.clear()  # the warm-up calls do not count
        cpu = time.process_time()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 10:
            start = time.perf_counter()
            pipeline.run(Frame(image), predict, wanted=WANTED)
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
    return p50(times), 1.0 / float(np.mean(times)), cpu / len(times), p50(model_times)


Events = Dict[str, List[Tuple[float, float, float]]]


def _listen(cameras: List[str]) -> Tuple[Events, List[rospy.Subscriber]]:
    """Subscribes to each camera's predictions (recorded: arrival, stamp, the node's model ms)
    and mask (only so it is computed)."""
    events: Events = {}
    subs = []
    for topic in cameras:
        camera = topic.strip("/").split("/")[0]
        got: List[Tuple[float, float, float]] = []
        events[camera] = got
        subs.append(rospy.Subscriber(f"/ml_bridge/{camera}/predictions", PredictionMsg,
                                     lambda m, out=got: out.append((time.time(),
                                                                    m.header.stamp.to_sec(),
                                                                    m.inference_ms)),
                                     queue_size=1000))
        subs.append(rospy.Subscriber(f"/ml_bridge/{camera}/mask", Image, lambda _m: None,
                                     queue_size=1))
    for sub in subs:
        _wait_connected(sub)
    return events, subs


def segment_figures(group: Group, model: BackendModel, context: Context, reps: int,
                    seconds: float, node: int = 0) -> List[Figure]:
    """segment_fps_ratio and cameras_scaling, repetition by repetition (``node``: the node's
    pid, whose CPU time per frame goes into the details beside the in-process side's and the
    camera's)."""
    fps = Figure("segment_fps_ratio", ">= 0.9",
                 details={"model": MODEL, "frame": "640x480 rgb8", "outputs": sorted(WANTED),
                          "fps": [], "latency_ms": [], "in_process_fps": [],
                          "in_process_frame_ms": [], "published_fps": [],
                          "node_cpu_ms_per_frame": [], "in_process_cpu_ms_per_frame": [],
                          "camera_cpu_cores": [], "node_cpu_cores": [], "node_model_ms": [],
                          "in_process_model_ms": []})
    scaling = Figure("cameras_scaling", "(report)",
                     details={"cameras": len(CAMERAS), "camera_fps": CAMERA_FPS,
                              "total_fps": [], "single_fps": [],
                              "per_camera_fps": [], "published_fps_per_camera": []})
    for _ in range(reps):
        frame_s, in_fps, in_cpu, model_s = in_process(model, context, min(seconds, 3.0))
        rate = 1.5 * in_fps  # faster than the model keeps up: latest frame wins
        before = process_cpu_seconds(node) if node else 0.0
        runs, camera_cpu = _run_cameras(group, CAMERAS[:1], rate, seconds)
        single, latency, published, node_model_ms = runs[0]
        node_cpu = process_cpu_seconds(node) - before if node else 0.0
        fps.values.append(single / in_fps)
        for key, value in (("fps", single), ("latency_ms", latency * 1e3),
                           ("in_process_fps", in_fps), ("in_process_frame_ms", frame_s * 1e3),
                           ("published_fps", published), ("node_model_ms", node_model_ms),
                           ("in_process_model_ms", model_s * 1e3),
                           ("in_process_cpu_ms_per_frame", in_cpu * 1e3),
                           ("camera_cpu_cores", camera_cpu / seconds)):
            fps.details[key].append(value)
        if node:  # the node's CPU over the camera's run and the wait after it
            fps.details["node_cpu_cores"].append(node_cpu / (seconds + 0.5))
            fps.details["node_cpu_ms_per_frame"].append(node_cpu / max(1.0, single * seconds) * 1e3)
        one = _run_cameras(group, CAMERAS[:1], CAMERA_FPS, seconds)[0][0][0]
        each = _run_cameras(group, CAMERAS, CAMERA_FPS, seconds)[0]
        total = sum(r[0] for r in each)
        scaling.values.append(total / one)
        scaling.details["total_fps"].append(total)
        scaling.details["single_fps"].append(one)
        scaling.details["per_camera_fps"].append([round(r[0], 2) for r in each])
        scaling.details["published_fps_per_camera"].append(each[0][2])
    return [fps, scaling]


def _run_cameras(group: Group, cameras: List[str], rate: float,
                 seconds: float) -> Tuple[List[Tuple[float, float, float, float]], float]:
    """Publishes on ``cameras`` at ``rate`` for ``seconds``; per camera (fps, p50 latency s,
    published fps, p50 model ms) of the node's predictions, and the camera process's CPU
    seconds."""
    events, subs = _listen(cameras)
    try:
        published, camera_cpu = stream_with_cpu(group, f"cameras{len(cameras)}",
                                                ",".join(cameras), rate, seconds)
        time.sleep(0.5)  # the last frames' results are on their way
    finally:
        for sub in subs:
            sub.unregister()
    out = []
    for camera in events:
        got_fps, latency = _rates([e[:2] for e in events[camera]], warmup=1.0)
        out.append((got_fps, latency, published, p50([e[2] for e in events[camera]])))
    return out, camera_cpu
