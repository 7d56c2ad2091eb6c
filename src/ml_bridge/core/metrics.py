"""Segmentation metrics from a confusion matrix (numpy only).

Rows of a confusion matrix are target classes and columns predicted classes, so
``confusion[t, p]`` counts the pixels of class ``t`` predicted as ``p``. Accumulating one
matrix over a whole epoch or data set and computing the metrics from it at the end weights
every pixel equally, unlike averaging per-batch IoUs.
"""
import numpy as np

from ml_bridge.core.errors import InputError


def confusion_matrix(pred: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    """The int64 [classes, classes] confusion matrix of class-id arrays of the same shape.

    Raises:
        InputError: shapes differ, or an id lies outside [0, classes).
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise InputError(f"predictions {list(pred.shape)} and targets {list(target.shape)} "
                         "must have the same shape")
    p = pred.reshape(-1).astype(np.int64)
    t = target.reshape(-1).astype(np.int64)
    for name, ids in (("predictions", p), ("targets", t)):
        if ids.size and (ids.min() < 0 or ids.max() >= classes):
            raise InputError(f"{name} hold class ids in [{ids.min()}, {ids.max()}], outside "
                             f"[0, {classes})")
    counts = np.bincount(t * classes + p, minlength=classes * classes)
    return counts.reshape(classes, classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """Intersection over union of every class; NaN for a class in neither target nor prediction."""
    confusion = np.asarray(confusion, np.float64)
    hits = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in the predictions or the targets (NaN if none)."""
    ious = iou_per_class(confusion)
    present = ~np.isnan(ious)
    return float(ious[present].mean()) if present.any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Fraction of pixels predicted as their target class (NaN for an empty matrix)."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")
