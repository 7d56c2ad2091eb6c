"""Smoke run of the benchmark code with tiny sizes, so ``make bench`` cannot rot.

No ratio is checked (timings are not tests): only that each figure comes out as a finite
number and that the results file and table carry every key. No master is needed.
"""
import json
import math
import os
import sys
from pathlib import Path

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
