"""One check of training targets for every backend, and the dtypes targets are kept in.

Both backends, and :meth:`ModelServer.record`, pass targets through :func:`canonical_targets`,
so a target is accepted or refused the same way whichever framework serves the model, and a
recorded dataset holds one dtype and shape per target whatever its samples were sent as:

- a classifier's target 0 holds class ids: integers, or whole-valued floats (as the ``values``
  of a Tensor message arrive), in [0, classes), shaped [N] or [N, 1] (a class per sample) or
  [N, H, W] (a class per pixel); it becomes int64, [N] or [N, H, W];
- any other target has the rank of its output and the output's fixed dimensions; it becomes
  the output's dtype when that loses nothing a number means (int32 -> int64, float64 ->
  float32 within float32's range, integers or booleans -> floats).

What the layout of per-pixel scores must be ([N, C, H, W] or [N, H, W, C]) stays with the
backend, which knows it.
"""
from typing import List, Sequence

import numpy as np

from ml_bridge.core.box_targets import check_boxes
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.spec import ArraySpec


def class_ids(where: str, target: np.ndarray, classes: int) -> np.ndarray:
    """A classifier's target as int64 class ids: [N] (from [N] or [N, 1]) or [N, H, W].

    Raises:
        DatasetError: not numbers, not whole, or outside [0, classes); the message says which.
    """
    if target.dtype.kind not in "biuf":
        raise DatasetError(f"{where} has dtype {target.dtype}; class ids must be numbers "
                           "(integers or whole-valued floats)")
    if not (target.ndim in (1, 3) or (target.ndim == 2 and target.shape[1] == 1)):
        raise DatasetError(f"{where} has shape {list(target.shape)}; a classifier needs class ids "
                           "shaped [N] or [N, 1] (a class per sample) or [N, H, W] (a class per "
                           "pixel)")
    ids = target.reshape(-1) if target.ndim <= 2 else target
    if ids.size == 0:
        return ids.astype(np.int64)
    if ids.dtype.kind == "f" and not bool(np.all(np.isfinite(ids) & (ids == np.round(ids)))):
        raise DatasetError(f"{where} holds non-integer values; a classifier needs class ids "
                           "(whole numbers)")
    low, high = ids.min(), ids.max()
    if low < 0 or high >= classes:
        raise DatasetError(f"{where} has class ids in [{low:g}, {high:g}]; this model has {classes} "
                           f"classes, ids must be in [0, {classes})")
    return np.ascontiguousarray(ids, dtype=np.int64)


def cast_target(where: str, target: np.ndarray, spec: ArraySpec) -> np.ndarray:
    """A non-class target checked against its output's rank and fixed dims, in its dtype.

    Raises:
        DatasetError: not numbers, a shape the output cannot have, or a cast that would change
            values (a float into an integer output, or beyond float32's range).
    """
    want = np.dtype(spec.dtype)
    if target.dtype.kind not in "biuf":
        raise DatasetError(f"{where} has dtype {target.dtype}; numbers are needed")
    if target.ndim != len(spec.shape) or any(w >= 0 and g != w
                                             for g, w in zip(target.shape[1:], spec.shape[1:])):
        raise DatasetError(f"{where} has shape {list(target.shape)}; the model's output is "
                           f"{spec.describe()}")
    if target.dtype == want:
        return np.ascontiguousarray(target)
    into_float = want.kind == "f" and target.dtype.kind in "biu"
    if not (into_float or np.can_cast(target.dtype, want, casting="same_kind")):
        raise DatasetError(f"{where} has dtype {target.dtype}, which cannot become the output's "
                           f"{want} without changing its values")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        cast = np.ascontiguousarray(target, dtype=want)
    if want.kind == "f" and target.dtype.kind == "f" and not np.array_equal(
            np.isfinite(cast), np.isfinite(target)):
        raise DatasetError(f"{where} holds values beyond the range of the output's {want}")
    return cast


def canonical_targets(name: str, targets: Sequence[np.ndarray], outputs: Sequence[ArraySpec],
                      classes: int, box_classes: int = 0) -> List[np.ndarray]:
    """Every target checked against its output and in its canonical dtype and shape.

    Args:
        name: the dataset's name, for messages.
        targets: one array per output trained, samples along axis 0 (at most one per output).
        outputs: the model's output specs.
        classes: the number of classes of output 0 for a classifier; 0 for other models.
        box_classes: for a detector trained on boxes, its class count: target 0 holds boxes
            [N, K, 5] (:func:`ml_bridge.core.box_targets.check_boxes`), float32.

    Raises:
        DatasetError: naming the dataset, the target and what is wrong with it.
    """
    if len(targets) > len(outputs):
        raise DatasetError(f"dataset '{name}' has {len(targets)} target array(s); the model has "
                           f"{len(outputs)} output(s)")
    out = []
    for i, (target, spec) in enumerate(zip(targets, outputs)):
        where = f"dataset '{name}' target {i}"
        target = np.asarray(target)
        if box_classes > 0 and i == 0:
            out.append(check_boxes(where, target, box_classes))
        else:
            out.append(class_ids(where, target, classes) if classes > 0 and i == 0
                       else cast_target(where, target, spec))
    return out
