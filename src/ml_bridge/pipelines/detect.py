"""The ``detect`` pipeline: one frame -> boxes -> ``~detections``, ``~predictions``, ``~overlay``.

The model's output is read in one of two formats (``~detect_format``):

- ``yolo``: dense predictions, ``[N, 4 + C, A]`` (YOLOv8/YOLO11) or ``[N, A, 5 + C]`` (YOLOv5),
  decoded by :func:`ml_bridge.core.detection.decode_yolo`, then class-aware NMS;
- ``boxes``: already-decoded detections by output name, torchvision's ``boxes``/``scores``/
  ``labels`` or the TF Object Detection API's ``detection_*`` (no NMS: the model did it).

``auto`` takes ``boxes`` when the model's output names are one of those sets, else ``yolo``.
Frames are letterboxed (``~letterbox``, by default for ``yolo``) or stretched to the model's
input; either way the boxes are mapped back to frame pixels and clipped to the frame. Boxes
are published in score order, the same order in every output.

With ``~track`` every processed frame's boxes are tracked (:mod:`ml_bridge.pipelines.track_stage`):
``~tracks``, ``~counts``, track keys on the rule rows, track ids and count lines on the overlay,
and each box's track id in its Detection2D's ``header.seq`` (0: no confirmed track).
"""
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence

import numpy as np

from ml_bridge.core.detection import (
    Boxes,
    decode_boxes,
    decode_yolo,
    letterbox,
    map_to_frame,
    stretch_transform,
    suppress,
    yolo_layout,
)
from ml_bridge.core.errors import InputError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.params import Param, Schema, bad
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines.base import (
    Classes,
    Frame,
    Pipeline,
    Request,
    Result,
    image_format,
    main_output,
)
from ml_bridge.pipelines.draw import canvas, draw_boxes
from ml_bridge.pipelines.objects import stamp_ns
from ml_bridge.pipelines.track_stage import TRACK_OUTPUTS, TrackedBoxes, Tracking

FORMATS = ("auto", "yolo", "boxes")
#: Output names that mark a model's outputs as decoded boxes (``~detect_format`` auto).
BOX_NAMES = (frozenset({"boxes", "scores", "labels"}),
             frozenset({"detection_boxes", "detection_scores", "detection_classes"}))


def output_format(names: Sequence[str]) -> str:
    """``boxes`` when ``names`` hold either set of decoded-box names, else ``yolo``."""
    given = set(names)
    return "boxes" if any(wanted <= given for wanted in BOX_NAMES) else "yolo"


def class_filter(wanted: Sequence[str], labels: Sequence[str]) -> Optional[np.ndarray]:
    """``~classes`` as class ids (int64), or None for all: each entry a label of the model
    or, for a model without that label, a class id.

    Raises:
        ParameterError: an entry is neither a label nor a class id (the message lists the
            labels).
    """
    if not wanted:
        return None
    ids = []
    for entry in wanted:
        if entry in labels:
            ids.append(list(labels).index(entry))
            continue
        try:
            ids.append(int(entry))
        except ValueError:
            known = ", ".join(f"{i}: {label}" for i, label in enumerate(labels)) or "none"
            raise bad("classes", "labels of the model or class ids", list(wanted),
                      f"'{entry}' is neither; the model's labels are {known}") from None
    return np.array(sorted(set(ids)), np.int64)


