"""In-process tracking figure: what tracking and counting cost per frame against the detector.

``track_cost_share``: the tracking step of ``detect`` with ``~track`` (the tracker's IoU
matching and optimal assignment, then the counting over two count lines) for a frame of
:data:`OBJECTS` confirmed tracks, over one call of the built-in ``shapes_det`` (torch, a
[1, 3, 128, 128] input, one intra-op thread as in the other in-process figures). The boxes
are a grid of squares of three classes moving right across a 640 x 480 frame, so tracks keep
matching and some cross the lines. Both are timed on the same repetition, one after the other.
"""
import time
from functools import partial
from typing import Any, Callable, List, Tuple

import numpy as np

from bench.common import Figure, p50

MODEL = "shapes_det"
OBJECTS = 50
LABELS = ("circle", "square", "triangle")
LINES = [{"name": "left", "points": [[220, 0], [220, 480]]},
         {"name": "right", "points": [[420, 0], [420, 480]]}]
PERIOD_NS = 100_000_000  # frames' stamps 0.1 s apart
#: The detect_post_share goal's model: the share of one is in the details too, for scale.
REFERENCE_MODEL_MS = 10.0


def _thread_ms(fn: Callable[[], Any]) -> Tuple[float, Any]:
    """(this thread's CPU milliseconds of one call of ``fn``, its result): other processes on
    the cores do not inflate it, and the steps timed are single-threaded."""
    start = time.thread_time()
    out = fn()
    return (time.thread_time() - start) * 1e3, out


def moving_boxes(frame: int, objects: int = OBJECTS) -> Tuple[np.ndarray, List[int]]:
    """Frame ``frame``'s boxes (x1 y1 x2 y2): ``objects`` 32-pixel squares on a grid of 10
    columns 60 pixels apart, each moving 3 pixels a frame to the right; and their classes."""
    index = np.arange(objects)
    x1 = 10.0 + 60.0 * (index % 10) + 3.0 * frame
    y1 = 10.0 + 45.0 * (index // 10)
    boxes = np.stack([x1, y1, x1 + 32.0, y1 + 32.0], axis=1)
    return boxes, [int(i) % len(LABELS) for i in index]


def track_cost(model: Any, context: Any, reps: int, frames: int) -> Figure:
    """(tracking + counting of one frame of OBJECTS tracks) / (one shapes_det call), p50 of
    this thread's CPU time over ``frames`` frames once every track is confirmed."""
    from ml_bridge.pipelines.track_stage import Tracking

    tracking = Tracking({"track": True, "count_lines": LINES})
    warm = tracking.settings.min_hits  # frames until every track is confirmed
    x = np.random.default_rng(0).random((1,) + tuple(model.inputs[0].shape[1:]), np.float32)
    fig = Figure("track_cost_share", "<= 0.1",
                 details={"model": MODEL, "input": list(x.shape), "objects": OBJECTS,
                          "count_lines": len(LINES), "frames_per_rep": frames,
                          "track_ms": [], "model_ms": [], "share_of_reference_model": [],
                          "reference_model_ms": REFERENCE_MODEL_MS, "confirmed": None,
                          "crossings": None})
    with context:
        for rep in range(reps + 1):  # the first repetition warms every path
            state = tracking.new_state()
            assert state is not None
            track_ms: List[float] = []
            model_ms: List[float] = []
            for frame in range(warm + frames):
                boxes, classes = moving_boxes(frame)
                spent, step = _thread_ms(partial(
                    tracking.step, state, 1_000_000_000_000 + frame * PERIOD_NS, boxes, classes,
                    [0.9] * len(classes), [LABELS[c] for c in classes]))
                if frame >= warm:
                    track_ms.append(spent)
                    model_ms.append(_thread_ms(partial(model.predict, [x]))[0])
            if rep == 0:
                fig.details["confirmed"] = len(step.frame.tracks)
                fig.details["crossings"] = sum(step.counts.forward) + sum(step.counts.backward)
                continue
            fig.values.append(p50(track_ms) / p50(model_ms))
            fig.details["track_ms"].append(p50(track_ms))
            fig.details["model_ms"].append(p50(model_ms))
            fig.details["share_of_reference_model"].append(p50(track_ms) / REFERENCE_MODEL_MS)
    return fig


def track_cost_phase(reps: int) -> List[Figure]:
    """track_cost_share in-process (torch, one intra-op thread)."""
    import torch

    from bench import local

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, context = local.load("torch", MODEL)
        return [track_cost(model, context, reps, 40)]
    finally:
        torch.set_num_threads(before)
