"""Smoke run of the benchmark code with tiny sizes, so ``make bench`` cannot rot.

No ratio is checked (timings are not tests): only that each figure comes out as a finite
number and that the results file and table carry every key. No master is needed.
"""
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, List

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, ROOT)

from bench import local  # noqa: E402
from bench.common import Figure, missing, table, write_results  # noqa: E402
from bench.run import KEYS  # noqa: E402


def _finite(fig: Figure) -> bool:
    return bool(fig.values) and all(math.isfinite(v) for v in fig.values)


def test_tensor_bytes_figures_on_1000_elements() -> None:
    speed, memcpy = local.tensor_bytes(1000, reps=2)
    assert speed.key == "tensor_bytes_speedup" and memcpy.key == "tensor_bytes_vs_memcpy"
    assert _finite(speed) and _finite(memcpy)
    assert speed.median is not None and speed.median > 0


def test_context_restore_on_torch() -> None:
    _model, context = local.load("torch", "digits_mlp")
    fig = local.context_restore(context, "context_restore_us", iterations=50, reps=2)
    assert _finite(fig) and len(fig.details["main_thread_us"]) == 2


def test_batching_and_in_process_sides_tiny() -> None:
    import numpy as np

    model, context = local.load("torch", "digits_mlp")
    image = np.zeros((16, 16), np.uint8)
    fig = local.batching(model, context, callers=2, calls=2, reps=1, image=image)
    assert _finite(fig)
    assert len(local.model_call_times(model, context, [np.zeros((1, 64), np.float32)], 3)) == 3
    assert len(local.frame_times(model, context, image, 2)) == 2


def test_results_file_and_table_have_every_key(tmp_path: Path) -> None:
    figures = [Figure(KEYS[0][0], KEYS[0][1], values=[1.0, 2.0, 3.0])]
    figures += [missing(key, goal, "not run in the smoke test") for key, goal in KEYS[1:]]
    path = str(tmp_path / "results.json")
    write_results(path, figures, {"smoke": True})
    with open(path) as f:
        data = json.load(f)
    assert all(key in data for key, _goal in KEYS)
    assert data[KEYS[0][0]] == 2.0 and data[KEYS[1][0]] is None
    text = table(figures)
    assert all(key in text for key, _goal in KEYS)


def test_hop_floors_tiny() -> None:
    import numpy as np

    _model, context = local.load("torch", "digits_mlp")
    assert len(local.thread_handoff_times(3)) == 3
    hops = local.worker_hop_times(context, [np.zeros((1, 64), np.float32)], 3)
    assert len(hops) == 3 and all(h > 0 for h in hops)


def test_profile_summary_reads_py_spy_collapsed_stacks(tmp_path: Path) -> None:
    from bench.profile_predict import summarize

    path = tmp_path / "stacks.txt"
    path.write_text(
        "thread (1): handle;run (threading.py:975);handle_predict (ml_bridge/ros/node.py:72) 3\n"
        "thread (1): handle;run (threading.py:975);recv_buff (rospy/impl/tcpros_base.py:100) 1\n"
        "thread (2): model;_loop (ml_bridge/core/worker.py:1);predict (model.py:5) 4\n"
        "a stack py-spy could not finish (frames.py:1);\n")
    text = summarize(str(path))
    assert "thread (1): handle: 4 samples" in text and "thread (2): model: 4 samples" in text
    assert "75.0%  handle_predict (node.py)" in text  # 3 of the handle thread's 4, self time
    assert "100.0%  predict (model.py)" in text
    only = summarize(str(path), threads=("model",))
    assert "handle" not in only and "thread (2): model" in only


def test_pipeline_figures_tiny() -> None:
    from bench import pipelines

    seg, seg_context = local.load("torch", "bench.models:shapes_seg_128")
    fig = pipelines.segment_prepost(seg, seg_context, reps=1, frames=1)
    assert fig.key == "segment_prepost_share" and _finite(fig)
    clip, clip_context = local.load("torch", "motion_clip")
    fig = pipelines.clip_frame_cost(clip, clip_context, reps=1, frames=1)
    assert _finite(fig) and fig.details["preprocess_ms"][0] > 0  # timed apart from the window
    crop, crop_context = local.load("torch", "shapes_crop")
    fig = pipelines.objects_batch(crop, crop_context, reps=1, crops=2, frames=1)
    assert _finite(fig)


def test_segment_in_process_side_tiny() -> None:
    from bench import segnode

    model, context = local.load("torch", segnode.MODEL)
    frame_s, fps, cpu, model_s = segnode.in_process(model, context, seconds=0.0)
    assert frame_s > 0 and fps > 0 and cpu > 0 and 0 < model_s < frame_s


def test_the_hand_written_peer_serves_the_same_weights() -> None:
    import numpy as np
    from bench.handwritten import torch_model

    from ml_bridge.core.server import ModelServer

    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    scores, ids, top = torch_model()(x)
    ours = ModelServer(*local.load("torch", "digits_mlp"))
    try:
        np.testing.assert_allclose(scores, ours.predict([x]).outputs[0], rtol=1e-6)
    finally:
        ours.close()
    assert ids == scores.argmax(axis=1).tolist() and all(0 < p <= 1 for p in top)


def test_throughput_schedule_alternates_and_client_logs_add_up(tmp_path: Path) -> None:
    from bench.client import schedule
    from bench.peer import _windows

    assert schedule(["a", "b"], 3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    for name, lines in (("c0", "window 0 /a 10\nwindow 0 /b 7\n"), ("c1", "noise\nwindow 0 /a 5\n")):
        (tmp_path / f"{name}.log").write_text(lines)
    assert _windows(str(tmp_path), ["c0", "c1"]) == {(0, "/a"): 15, (0, "/b"): 7}


def test_window_cpu_reads_the_serving_process_of_each_window() -> None:
    import subprocess
    import sys
    import time

    from bench.peer import _window_cpu, process_cpu_seconds

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = time.time() + 0.2
        spent = _window_cpu(start, ["/busy", "/idle"], 1, 0.3, {"/busy": busy.pid, "/idle": idle.pid})
        assert set(spent) == {(0, "/busy"), (0, "/idle")}
        assert spent[(0, "/busy")] > 0.05 and spent[(0, "/idle")] < 0.03
        assert process_cpu_seconds(busy.pid) >= spent[(0, "/busy")]
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()


def test_hot_path_pieces_all_run() -> None:
    from bench.hot_path import best_us, pieces

    named = pieces()
    assert named[0][0] == "hand-written handler" and named[1][0] == "ml_bridge handler"
    for _name, fn in named:
        fn()
    assert best_us(named[0][1], calls=5, runs=1) > 0


def test_node_phases_stop_what_started_and_an_error_leaves_its_keys_null() -> None:
    from bench.phases import _node_phases

    class Recorder:
        def __init__(self) -> None:
            self.skipped: List[Any] = []
            self.stopped: List[str] = []

        def skip(self, keys: List[str], reason: str) -> None:
            self.skipped.append((keys, reason))

        def stop(self, proc: str) -> None:
            self.stopped.append(proc)

    rec = Recorder()
    with _node_phases(rec, rec, ["a_key"], "test node") as started:  # type: ignore[arg-type]
        started.append("node")
        raise RuntimeError("did not come up")
    assert rec.skipped == [(["a_key"], "test node: RuntimeError: did not come up")]
    assert rec.stopped == ["node"]
    with _node_phases(rec, rec, ["b_key"], "ok node") as started:  # type: ignore[arg-type]
        started.append("other")
    assert len(rec.skipped) == 1 and rec.stopped == ["node", "other"]
