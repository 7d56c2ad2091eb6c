"""Detector outputs -> boxes: YOLO decoding, decoded-box dicts, class-aware NMS, back to frame.

numpy and OpenCV only (no rospy, no framework), shared by the ``detect`` pipeline, the
built-in detector's metric and its exports. Boxes are x1 y1 x2 y2 in pixels of the model's
input until :func:`map_to_frame` takes them back to the frame (the fitting itself, letterbox
or stretch, is :mod:`ml_bridge.core.letterbox`; its names are importable from here too).
"""
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from ml_bridge.core.errors import InputError

# Re-exported (``as``): callers import them from here as before the split.
from ml_bridge.core.letterbox import PAD_VALUE as PAD_VALUE
from ml_bridge.core.letterbox import FrameTransform as FrameTransform
from ml_bridge.core.letterbox import clip_boxes as clip_boxes
from ml_bridge.core.letterbox import letterbox as letterbox
from ml_bridge.core.letterbox import stretch_transform as stretch_transform

#: The dense layouts :func:`decode_yolo` reads.
YOLO_LAYOUTS = ("auto", "yolov8", "yolov5")
_TORCHVISION_KEYS = ("boxes", "scores", "labels")
_TF_KEYS = ("detection_boxes", "detection_scores", "detection_classes")


