"""The ``segment`` pipeline: one frame -> per-pixel classes -> ``~mask``, ``~overlay``, ``~predictions``.

The class map is taken at the model's resolution (arg-max over classes; a probability only
where ``~min_score`` needs one) and only then brought to the frame's size, nearest neighbour
(the operations are in :mod:`ml_bridge.pipelines.masks`).
"""
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence

import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.params import Param, Schema, bad
from ml_bridge.core.server import ModelOutput
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


def overlay_class_id(value: Any, labels: Sequence[str]) -> Optional[int]:
    """``~overlay_class`` as a class id: a label, or a class id as int or string; None for "".

    Raises:
        ParameterError: an unknown label or an id out of range (the message lists the labels).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    known = "the model's labels are " + (
        ", ".join(f"{i}: {label}" for i, label in enumerate(labels)) or "none")
    if text in labels:
        return list(labels).index(text)
    limit = len(labels) or MAX_CLASSES
    try:
        class_id = int(text)
    except ValueError:
        raise bad("overlay_class", "a label of the model or a class id", text, known) from None
    if not 0 <= class_id < limit:
        raise bad("overlay_class", f"a class id 0 to {limit - 1} or a label", class_id, known)
    return class_id


class SegmentPipeline(Pipeline[Dict[str, Frame]]):
    """Latest frame -> the image format -> per-pixel classes -> mask, overlay, classes present."""

    name = "segment"
    outputs = ("mask", "overlay", "predictions")

    parameters = Schema(
        "segment",
        Param("overlay_class", "str", "", "a label or class id: its pixels stay exactly as in the "
              "frame and the rest is blurred (`\"\"`: a colour blend of every class)"),
        Param("blur_kernel", "int", 21, "blur size of `~overlay_class`", low=1,
              accepts="an odd integer >= 1", note="pixels"),
        Param("overlay_alpha", "float", 0.5, "colour blend: weight of the class colour", low=0,
              high=1),
        Param("min_score", "float", 0.0, "pixels whose top probability is under this count as "
              "class 0", low=0, high=1, note="a probability"),
    )

    def __init__(self, model: BackendModel, params: Optional[Mapping[str, Any]] = None) -> None:
        """Reads the image format and :attr:`parameters`.

        Raises:
            InputError: a parameter is invalid or the model has more than 256 labels.
        """
        super().__init__(model, params)
        self.fmt = image_format(model, self.params)
        if len(model.labels) > MAX_CLASSES:
            raise InputError(f"{model.describe()} has {len(model.labels)} labels; a mask "
                             f"(mono8) holds at most {MAX_CLASSES} classes")
        self.min_score: float = self.settings["min_score"]
        self.alpha: float = self.settings["overlay_alpha"]
        self.kernel: int = self.settings["blur_kernel"]
        if self.kernel % 2 == 0:  # the blur's kernel has a centre pixel
            raise self.parameters["blur_kernel"].error(self.kernel, f"try {self.kernel + 1}")
        self.overlay_class = overlay_class_id(self.settings["overlay_class"], model.labels)

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

    def postprocess(self, request: Request, prediction: ModelOutput,
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
