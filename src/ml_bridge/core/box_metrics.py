"""Detection metrics (numpy only): mean average precision at IoU 0.5, as COCO computes it.

:func:`average_precision` follows pycocotools' COCOeval for boxes with area range "all" and
at most ``max_detections`` per image and class: detections are matched per image and class
in descending score order, each to the unmatched ground-truth box it overlaps most (IoU at
least the threshold); per class, precision is made monotone and read at the 101 recall
points 0, 0.01, ..., 1; the mean runs over the classes that have ground truth. The unit
tests hold it to pycocotools on the same detections.

:class:`MapTally` gives the trainers ``map50``: it decodes a detector's dense output with
:func:`ml_bridge.core.detection.decode_yolo` and :func:`~ml_bridge.core.detection.nms`, as
the ``detect`` pipeline does, and collects an epoch's frames.
"""
from typing import List, Sequence

import numpy as np

from ml_bridge.core.box_targets import CenterGrid
from ml_bridge.core.detection import Boxes, decode_yolo, nms
from ml_bridge.core.errors import InputError

#: The metric's name in training logs (``val_map50`` on validation data).
MAP50 = "map50"
#: Decoding for the metric: a low threshold, so the whole precision-recall curve counts, as
#: detectors are evaluated on COCO.
SCORE_THRESHOLD = 0.01
NMS_IOU = 0.5
MAX_DETECTIONS = 100
_RECALLS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [P, 4] with every box of ``b`` [Q, 4] (x1 y1 x2 y2): [P, Q]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _match(det: Boxes, truth: np.ndarray, iou: float) -> np.ndarray:
    """Whether each detection of one image and class (highest score first) is a true positive."""
    hits = np.zeros(len(det), bool)
    if len(det) == 0 or len(truth) == 0:
        return hits
    overlaps = box_iou(det.boxes, truth[:, 1:5])
    taken = np.zeros(len(truth), bool)
    for d in range(len(det)):
        best, chosen = min(iou, 1 - 1e-10), -1
        for g in range(len(truth)):
            if not taken[g] and overlaps[d, g] >= best:
                best, chosen = overlaps[d, g], g
        if chosen >= 0:
            taken[chosen] = hits[d] = True
    return hits


class _Found:
    """Per class, the scores of one image's detections, which of them are true positives, and
    how many ground-truth boxes the image has: all COCO needs of an image to pool it."""

    def __init__(self, det: Boxes, truth: np.ndarray, classes: int, iou: float,
                 max_detections: int) -> None:
        truth = np.asarray(truth, np.float32).reshape(-1, 5)
        self.scores: List[np.ndarray] = []
        self.hits: List[np.ndarray] = []
        self.positives: List[int] = []
        for c in range(classes):
            mine = det.take(det.class_ids == c)
            mine = mine.take(np.argsort(-mine.scores, kind="mergesort")[:max_detections])
            theirs = truth[truth[:, 0] == c]
            self.scores.append(mine.scores)
            self.hits.append(_match(mine, theirs, iou))
            self.positives.append(len(theirs))


def _pooled(found: Sequence[_Found], classes: int) -> float:
    """The mean over classes of COCO's 101-point average precision of the pooled images."""
    per_class: List[float] = []
    for c in range(classes):
        positives = sum(f.positives[c] for f in found)
        if positives == 0:
            continue  # COCO leaves classes without ground truth out of the mean
        scores = np.concatenate([np.zeros(0, np.float32)] + [f.scores[c] for f in found])
        hits = np.concatenate([np.zeros(0, bool)] + [f.hits[c] for f in found])
        if len(scores) == 0:
            per_class.append(0.0)
            continue
        order = np.argsort(-scores, kind="mergesort")
        tp = np.cumsum(hits[order])
        fp = np.cumsum(~hits[order])
        recall = tp / positives
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone, as COCO's
        at = np.searchsorted(recall, _RECALLS, side="left")
        sampled = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)],
                           0.0)
        per_class.append(float(np.mean(sampled)))
    return float(np.mean(per_class)) if per_class else float("nan")


def average_precision(detections: Sequence[Boxes], truths: Sequence[np.ndarray], classes: int,
                      iou: float = 0.5, max_detections: int = MAX_DETECTIONS) -> float:
    """COCO's mean average precision at one IoU threshold (see the module docstring).

    Args:
        detections: per image, its detections.
        truths: per image, its ground-truth boxes ``[K, 5]`` (class id, x1, y1, x2, y2).
        classes: the number of classes.
        iou: the IoU a detection needs with a ground-truth box to count as found.
        max_detections: the most detections per image and class that count.

    Returns:
        The mean over classes with ground truth; NaN when there is no ground truth at all.

    Raises:
        InputError: detections and truths are not given for the same number of images.
    """
    if len(detections) != len(truths):
        raise InputError(f"detections for {len(detections)} images but ground truth for "
                         f"{len(truths)}")
    return _pooled([_Found(d, t, classes, iou, max_detections)
                    for d, t in zip(detections, truths)], classes)


def decode_detections(output: np.ndarray, classes: int) -> List[Boxes]:
    """A dense ``[N, 4 + C, A]`` output decoded for the metric: a low score threshold, then
    class-aware NMS, at most :data:`MAX_DETECTIONS` per image."""
    found = decode_yolo(output, "yolov8", SCORE_THRESHOLD, num_classes=classes)
    return [f.take(nms(f.boxes, f.scores, f.class_ids, NMS_IOU, MAX_DETECTIONS)) for f in found]


class MapTally:
    """An epoch's ``map50``: dense outputs and their targets, collected batch by batch.

    Each image is matched when it is added, so :meth:`result` only pools: cheap enough for
    frameworks that ask for the metric after every batch.

    Args:
        grid: the detector's grid; its encoded targets carry the frames' original boxes.
    """

    def __init__(self, grid: CenterGrid) -> None:
        self.grid = grid
        self.found: List[_Found] = []

    def add(self, output: np.ndarray, encoded: np.ndarray) -> None:
        """One batch: outputs ``[B, 4 + C, A]`` and targets encoded by the grid."""
        classes = self.grid.classes
        for det, truth in zip(decode_detections(output, classes), self.grid.truths(encoded)):
            self.found.append(_Found(det, truth, classes, 0.5, MAX_DETECTIONS))

    def result(self) -> float:
        """mAP@0.5 over every frame added (NaN before any ground truth)."""
        return _pooled(self.found, self.grid.classes)

    def reset(self) -> None:
        """Forgets everything added."""
        self.found.clear()