@dataclass(init=False, eq=False)
class Boxes:
    """One image's detections (any array-likes are converted to these dtypes).

    Attributes:
        boxes: float32 [K, 4], x1 y1 x2 y2 in pixels.
        scores: float32 [K].
        class_ids: int64 [K].
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __init__(self, boxes: ArrayLike, scores: ArrayLike, class_ids: ArrayLike) -> None:
        """Raises InputError when the three lengths differ."""
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        self.class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.class_ids):
            raise InputError(f"boxes, scores and class_ids disagree in length: "
                             f"{len(self.boxes)}, {len(self.scores)}, {len(self.class_ids)}")

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, indices: Union[np.ndarray, Sequence[int]]) -> "Boxes":
        """The detections at ``indices`` (an index array or a boolean mask), in that order."""
        index = np.asarray(indices)
        return Boxes(self.boxes[index], self.scores[index], self.class_ids[index])

    @staticmethod
    def empty() -> "Boxes":
        """No detections."""
        return Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                     np.zeros(0, np.int64))


def decode_yolo(output: np.ndarray, layout: str = "auto", score_threshold: float = 0.25,
                num_classes: Optional[int] = None) -> List[Boxes]:
    """Dense YOLO predictions -> per image the boxes scoring at least ``score_threshold``
    (before NMS).

    Args:
        output: ``[N, 4 + C, A]`` (``yolov8``: YOLOv8/YOLO11 exports, cx cy w h in input
            pixels then C class scores) or ``[N, A, 5 + C]`` (``yolov5``: cx cy w h,
            objectness, C class scores; score = objectness x class score).
        layout: ``auto``, ``yolov8`` or ``yolov5``. ``auto`` uses ``num_classes`` when given,
            else takes the longer axis for the anchors (A is in the thousands in any export,
            4 + C at most a few hundred).
        score_threshold: the lowest score kept.
        num_classes: C, when known (checked against the output).

    Raises:
        InputError: not a 3-D output, an unknown layout, or a shape that fits neither layout.
    """
    array = np.asarray(output)
    if array.ndim != 3:
        raise InputError(f"a YOLO output is [N, 4 + C, A] or [N, A, 5 + C], got shape "
                         f"{list(array.shape)}; set ~detect_format to the model's format")
    layout = yolo_layout(array.shape, layout, num_classes)
    # float32 before any comparison: the threshold is applied to the float32 scores.
    array = array.astype(np.float32, copy=False)
    if layout == "yolov8":
        # The class maximum over contiguous rows first: an arg-max over every anchor's
        # strided class column costs most of the post-processing. The arg-max then runs
        # only on the few anchors whose best score can pass.
        best = array[:, 4:, :].max(axis=1)
    else:
        best = array[:, :, 5:].max(axis=2) * array[:, :, 4]
    passing = best >= score_threshold  # NaN scores fail, as they would after the arg-max
    found = []
    for i in range(array.shape[0]):
        anchors = np.flatnonzero(passing[i])
        pred = array[i][:, anchors].T if layout == "yolov8" else array[i][anchors]  # K, ch
        first = 4 if layout == "yolov8" else 5
        class_ids = pred[:, first:].argmax(axis=1)
        # The score is read back at the arg-max (not ``best``) so it is that element exactly.
        scores = pred[np.arange(len(anchors)), first + class_ids]
        if layout == "yolov5":
            scores = scores * pred[:, 4]
        xyxy = cxcywh_to_xyxy(pred[:, :4])
        keep = (scores >= score_threshold) & np.isfinite(xyxy).all(axis=1)
        found.append(Boxes(xyxy[keep], scores[keep], class_ids[keep]))
    return found


def yolo_layout(shape: Tuple[int, ...], layout: str = "auto",
                num_classes: Optional[int] = None) -> str:
    """``yolov8`` or ``yolov5``: the layout of a 3-D output of ``shape`` (see
    :func:`decode_yolo`).

    Raises:
        InputError: an unknown layout, or a shape that fits neither layout (for C classes).
    """
    if layout not in YOLO_LAYOUTS:
        raise InputError(f"unknown YOLO layout '{layout}'; use one of {', '.join(YOLO_LAYOUTS)}")
    _, rows, cols = shape
    if layout == "auto":
        if num_classes is not None:
            layout = "yolov8" if rows == 4 + num_classes else \
                "yolov5" if cols == 5 + num_classes else ""
            if not layout:
                raise InputError(f"output shape {list(shape)} fits neither [N, 4 + C, A] nor "
                                 f"[N, A, 5 + C] for C = {num_classes} classes")
        else:
            layout = "yolov8" if rows < cols else "yolov5"
    channels, least = (rows, 5) if layout == "yolov8" else (cols, 6)
    if channels < least or (num_classes is not None and
                            channels != num_classes + least - 1):
        expected = "[N, 4 + C, A]" if layout == "yolov8" else "[N, A, 5 + C]"
        raise InputError(f"output shape {list(shape)} is not {layout}'s {expected} with C >= 1"
                         + ("" if num_classes is None else f" (C = {num_classes})"))
    return layout


def decode_boxes(outputs: Mapping[str, np.ndarray], input_size: Tuple[int, int],
                 score_threshold: float = 0.25) -> List[Boxes]:
    """Already-decoded detections -> per image the boxes scoring at least ``score_threshold``.

    Two dict styles are read: torchvision's ``boxes`` [N, K, 4] (x1 y1 x2 y2 in input
    pixels), ``scores`` [N, K], ``labels`` [N, K]; and the TF Object Detection API's
    ``detection_boxes`` [N, K, 4] (ymin xmin ymax xmax, normalised to [0, 1]),
    ``detection_scores``, ``detection_classes`` and optionally ``num_detections`` [N] (only
    the first that many of each image count). Class ids are kept as the model gives them
    (torchvision and the TF API count the background as 0 or ids from 1: ``~labels`` must be
    indexed the same way). A single image may drop the N axis.

    Args:
        outputs: the model's outputs by name.
        input_size: (height, width) of the model's input, to scale normalised boxes.
        score_threshold: the lowest score kept.

    Raises:
        InputError: neither style's keys are present, or their shapes disagree.
    """
    if all(k in outputs for k in _TORCHVISION_KEYS):
        boxes, scores, classes = (np.asarray(outputs[k]) for k in _TORCHVISION_KEYS)
        counts = None
        normalised = False
    elif all(k in outputs for k in _TF_KEYS):
        boxes, scores, classes = (np.asarray(outputs[k]) for k in _TF_KEYS)
        counts = outputs.get("num_detections")
        normalised = True
    else:
        raise InputError(f"the model's outputs {sorted(outputs)} are not decoded boxes: "
                         f"expected {', '.join(_TORCHVISION_KEYS)} (torchvision) or "
                         f"{', '.join(_TF_KEYS)} (TF Object Detection API); for a dense YOLO "
                         "output set ~detect_format yolo")
    if boxes.ndim == 2:
        boxes, scores, classes = boxes[None], scores[None], classes[None]
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] or \
            classes.shape != boxes.shape[:2]:
        raise InputError(f"decoded boxes must be [N, K, 4] with scores and classes [N, K], got "
                         f"{list(boxes.shape)}, {list(scores.shape)}, {list(classes.shape)}")
    boxes = boxes.astype(np.float32)
    if normalised:
        height, width = input_size
        boxes = boxes[:, :, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float32)
    limits = np.full(len(boxes), boxes.shape[1]) if counts is None else \
        np.asarray(counts).reshape(-1).astype(np.int64)
    result = []
    for i in range(len(boxes)):
        keep = np.arange(boxes.shape[1]) < limits[i]
        keep &= (scores[i] >= score_threshold) & np.isfinite(boxes[i]).all(axis=1)
        result.append(Boxes(boxes[i][keep], scores[i][keep],
                            np.round(classes[i][keep]).astype(np.int64)))
    return result


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] centre x, centre y, width, height -> [..., 4] x1 y1 x2 y2."""
    half = boxes[..., 2:4] / 2.0
    return np.concatenate([boxes[..., 0:2] - half, boxes[..., 0:2] + half], axis=-1)


