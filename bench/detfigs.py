"""In-process detect figures: what the decode, NMS and box mapping cost against the model.

``detect_post_share``: the model is ``bench.yolo_shaped:yolov8n_shaped`` (YOLOv8n's
``[1, 84, 8400]`` output on a 640 x 640 input, a few hundred candidates above the threshold);
the post-processing is what the ``detect`` pipeline does to that output (``core.detection``):
decode at the 0.25 threshold, class-aware NMS, the boxes mapped back from the letterboxed
input to the 640 x 480 frame. Both are timed on the same frames, one after the other.
"""
import time
from functools import partial
from typing import Any, Callable, List, Tuple

import numpy as np

from bench.common import Figure, p50
from bench.pipelines import camera_frame
from ml_bridge.core.context import Context
from ml_bridge.core.model import BackendModel

#: The detector of every detect figure (a factory the node serves as well).
MODEL = "bench.yolo_shaped:yolov8n_shaped"
#: The goal's model: the share is also given against a model call of this many ms.
REFERENCE_MODEL_MS = 10.0
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.45
MAX_DETECTIONS = 100


def _seconds(fn: Callable[[], Any]) -> Tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def model_input(image: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, Any]:
    """(the letterboxed frame as a [1, 3, H, W] float32 in [0, 1], the frame transform)."""
    from ml_bridge.core.detection import letterbox

    padded, transform = letterbox(image, size)
    x = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32) / np.float32(255)
    return x, transform


def postprocess(output: np.ndarray, transform: Any) -> List[Any]:
    """decode + NMS + mapping to the frame, per image (what the figure times)."""
    from ml_bridge.core.detection import decode_yolo, map_to_frame, suppress

    return [map_to_frame(suppress(found, NMS_IOU, MAX_DETECTIONS), transform)
            for found in decode_yolo(output, score_threshold=SCORE_THRESHOLD)]


def detect_post(model: BackendModel, context: Context, reps: int, frames: int) -> Figure:
    """(decode + NMS + letterbox mapping) / the model call, per 640 x 480 frame.

    The value is the share of a :data:`REFERENCE_MODEL_MS` model (the goal's); the share of
    the model measured here, each part's time, the candidates and detections are in the
    details.
    """
    size = tuple(model.inputs[0].shape[2:4])
    x, transform = model_input(camera_frame(), size)  # type: ignore[arg-type]
    fig = Figure("detect_post_share", "<= 0.25",
                 details={"model": MODEL, "output": None, "frame": "640x480 rgb8",
                          "reference_model_ms": REFERENCE_MODEL_MS,
                          "score_threshold": SCORE_THRESHOLD, "frames_per_rep": frames,
                          "model_ms": [], "post_ms": [], "post_cpu_ms": [], "decode_ms": [],
                          "share_of_measured_model": [], "candidates": None,
                          "detections": None})
    with context:
        for rep in range(reps + 1):  # the first repetition warms every path
            run: List[float] = []
            post: List[float] = []
            post_cpu: List[float] = []
            decode: List[float] = []
            for _ in range(frames):
                t_model, outputs = _seconds(lambda: model.predict([x]))
                cpu = time.thread_time()
                t_post, found = _seconds(partial(postprocess, outputs[0], transform))
                post_cpu.append(time.thread_time() - cpu)
                t_decode, raw = _seconds(partial(_decode, outputs[0]))
                run.append(t_model)
                post.append(t_post)
                decode.append(t_decode)
            if rep == 0:
                fig.details["output"] = list(outputs[0].shape)
                fig.details["candidates"] = len(raw[0])
                fig.details["detections"] = len(found[0])
                continue
            fig.values.append(p50(post) * 1e3 / REFERENCE_MODEL_MS)
            fig.details["share_of_measured_model"].append(p50(post) / p50(run))
            # post_cpu_ms: this thread's CPU time, which other processes on the machine
            # inflate less than the wall time
            for key, samples in (("model_ms", run), ("post_ms", post), ("post_cpu_ms", post_cpu),
                                 ("decode_ms", decode)):
                fig.details[key].append(p50(samples) * 1e3)
    return fig


def _decode(output: np.ndarray) -> List[Any]:
    from ml_bridge.core.detection import decode_yolo

    return decode_yolo(output, score_threshold=SCORE_THRESHOLD)
