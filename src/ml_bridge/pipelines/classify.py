"""The ``classify`` pipeline: one frame -> class id, probability and label per batch row.

Also home of :func:`top_class` and :func:`classify`, the classifier post-processing the
``~predict`` service applies to every response of a classifier.
"""
import math
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

import numpy as np

from ml_bridge.core.model import BackendModel, ImagePreprocess
from ml_bridge.core.params import Schema
from ml_bridge.core.server import Prediction
from ml_bridge.core.vision import IMAGE_PARAMS
from ml_bridge.pipelines.base import Classes, Frame, Pipeline, Request, Result, image_format
from ml_bridge.pipelines.draw import canvas, draw_label, label_score

#: Up to this many scores, :func:`top_class` works on Python floats (same results, in float64).
SMALL = 64


def top_class(scores: np.ndarray, probabilities: bool) -> Tuple[List[int], List[float]]:
    """Per row of [N, C] scores: the arg-max class and its probability.

    ``probabilities``: the scores already are probabilities; otherwise they are logits and the
    probability is the softmax at the arg-max, 1 / sum(exp(s - max)), without the full softmax.
    """
    ids = scores.argmax(axis=1)
    if scores.size <= SMALL:  # the common ~predict case: Python floats beat numpy's per-call cost
        rows, picks = scores.tolist(), ids.tolist()
        if probabilities:
            return picks, [float(row[i]) for row, i in zip(rows, picks)]
        # row[i] is the row's max (or NaN, which argmax picks first): no exp can overflow
        return picks, [1.0 / sum([math.exp(v - row[i]) for v in row]) for row, i in zip(rows, picks)]
    top = scores[np.arange(len(ids)), ids].astype(np.float64)
    if not probabilities:
        shifted = scores.astype(np.float64) - top[:, None]
        top = 1.0 / np.exp(shifted).sum(axis=1)
    return ids.tolist(), top.tolist()


def classify(prediction: Prediction) -> Classes:
    """Class id, probability and label per row, for a classifier whose output 0 is [N, C].

    Empty for models without labels (regressors, unlabelled files) or other output shapes.
    The labels are those of the model that produced the outputs.
    """
    model = prediction.model
    if not (model.is_classifier and prediction.outputs and prediction.outputs[0].ndim == 2):
        return Classes()
    ids, scores = top_class(prediction.outputs[0], model.outputs_probabilities)
    return Classes(ids, scores, [model.label(i) for i in ids])


def top_label_overlay(image: np.ndarray, classes: Classes) -> np.ndarray:
    """``~overlay`` of a classifier: a copy of the frame's image with the top label and its
    score (of the first row) at the top-left; the plain copy when there is no class."""
    out = canvas(image)
    if classes.class_ids:
        draw_label(out, label_score(classes.labels[0], classes.scores[0], classes.class_ids[0]))
    return out


def rows_of(classes: Classes) -> List[dict]:
    """Rule rows: one dict per class entry."""
    return [{"class_id": c, "score": s, "label": lab}
            for c, s, lab in zip(classes.class_ids, classes.scores, classes.labels)]


class ClassifyPipeline(Pipeline[dict]):
    """Latest frame -> the model's preprocessing -> ``~predictions`` (Prediction) and
    ``~overlay`` (the frame with the top label and score)."""

    name = "classify"
    outputs = ("predictions", "overlay")
    parameters = Schema("classify")  # the image format's only

    def __init__(self, model: BackendModel, params: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(model, params)
        # The model's own preprocessing (digits_mlp: gray 8 x 8) unless the user overrides
        # the image format, or the model has none.
        given = IMAGE_PARAMS.read(self.params)
        overrides = any(given[k] is not None
                        for k in ("input_size", "mean", "std", "color", "channels_first"))
        self._preprocess: Optional[ImagePreprocess] = model.preprocess_image
        if overrides or self._preprocess is None:
            fmt = image_format(model, self.params)
            self._preprocess = lambda image: [fmt.frame(image)[None]]

    def new_state(self) -> dict:
        return {}

    def accept(self, frame: Frame, state: dict) -> bool:
        state["frame"] = frame  # latest frame wins
        return True

    def request(self, state: dict) -> Optional[Request]:
        frame = state.pop("frame", None)
        if frame is None:
            return None
        assert self._preprocess is not None
        return Request(self._preprocess(frame.image), frame)

    def postprocess(self, request: Request, prediction: Prediction,
                    wanted: FrozenSet[str]) -> Result:
        classes = classify(prediction)
        outputs: Dict[str, Any] = {"predictions": classes}
        if "overlay" in wanted:
            outputs["overlay"] = top_label_overlay(request.frame.image, classes)
        return Result(request.frame, prediction.model, prediction.inference_ms,
                      outputs, raw=prediction.outputs, rows=rows_of(classes))
