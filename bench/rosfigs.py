"""Figures measured against a running ml_bridge node on the private master, each divided by
its in-process (or bare rospy) side measured in the same repetition.
"""
import math
import os
import threading
import time
from io import BytesIO
from typing import Any, List, Optional, Tuple

import actionlib
import numpy as np
import rospy
from actionlib_msgs.msg import GoalStatus
from ml_bridge.msg import Prediction, TrainAction, TrainGoal
from ml_bridge.srv import Predict
from sensor_msgs.msg import Image

from bench import local
from bench.common import Figure, p50, time_calls
from bench.harness import Group
from ml_bridge.core.datasets import digits
from ml_bridge.core.server import ModelServer
from ml_bridge.ros.conversions import array_to_tensor, image_to_array

DIGITS_TRAIN = 1500  # samples of the built-in `digits` dataset used for training


# -- 1. predict_overhead_ratio -------------------------------------------------------------------
def predict_overhead(group: Group, backend: str, key: str, reps: int, calls: int) -> Figure:
    """(p50 ~predict round trip - p50 in-process model call) / p50 bare rospy echo service.

    Batch 1 of digits_mlp, `data` encoding; persistent service connections on both sides.
    The echo service answers the node's own response, so the bytes on the wire are the same.
    """
    model, context = local.load(backend, "digits_mlp")
    x = digits(heldout=True).inputs[0][:1]
    request = [array_to_tensor(x)]
    node = rospy.ServiceProxy("/ml_bridge/predict", Predict, persistent=True)
    echo_proc = None
    try:
        response = node(inputs=request)
        if not response.success:
            raise RuntimeError(f"~predict failed: {response.message}")
        path = os.path.join(group.workdir, f"echo_response_{backend}.bin")
        buff = BytesIO()
        response.serialize(buff)
        with open(path, "wb") as f:
            f.write(buff.getvalue())
        echo_proc = group.python(f"echo_{backend}", "bench.echo", path)
        rospy.wait_for_service("/bench_echo/predict", timeout=60)
        echo = rospy.ServiceProxy("/bench_echo/predict", Predict, persistent=True)
        server = ModelServer(model, context)
        parts = ("node_ms", "echo_ms", "model_ms", "model_server_ms", "worker_hop_ms",
                 "thread_handoff_ms")
        fig = Figure(key, "<= 1.3", details={"calls_per_rep": calls, **{p: [] for p in parts}})
        try:
            for _ in range(20):  # warm every path
                node(inputs=request), echo(inputs=request), server.predict([x])
            for _ in range(reps):
                t_node = p50(time_calls(lambda: node(inputs=request), calls))
                t_echo = p50(time_calls(lambda: echo(inputs=request), calls))
                t_model = p50(local.model_call_times(model, context, [x], calls))
                # The breakdown of the node's side, in-process: ModelServer.predict (validation,
                # model-thread hop, model, class scores), the hop alone, and a bare thread hop.
                t_server = p50(time_calls(lambda: server.predict([x]), calls))
                t_hop = p50(local.worker_hop_times(context, [x], calls))
                t_floor = p50(local.thread_handoff_times(calls))
                fig.values.append((t_node - t_model) / t_echo)
                for name, t in zip(parts, (t_node, t_echo, t_model, t_server, t_hop, t_floor)):
                    fig.details[name].append(t * 1e3)
            fig.details["node_handler_ms"] = _handler_p50_ms()
        finally:
            echo.close()
            server.close()
        return fig
    finally:
        node.close()
        if echo_proc is not None:
            group.stop(echo_proc)


def _handler_p50_ms() -> Optional[float]:
    """The node's own p50 time inside its ~predict handler (its /diagnostics, over its last
    1000 requests): the round trip minus this is rospy's transport in the node."""
    from diagnostic_msgs.msg import DiagnosticArray

    deadline = time.time() + 5.0
    while time.time() < deadline:
        try:
            msg = rospy.wait_for_message("/diagnostics", DiagnosticArray, timeout=2.0)
        except rospy.ROSException:
            return None
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "latency_p50_ms" in values:
                return float(values["latency_p50_ms"])
    return None


# -- 5. train_overhead_ratio, 6. cancel_latency_batches ------------------------------------------
def _client() -> actionlib.SimpleActionClient:
    client = actionlib.SimpleActionClient("/ml_bridge/train", TrainAction)
    if not client.wait_for_server(rospy.Duration(60)):
        raise RuntimeError("the ~train action server did not come up")
    return client


