"""In-process detect figures: what the decode, NMS and box mapping cost against the model.

``detect_post_share``: the model is ``bench.yolo_shaped:yolov8n_shaped`` (YOLOv8n's
``[1, 84, 8400]`` output on a 640 x 640 input, a few hundred candidates above the threshold);
the post-processing is what the ``detect`` pipeline does to that output (``core.detection``):
decode at the 0.25 threshold, class-aware NMS, the boxes mapped back from the letterboxed
input to the 640 x 480 frame. Both are timed on the same frames, one after the other.
"""
import time
from functools import partial
from typing import Any, Callable, Dict, List, Tuple

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


def _timed(fn: Callable[[], Any]) -> Tuple[float, float, Any]:
    """(this thread's CPU seconds, wall seconds, result) of one call of ``fn``."""
    cpu, wall = time.thread_time(), time.perf_counter()
    out = fn()
    return time.thread_time() - cpu, time.perf_counter() - wall, out


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

    The value is the post-processing's share of a :data:`REFERENCE_MODEL_MS` model (the
    goal's); its share of the model measured here, each part's time, the candidates and
    detections are in the details. Times are this thread's CPU time (p50 over the frames):
    on an idle machine it is the wall time of these single-threaded steps (the model runs on
    one intra-op thread, this one), and other processes sharing the cores do not inflate it;
    the wall times are in the details too.
    """
    size = tuple(model.inputs[0].shape[2:4])
    x, transform = model_input(camera_frame(), size)  # type: ignore[arg-type]
    fig = Figure("detect_post_share", "<= 0.25",
                 details={"model": MODEL, "output": None, "frame": "640x480 rgb8",
                          "reference_model_ms": REFERENCE_MODEL_MS,
                          "score_threshold": SCORE_THRESHOLD, "frames_per_rep": frames,
                          "share_of_measured_model": [], "model_ms": [], "post_ms": [],
                          "decode_ms": [], "model_wall_ms": [], "post_wall_ms": [],
                          "candidates": None, "detections": None})
    with context:
        for rep in range(reps + 1):  # the first repetition warms every path
            times: Dict[str, List[float]] = {k: [] for k in ("model_ms", "post_ms", "decode_ms",
                                                             "model_wall_ms", "post_wall_ms")}
            for _ in range(frames):
                t_model, wall_model, outputs = _timed(lambda: model.predict([x]))
                t_post, wall_post, found = _timed(partial(postprocess, outputs[0], transform))
                t_decode, _wall, raw = _timed(partial(_decode, outputs[0]))
                for key, value in (("model_ms", t_model), ("post_ms", t_post),
                                   ("decode_ms", t_decode), ("model_wall_ms", wall_model),
                                   ("post_wall_ms", wall_post)):
                    times[key].append(value * 1e3)
            if rep == 0:
                fig.details["output"] = list(outputs[0].shape)
                fig.details["candidates"] = len(raw[0])
                fig.details["detections"] = len(found[0])
                continue
            fig.values.append(p50(times["post_ms"]) / REFERENCE_MODEL_MS)
            fig.details["share_of_measured_model"].append(p50(times["post_ms"]) /
                                                          p50(times["model_ms"]))
            for key, samples in times.items():
                fig.details[key].append(p50(samples))
    return fig


def _decode(output: np.ndarray) -> List[Any]:
    from ml_bridge.core.detection import decode_yolo

    return decode_yolo(output, score_threshold=SCORE_THRESHOLD)
