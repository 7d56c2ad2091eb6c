"""The ``segment`` pipeline: one frame -> per-pixel classes -> ``~mask``, ``~overlay``, ``~predictions``.

The class map is taken at the model's resolution (arg-max over classes; a probability only
where ``~min_score`` needs one) and only then brought to the frame's size, nearest neighbour
(the operations are in :mod:`ml_bridge.pipelines.masks`).
"""
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence

import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines.base import Frame, Pipeline, Request, Result, image_format, main_output
from ml_bridge.pipelines.classify import rows_of
from ml_bridge.pipelines.masks import (
    MAX_CLASSES,
    blur_outside,
    class_scores_nchw,
    classes_present,
    color_blend,
    mask_from_scores,
    upscale_mask,
)


def _number(params: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    """Parameter ``key`` as ``kind`` (float or int; a string or a whole float is accepted)."""
    value = params.get(key)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"~{key} must be a number, got {value!r}") from err
    if kind is int:
        if not number.is_integer():
            raise InputError(f"~{key} must be a whole number, got {value!r}")
        return int(number)
    return number


def overlay_class_id(value: Any, labels: Sequence[str]) -> Optional[int]:
    """``~overlay_class`` as a class id: a label, or a class id as int or string; None for "".

    Raises:
        InputError: an unknown label or an id out of range (the message lists the labels).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    known = ", ".join(f"{i}: {label}" for i, label in enumerate(labels)) or "none"
    if text in labels:
        return list(labels).index(text)
    try:
        class_id = int(text)
    except ValueError:
        raise InputError(f"~overlay_class '{text}' is not a label of the model nor a class id; "
                         f"the model's labels are {known}") from None
    limit = len(labels) or MAX_CLASSES
    if not 0 <= class_id < limit:
        raise InputError(f"~overlay_class {class_id} is out of range: class ids are 0 to "
                         f"{limit - 1} (labels: {known})")
    return class_id


class SegmentPipeline(Pipeline[Dict[str, Frame]]):
    """Latest frame -> the image format -> per-pixel classes -> mask, overlay, classes present."""

    name = "segment"
    outputs = ("mask", "overlay", "predictions")

    def __init__(self, model: BackendModel, params: Optional[Mapping[str, Any]] = None) -> None:
        """Reads the image format, ``~min_score``, ``~overlay_class``, ``~blur_kernel`` and
        ``~overlay_alpha``.

        Raises:
            InputError: a parameter is invalid or the model has more than 256 labels.
        """
        super().__init__(model, params)
        self.fmt = image_format(model, self.params)
        if len(model.labels) > MAX_CLASSES:
            raise InputError(f"{model.describe()} has {len(model.labels)} labels; a mask "
                             f"(mono8) holds at most {MAX_CLASSES} classes")
        self.min_score = _number(self.params, "min_score", 0.0, float)
        if not 0.0 <= self.min_score <= 1.0:
            raise InputError(f"~min_score must be a probability in [0, 1], got {self.min_score}")
        self.alpha = _number(self.params, "overlay_alpha", 0.5, float)
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"~overlay_alpha must be in [0, 1] (the colour's weight), got "
                             f"{self.alpha}")
        self.kernel = _number(self.params, "blur_kernel", 21, int)
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise InputError(f"~blur_kernel must be an odd number of pixels >= 1, got "
                             f"{self.kernel}; try {max(1, self.kernel + 1)}")
        self.overlay_class = overlay_class_id(self.params.get("overlay_class"), model.labels)

    def new_state(self) -> Dict[str, Frame]:
        return {}

    def accept(self, frame: Frame, state: Dict[str, Frame]) -> bool:
        state["frame"] = frame  # latest frame wins
        return True

    def request(self, state: Dict[str, Frame]) -> Optional[Request]:
        frame = state.pop("frame", None)
        if frame is None:
            return None
        return Request([self.fmt.frame(frame.image)[None]], frame)

    def postprocess(self, request: Request, prediction: Prediction,
                    wanted: FrozenSet[str]) -> Result:
        """The wanted outputs of ``mask``, ``overlay`` and ``predictions`` (with rule rows).

        Raises:
            InputError: the model's output is not per-pixel class scores.
        """
        stamp = prediction.model
        output = main_output(prediction.outputs, stamp.output_names)
        scores = class_scores_nchw(output, len(stamp.labels), self.fmt.channels_first)
        small = mask_from_scores(scores[:1], stamp.outputs_probabilities, self.min_score)[0]
        image = np.ascontiguousarray(request.frame.image)
        size = (image.shape[0], image.shape[1])
        outputs: Dict[str, Any] = {}
        rows: List[Dict[str, Any]] = []
        if "mask" in wanted or "overlay" in wanted:
            mask = upscale_mask(small, size)
            if "mask" in wanted:
                outputs["mask"] = mask
            if "overlay" in wanted:
                outputs["overlay"] = self._overlay(image, mask)
        if "predictions" in wanted:
            classes = classes_present(small, stamp.labels, size)
            outputs["predictions"] = classes
            rows = rows_of(classes)
        return Result(request.frame, stamp, prediction.inference_ms, outputs,
                      raw=prediction.outputs, rows=rows)

    def _overlay(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.overlay_class is not None:
            return blur_outside(image, mask == self.overlay_class, self.kernel)
        return color_blend(image, mask, self.alpha)