def train_overhead(group: Group, backend: str, key: str, reps: int, epochs: int = 5) -> Figure:
    """Wall time of a train goal on `digits` through the action (node already loaded) divided
    by ModelServer.fit of the same model in-process (both clone, train and checkpoint).
    """
    client = _client()
    model, context = local.load(backend, "digits_mlp")
    server = ModelServer(model, context,
                         checkpoint_dir=os.path.join(group.workdir, f"inproc_{backend}_ckpt"))
    fig = Figure(key, "<= 1.05", details={"epochs": epochs, "action_s": [], "in_process_s": []})

    def goal(n: int) -> float:
        start = time.perf_counter()
        client.send_goal(TrainGoal(epochs=n, dataset="digits"))
        if not client.wait_for_result(rospy.Duration(300)):
            raise RuntimeError("train goal did not finish in 300 s")
        wall = time.perf_counter() - start
        if client.get_state() != GoalStatus.SUCCEEDED:
            raise RuntimeError(f"train goal ended in state {client.get_state()}: "
                               f"{client.get_result().message}")
        return wall

    try:
        goal(1)  # warm both sides (dataset cache, optimizer, first-call costs)
        local.fit_seconds(server, "digits", 1)
        for rep in range(reps):
            # alternate which side goes first: a 0.1 s run is at the mercy of the machine's
            # moment, and a fixed order would bias the ratio
            if rep % 2:
                t_local = local.fit_seconds(server, "digits", epochs)["seconds"]
                t_action = goal(epochs)
            else:
                t_action = goal(epochs)
                t_local = local.fit_seconds(server, "digits", epochs)["seconds"]
            fig.values.append(t_action / t_local)
            fig.details["action_s"].append(t_action)
            fig.details["in_process_s"].append(t_local)
        return fig
    finally:
        server.close()


def cancel_latency(backend: str, reps: int) -> Figure:
    """Time from cancel to PREEMPTED, in mean batch times (from the feedback interval)."""
    client = _client()
    model, _context = local.load(backend, "digits_mlp")
    batches = math.ceil(DIGITS_TRAIN / model.default_batch_size)
    fig = Figure("cancel_latency_batches", "<= 1 + 50 ms",
                 details={"batch_size": model.default_batch_size, "cancel_ms": [],
                          "batch_ms": [], "goal_batches": []})
    for _ in range(reps):
        stamps: List[float] = []
        two = threading.Event()

        def feedback(_fb: Any, stamps: List[float] = stamps, two: threading.Event = two) -> None:
            stamps.append(time.perf_counter())
            if len(stamps) >= 3:
                two.set()

        client.send_goal(TrainGoal(epochs=10000, dataset="digits"), feedback_cb=feedback)
        if not two.wait(120):
            client.cancel_goal()
            raise RuntimeError("no feedback from the train goal in 120 s")
        batch = (stamps[2] - stamps[1]) / batches
        start = time.perf_counter()
        client.cancel_goal()
        if not client.wait_for_result(rospy.Duration(60)):
            raise RuntimeError("the cancelled goal did not end in 60 s")
        latency = time.perf_counter() - start
        if client.get_state() != GoalStatus.PREEMPTED:
            raise RuntimeError(f"cancelled goal ended in state {client.get_state()}, not PREEMPTED")
        fig.values.append(latency / batch)
        fig.details["cancel_ms"].append(latency * 1e3)
        fig.details["batch_ms"].append(batch * 1e3)
        fig.details["goal_batches"].append(1 + 0.05 / batch)
    fig.goal = f"<= {p50(fig.details['goal_batches']):.0f} (1 + 50 ms)"
    return fig


# -- 3. image_fps_ratio, image_latency_ratio (ours and a naive subscriber) -----------------------
def _rates(events: List[Tuple[float, float]], warmup: float) -> Tuple[float, float]:
    """(fps, p50 latency s) from (arrival, stamp) pairs, after ``warmup`` s."""
    if len(events) < 3:
        raise RuntimeError(f"only {len(events)} predictions arrived")
    first = events[0][0] + warmup
    kept = [e for e in events if e[0] >= first] or events
    span = kept[-1][0] - kept[0][0]
    fps = (len(kept) - 1) / span if span > 0 else float("nan")
    return fps, p50([a - s for a, s in kept])