class DetectPipeline(Pipeline[Dict[str, Any]]):
    """Latest frame -> letterbox or resize -> detector -> boxes in frame pixels."""

    name = "detect"
    outputs: Sequence[str] = ("detections", "predictions", "overlay")
    parameters = Schema(
        "detect",
        Param("detect_format", "str", "auto", "how the model's outputs are read: dense `yolo` "
              "predictions, decoded `boxes` by name, or `auto` (by the output names)",
              choices=FORMATS),
        Param("letterbox", "str", "auto", "resize keeping the aspect ratio and pad with grey "
              "114 (`false`: the frame is stretched to the input size)",
              choices=("auto", "true", "false"), note="auto: true for `yolo`, false for `boxes`"),
        Param("score_threshold", "float", 0.25, "the lowest score kept", low=0.0),
        Param("nms_iou", "float", 0.45, "`yolo`: a box overlapping a higher-scoring one of its "
              "class by more than this IoU is dropped", low=0.0, high=1.0),
        Param("max_detections", "int", 100, "the most boxes per frame, highest scores first",
              low=1),
        Param("classes", "names", [], "labels (or class ids) to keep (`[]`: all)"),
    )

    def __init__(self, model: BackendModel, params: Optional[Mapping[str, Any]] = None) -> None:
        """Reads the image format and :attr:`parameters`.

        Raises:
            InputError: a parameter is invalid, or no image format can be told.
        """
        super().__init__(model, params)
        self.fmt = image_format(model, self.params)
        given = self.settings["detect_format"]
        self.format: str = output_format([s.name for s in model.outputs]) \
            if given == "auto" else given
        chosen = self.settings["letterbox"]
        self.letterbox: bool = self.format == "yolo" if chosen == "auto" else chosen == "true"
        self.score_threshold: float = self.settings["score_threshold"]
        self.nms_iou: float = self.settings["nms_iou"]
        self.max_detections: int = self.settings["max_detections"]
        self.keep = class_filter(self.settings["classes"], model.labels)
        self.tracking = Tracking(self.params)
        if self.tracking.enabled:
            self.outputs = tuple(self.outputs) + TRACK_OUTPUTS
        self._check_output(model)

    def _check_output(self, model: BackendModel) -> None:
        """Refuses at start-up a dense output whose declared shape cannot hold one score per
        label (instead of an error on every frame)."""
        shape = tuple(model.outputs[0].shape) if model.outputs else ()
        if self.format != "yolo" or len(shape) != 3 or min(shape[1:]) < 1 or not model.labels:
            return
        try:
            yolo_layout(shape, "auto", len(model.labels))
        except InputError as err:
            raise InputError(f"{model.describe()}: {err}; ~labels gives {len(model.labels)} "
                             "labels: give one per class of the model") from None

    def new_state(self) -> Dict[str, Any]:
        return {"tracks": self.tracking.new_state()}

    def restart(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """The waiting frame is dropped; the tracks go on (they end by the frames' stamps)."""
        return {"tracks": state.get("tracks")}

    def accept(self, frame: Frame, state: Dict[str, Any]) -> bool:
        state["frame"] = frame  # latest frame wins
        return True

    def request(self, state: Dict[str, Any]) -> Optional[Request]:
        frame = state.pop("frame", None)
        if frame is None:
            return None
        image = frame.image
        if self.letterbox:
            image, transform = letterbox(image, self.fmt.size)
        else:
            transform = stretch_transform((image.shape[0], image.shape[1]), self.fmt.size)
        return Request([self.fmt.frame(image)[None]], frame,
                       {"transform": transform, "tracks": state.get("tracks")})

    def postprocess(self, request: Request, prediction: Prediction,
                    wanted: FrozenSet[str]) -> Result:
        """Decodes the boxes, maps them to the frame and builds the wanted outputs.

        Raises:
            InputError: the model's outputs are not in the format read.
        """
        stamp = prediction.model
        found = map_to_frame(self.decode(prediction), request.extra["transform"])
        labels = [stamp.label(int(c)) for c in found.class_ids]
        ids, scores = found.class_ids.tolist(), found.scores.tolist()
        corners = found.boxes.tolist()
        tracks = request.extra.get("tracks")   # with ~track, every frame is tracked
        step = None if tracks is None else self.tracking.step(
            tracks, stamp_ns(request.frame), found.boxes, ids, scores, labels)
        outputs: Dict[str, Any] = {}
        if "detections" in wanted:
            outputs["detections"] = found if step is None else TrackedBoxes(found, step.frame.track_ids)
        if "predictions" in wanted:
            outputs["predictions"] = Classes(ids, scores, labels)
        if "overlay" in wanted:
            outputs["overlay"] = draw_boxes(canvas(request.frame.image), corners, labels, scores,
                                            None if step is None else
                                            [i or None for i in step.frame.track_ids], ids)
        rows = rows_of(found, labels)
        if step is not None:
            rows = self.tracking.finish(step, rows, wanted, outputs)
        return Result(request.frame, stamp, prediction.inference_ms, outputs,
                      raw=prediction.outputs, rows=rows)

    def decode(self, prediction: Prediction) -> Boxes:
        """The first image's boxes in input pixels: thresholded, filtered by ``~classes``,
        suppressed (``yolo``) and cut to ``~max_detections``."""
        stamp = prediction.model
        if self.format == "boxes":
            named = dict(zip(stamp.output_names, prediction.outputs))
            found = decode_boxes(named, self.fmt.size, self.score_threshold)[0]
        else:
            output = main_output(prediction.outputs, stamp.output_names)
            if output.ndim == 3 and output.shape[0] != 1:
                raise InputError(f"the detect pipeline sends one frame but the model returned "
                                 f"{output.shape[0]} rows of {list(output.shape)}")
            found = decode_yolo(output, "auto", self.score_threshold,
                                len(stamp.labels) or None)[0]
        if self.keep is not None:
            found = found.take(np.isin(found.class_ids, self.keep))
        if self.format == "yolo":
            return suppress(found, self.nms_iou, self.max_detections)
        return found.take(np.argsort(-found.scores, kind="stable")[:self.max_detections])


def rows_of(found: Boxes, labels: List[str]) -> List[Dict[str, Any]]:
    """Rule rows of ``found`` (frame pixels): label, class_id, score and box per detection."""
    return [{"label": label, "class_id": int(c), "score": float(s), "box": b.tolist()}
            for label, c, s, b in zip(labels, found.class_ids, found.scores, found.boxes)]
