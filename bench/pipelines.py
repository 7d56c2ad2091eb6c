"""In-process pipeline figures: what a pipeline adds around the model, and batching crops.

Every side runs on this thread with the model's context restored; the model is called the way
the node calls it (``BackendModel.predict`` on the pipeline's request), so each ratio weighs
the pipeline's own work against the model's on the same 640 x 480 frames.
"""
import time
from functools import partial
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from bench.common import Figure, p50
from ml_bridge.core.context import Context
from ml_bridge.core.model import BackendModel, ModelStamp
from ml_bridge.core.server import ModelServer, Prediction
from ml_bridge.pipelines.base import Frame, Request

#: The camera frame of every pipeline figure: 640 x 480 rgb8 (the same noise as bench.imagepub).
FRAME_SHAPE = (480, 640, 3)


def camera_frame() -> np.ndarray:
    """A 640 x 480 RGB frame of seeded noise."""
    return np.random.default_rng(0).integers(0, 255, FRAME_SHAPE, dtype=np.uint8)


def _seconds(fn: Callable[[], Any]) -> Tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# -- segment_prepost_share -----------------------------------------------------------------------
def segment_prepost(model: BackendModel, context: Context, reps: int, frames: int) -> Figure:
    """(preprocessing + postprocessing) / model time of the segment pipeline, per frame.

    Pre: the frame into the state and the request built (resize, normalize, layout). Post:
    every output (mask upscaled to the frame, colour overlay, classes present); the details
    also hold the post time of ``mask`` and ``predictions`` alone (no overlay).
    """
    from ml_bridge.pipelines.segment import SegmentPipeline

    pipeline = SegmentPipeline(model, {})
    stamp = ModelStamp.of(model, 1)
    every = frozenset(pipeline.outputs)
    lean = frozenset({"mask", "predictions"})
    image = camera_frame()
    fig = Figure("segment_prepost_share", "<= 0.25",
                 details={"frame": "640x480 rgb8", "model_input": list(model.inputs[0].shape),
                          "frames_per_rep": frames, "pre_ms": [], "model_ms": [], "post_ms": [],
                          "post_mask_predictions_ms": []})
    state = pipeline.new_state()
    with context:
        for rep in range(reps + 1):  # the first repetition warms every path
            pre: List[float] = []
            run: List[float] = []
            post: List[float] = []
            post_lean: List[float] = []
            for i in range(frames):
                frame = Frame(image, stamp=float(i))
                t_pre, request = _seconds(partial(_segment_request, pipeline, frame, state))
                t_model, outputs = _seconds(partial(model.predict, request.inputs))
                prediction = Prediction(outputs, stamp, t_model * 1e3)
                t_post, _ = _seconds(partial(pipeline.postprocess, request, prediction, every))
                t_lean, _ = _seconds(partial(pipeline.postprocess, request, prediction, lean))
                pre.append(t_pre)
                run.append(t_model)
                post.append(t_post)
                post_lean.append(t_lean)
            if rep == 0:
                continue
            fig.values.append((p50(pre) + p50(post)) / p50(run))
            for key, samples in (("pre_ms", pre), ("model_ms", run), ("post_ms", post),
                                 ("post_mask_predictions_ms", post_lean)):
                fig.details[key].append(p50(samples) * 1e3)
    return fig


def _segment_request(pipeline: Any, frame: Frame, state: Any) -> Request:
    pipeline.accept(frame, state)
    request = pipeline.request(state)
    assert request is not None
    return request  # type: ignore[no-any-return]


# -- clip_frame_cost_share -----------------------------------------------------------------------
class _TimedFormat:
    """An ImageFormat that adds up the time spent preprocessing frames (``frame_hwc``)."""

    def __init__(self, fmt: Any) -> None:
        self._fmt = fmt
        self.spent = 0.0

    def frame_hwc(self, image: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self._fmt.frame_hwc(image)
        self.spent += time.perf_counter() - start
        return out  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fmt, name)