def _stream(group: Group, name: str, topic: str, rate: float, seconds: float) -> float:
    """Runs the camera for ``seconds``; returns the frames per second it published."""
    return stream_with_cpu(group, name, topic, rate, seconds)[0]


def stream_with_cpu(group: Group, name: str, topic: str, rate: float,
                    seconds: float) -> Tuple[float, float]:
    """Runs the camera for ``seconds``; returns (frames per second it published, the CPU
    seconds the camera process used in all)."""
    proc = group.python(name, "bench.imagepub", topic, str(rate), str(seconds))
    try:
        proc.wait(seconds + 60)
    finally:
        group.stop(proc)
    with open(os.path.join(group.workdir, f"{name}.log")) as f:
        last = [line for line in f if line.startswith("published ")][-1].split()
    return float(last[1]) / float(last[4]), float(last[7])


def image_figures(group: Group, topic: str, reps: int, seconds: float, rate: float,
                  threads: int = 0) -> List[Figure]:
    """The node on a 640x480 rgb8 stream vs preprocessing + model in-process, and a naive
    subscriber (queue_size 1, default buff_size, model in the callback) in the same run.
    ``threads``: torch threads of this process's sides (the node's are set by its caller).
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _image_figures(group, topic, reps, seconds, rate)
    finally:
        torch.set_num_threads(before)


def _image_figures(group: Group, topic: str, reps: int, seconds: float,
                   rate: float) -> List[Figure]:
    model, context = local.load("torch", "image_cnn")
    preprocess = model.preprocess_image
    assert preprocess is not None
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    local.frame_times(model, context, frame, 10)  # warm
    fps = Figure("image_fps_ratio", ">= 0.9")
    lat = Figure("image_latency_ratio", "<= 1.5")
    naive_fps = Figure("image_fps_ratio_naive", "(report)")
    naive_lat = Figure("image_latency_ratio_naive", "(report)")
    for fig in (fps, lat, naive_fps, naive_lat):
        fig.details.update({"fps": [], "latency_ms": [], "published_fps": [],
                            "in_process_frame_ms": [], "in_process_fps": []})

    def record(f: Figure, lt: Figure, events: List[Tuple[float, float]], frame_s: float,
               in_fps: float, published: float) -> None:
        got_fps, latency = _rates(events, warmup=1.0)
        f.values.append(got_fps / in_fps)
        lt.values.append(latency / frame_s)
        for fig in (f, lt):
            fig.details["fps"].append(got_fps)
            fig.details["latency_ms"].append(latency * 1e3)
            fig.details["published_fps"].append(published)
            fig.details["in_process_frame_ms"].append(frame_s * 1e3)
            fig.details["in_process_fps"].append(in_fps)

    for _ in range(reps):
        # fps over a window (stalls included, as in the stream's count); latency over p50
        times = local.frame_times(model, context, frame, 30, seconds=min(seconds, 3.0))
        frame_s, in_fps = p50(times), 1.0 / float(np.mean(times))

        camera = rate if rate > 0 else 1.5 * in_fps  # faster than the model keeps up
        ours: List[Tuple[float, float]] = []
        sub = rospy.Subscriber("/ml_bridge/predictions", Prediction,
                               lambda m, out=ours: out.append((time.time(), m.header.stamp.to_sec())),
                               queue_size=1000)
        try:
            _wait_connected(sub)
            published = _stream(group, "camera_ours", topic, camera, seconds)
            time.sleep(0.5)
        finally:
            sub.unregister()
        record(fps, lat, ours, frame_s, in_fps, published)

        naive: List[Tuple[float, float]] = []

        def callback(msg: Image, out: List[Tuple[float, float]] = naive) -> None:
            with context:
                model.predict(preprocess(image_to_array(msg)))
            out.append((time.time(), msg.header.stamp.to_sec()))

        sub = rospy.Subscriber(topic + "_naive", Image, callback, queue_size=1)
        try:
            published = _stream(group, "camera_naive", topic + "_naive", camera, seconds)
            time.sleep(0.5)
        finally:
            sub.unregister()
        record(naive_fps, naive_lat, naive, frame_s, in_fps, published)
    return [fps, lat, naive_fps, naive_lat]


def _wait_connected(sub: rospy.Subscriber, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while sub.get_num_connections() == 0:
        if time.time() > deadline:
            raise RuntimeError("the node's ~predictions topic never connected")
        time.sleep(0.05)