def nms(boxes: ArrayLike, scores: ArrayLike, class_ids: ArrayLike, iou: float = 0.45,
        max_detections: int = 100) -> np.ndarray:
    """Class-aware non-maximum suppression.

    A box is dropped when it overlaps a kept, higher-scoring box of the same class with an
    IoU above ``iou``. Runs ``cv2.dnn.NMSBoxes`` once per class (OpenCV 4.6 has no batched
    variant).

    Args:
        boxes: [K, 4] x1 y1 x2 y2.
        scores: [K].
        class_ids: [K].
        iou: the overlap above which the lower-scoring box goes.
        max_detections: the most indices returned.

    Returns:
        int64 indices of the kept boxes, highest score first (ties: lower index first).
    """
    import cv2

    score = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(class_ids).reshape(-1)
    corners = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(score) == 0 or max_detections <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-score, kind="stable")
    # NMSBoxes wants scores >= 0 and its own order must be ours: pass ranks in (0, 1].
    ranks = np.empty(len(score), np.float32)
    ranks[order] = np.arange(len(score), 0, -1, dtype=np.float32) / len(score)
    xywh = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    kept: List[np.ndarray] = []
    for class_id in np.unique(classes):
        members = np.flatnonzero(classes == class_id)
        chosen = cv2.dnn.NMSBoxes(xywh[members].tolist(), ranks[members].tolist(), 0.0,
                                  float(iou))
        kept.append(members[np.asarray(chosen, np.int64).reshape(-1)])
    merged = np.concatenate(kept)
    return merged[np.argsort(-ranks[merged], kind="stable")][:max_detections].astype(np.int64)


def suppress(found: Boxes, iou: float = 0.45, max_detections: int = 100) -> Boxes:
    """:func:`nms` applied to one image's :class:`Boxes`."""
    return found.take(nms(found.boxes, found.scores, found.class_ids, iou, max_detections))


def map_to_frame(found: Boxes, transform: FrameTransform) -> Boxes:
    """Boxes in input pixels -> frame pixels, clipped to the frame; boxes left without area
    (entirely outside the frame) are dropped."""
    scale = np.array([transform.scale_x, transform.scale_y] * 2, np.float32)
    pad = np.array([transform.pad_x, transform.pad_y] * 2, np.float32)
    boxes = clip_boxes((found.boxes - pad) / scale, transform.frame_width,
                       transform.frame_height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Boxes(boxes[keep], found.scores[keep], found.class_ids[keep])