def clip_frame_cost(model: BackendModel, context: Context, reps: int, frames: int) -> Figure:
    """Per-frame cost of the clip window / the model's time for one clip.

    The window's cost per frame: the checks and the write of the preprocessed frame into the
    ring, and the clip copied out when due (every frame at stride 1). The shared
    preprocessing (resize and normalize of the 640 x 480 frame, which every pipeline and the
    in-process reference pay) is timed apart, inside the same calls, and is in the details.
    """
    from ml_bridge.pipelines.clip import ClipPipeline

    pipeline = ClipPipeline(model, {})
    timed = _TimedFormat(pipeline.fmt)
    pipeline.fmt = timed  # type: ignore[assignment]
    image = camera_frame()
    fig = Figure("clip_frame_cost_share", "<= 0.1",
                 details={"frame": "640x480 rgb8", "clip": list(model.inputs[0].shape),
                          "frames_per_rep": frames, "window_ms": [], "preprocess_ms": [],
                          "model_ms": [], "share_with_preprocess": []})
    state = pipeline.new_state()
    stamp = 0.0
    with context:
        for rep in range(reps + 1):  # the first repetition warms every path
            window: List[float] = []
            pre: List[float] = []
            run: List[float] = []
            for _ in range(frames + pipeline.length):
                stamp += 1.0 / 30
                timed.spent = 0.0
                t_accept, due = _seconds(partial(pipeline.accept, Frame(image, stamp), state))
                if not due:
                    continue
                t_request, request = _seconds(partial(pipeline.request, state))
                t_model, _ = _seconds(partial(model.predict, request.inputs))
                window.append(t_accept - timed.spent + t_request)
                pre.append(timed.spent)
                run.append(t_model)
            if rep == 0:
                continue
            fig.values.append(p50(window) / p50(run))
            fig.details["share_with_preprocess"].append((p50(window) + p50(pre)) / p50(run))
            for key, samples in (("window_ms", window), ("preprocess_ms", pre), ("model_ms", run)):
                fig.details[key].append(p50(samples) * 1e3)
    return fig


# -- objects_batch_speedup -----------------------------------------------------------------------
def objects_batch(model: BackendModel, context: Context, reps: int, crops: int,
                  frames: int) -> Figure:
    """Time of ``crops`` detections messages of one box each / one message of ``crops`` boxes,
    through the objects pipeline and a ModelServer (request, model call, split back)."""
    from ml_bridge.pipelines.objects import Box, Detections, ObjectsPipeline

    pipeline = ObjectsPipeline(model, {})
    server = ModelServer(model, context, max_batch=crops)
    image = camera_frame()
    rng = np.random.default_rng(1)
    boxes = [Box(float(x), float(y), float(s), float(s * r)) for x, y, s, r in zip(
        rng.uniform(80, 560, crops), rng.uniform(80, 400, crops), rng.uniform(40, 120, crops),
        rng.uniform(0.6, 1.6, crops))]
    every = frozenset(pipeline.outputs)
    fig = Figure("objects_batch_speedup", "(report)",
                 details={"crops": crops, "frames_per_rep": frames, "one_call_ms": [],
                          "calls_ms": []})

    def handle(state: Any, stamp_ns: int, groups: List[List[Any]]) -> float:
        start = time.perf_counter()
        for group in groups:
            if pipeline.accept_detections(Detections(stamp_ns, group), state):
                request = pipeline.request(state)
                assert request is not None
                pipeline.postprocess(request, server.predict(request.inputs), every)
        return time.perf_counter() - start

    try:
        state = pipeline.new_state()
        for rep in range(reps + 1):
            together: List[float] = []
            apart: List[float] = []
            for i in range(frames):
                stamp_ns = (rep * frames + i + 1) * 1_000_000
                pipeline.accept(Frame(image, stamp_ns / 1e9), state)
                together.append(handle(state, stamp_ns, [boxes]))
                apart.append(handle(state, stamp_ns, [[b] for b in boxes]))
            if rep == 0:
                continue
            fig.values.append(p50(apart) / p50(together))
            fig.details["one_call_ms"].append(p50(together) * 1e3)
            fig.details["calls_ms"].append(p50(apart) * 1e3)
    finally:
        server.close()
    return fig


def pipeline_details(model: BackendModel) -> Dict[str, Any]:
    """What the figures ran: the model's input and the frame."""
    return {"model": model.describe(), "input": list(model.inputs[0].shape),
            "frame": list(FRAME_SHAPE)}
