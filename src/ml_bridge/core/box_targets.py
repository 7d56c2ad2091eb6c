"""Detection targets: boxes per frame, their checks, padding, and the dense training encoding.

A frame's targets are ``[K, 5]`` float32 rows of class id, x1, y1, x2, y2 in pixels of the
model's input; K varies from frame to frame (0 is a frame without objects). Stacked into a
:class:`Dataset` they are padded to ``[N, K_max, 5]`` with rows whose class id is
:data:`PAD` (-1): a row of class -1 is "no box" wherever targets are read.

The built-in detectors train on a fixed-size encoding computed here in numpy, once per
dataset, so both frameworks see plain dense tensors (:class:`CenterGrid`): per grid cell a
CenterNet-style heatmap per class and the box of the object centred in it, laid out like the
served output (``[N, 4 + C, A]``, YOLOv8's), plus the original boxes packed in, so that the
``map50`` metric is computed against exactly the boxes the user gave.
"""
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ml_bridge.core.errors import DatasetError

#: The class id of a padding row.
PAD = -1


def pad_boxes(frames: Sequence[np.ndarray], length: int = 0) -> np.ndarray:
    """Per-frame ``[K_i, 5]`` boxes stacked into float32 ``[N, K, 5]``, padded with rows of
    class :data:`PAD`; ``K`` is the largest ``K_i`` or ``length`` if that is larger."""
    width = max([length] + [len(f) for f in frames])
    out = np.zeros((len(frames), width, 5), np.float32)
    out[:, :, 0] = PAD
    for i, found in enumerate(frames):
        out[i, :len(found)] = np.asarray(found, np.float32).reshape(-1, 5)
    return out


def stack_targets(column: Sequence[np.ndarray]) -> np.ndarray:
    """One target of several samples stacked along a new axis 0; per-frame boxes ``[K_i, 5]``
    of different K (a detector's samples) are padded with :func:`pad_boxes` first.

    Raises:
        ValueError: the samples differ in shape otherwise (or in dtype, for boxes).
    """
    shapes = {np.shape(a) for a in column}
    if len(shapes) > 1 and all(len(s) == 2 and s[1] == 5 for s in shapes):
        if len({np.asarray(a).dtype for a in column}) > 1:
            raise ValueError(f"boxes of dtypes {sorted({str(np.asarray(a).dtype) for a in column})}")
        return pad_boxes(column)
    return np.stack(column)


def frame_boxes(padded: np.ndarray) -> List[np.ndarray]:
    """``[N, K, 5]`` padded boxes -> per frame the ``[K_i, 5]`` rows that are not padding."""
    return [frame[frame[:, 0] != PAD] for frame in np.asarray(padded, np.float32)]


def check_boxes(where: str, target: np.ndarray, classes: int) -> np.ndarray:
    """A detector's targets checked and returned as float32 ``[N, K, 5]``.

    Args:
        where: names the array in messages ("dataset 'x' target 0").
        target: ``[N, K, 5]`` (rows of class -1 are padding), or ``[K, 5]`` for one frame.
        classes: the model's class count; ids must be in [0, classes).

    Raises:
        DatasetError: not numbers, another shape, a class id that is not whole or out of
            range, coordinates not finite, or a box whose x2 < x1 or y2 < y1.
    """
    target = np.asarray(target)
    if target.dtype.kind not in "biuf":
        raise DatasetError(f"{where} has dtype {target.dtype}; detection targets are numbers")
    if target.ndim == 2:
        target = target[None]
    if target.ndim != 3 or target.shape[2] != 5:
        raise DatasetError(f"{where} has shape {list(target.shape)}; a detector's targets are "
                           "[K, 5] per frame (class id, x1, y1, x2, y2 in input pixels), "
                           "[N, K, 5] for N frames with rows of class -1 as padding")
    boxes = np.ascontiguousarray(target, dtype=np.float32)
    ids = boxes[:, :, 0]
    real = ids != PAD
    if not bool(np.all(np.isfinite(boxes))):
        raise DatasetError(f"{where} holds NaN or infinite values")
    if bool(np.any(ids != np.round(ids))) or bool(np.any(real & ((ids < 0) | (ids >= classes)))):
        bad = ids[real | (ids != np.round(ids))]
        raise DatasetError(f"{where} has class ids in [{bad.min():g}, {bad.max():g}]; this "
                           f"detector has {classes} classes, ids must be whole numbers in "
                           f"[0, {classes}) (-1 marks a padding row)")
    flipped = real & ((boxes[:, :, 3] < boxes[:, :, 1]) | (boxes[:, :, 4] < boxes[:, :, 2]))
    if bool(np.any(flipped)):
        n, k = np.argwhere(flipped)[0]
        raise DatasetError(f"{where}: frame {n} box {k} is {boxes[n, k, 1:].tolist()}, with "
                           "x2 < x1 or y2 < y1; boxes are x1, y1, x2, y2 (corners, not width "
                           "and height)")
    return boxes


@dataclass(frozen=True)
class CenterGrid:
    """The dense encoding of boxes on a grid of ``stride``-pixel cells over ``size``.

    The served output and the encoded targets share one layout, ``[N, rows, A]`` with
    ``A = (height / stride) * (width / stride)`` cells in row-major order: output rows are
    cx, cy, w, h (input pixels) then C class scores; target rows are cx, cy, w, h of the
    object centred in the cell (0 elsewhere), C heatmap rows (1 at an object's centre cell,
    a Gaussian around it, as CenterNet), a row that is 1 at object centres, then the original
    boxes, box k in cell column k: class id (-1 for none), x1, y1, x2, y2.
    """

    size: Tuple[int, int]
    """(height, width) of the model's input."""
    stride: int
    classes: int

    @property
    def cells(self) -> Tuple[int, int]:
        """(rows, columns) of the grid."""
        return self.size[0] // self.stride, self.size[1] // self.stride

    @property
    def anchors(self) -> int:
        """A: the number of cells."""
        rows, cols = self.cells
        return rows * cols

    @property
    def center_row(self) -> int:
        """Index of the target row that marks object centres."""
        return 4 + self.classes

    @property
    def target_rows(self) -> int:
        """Rows of an encoded target: box, heatmaps, centre mark, 5 rows of original boxes."""
        return self.center_row + 6

    def encode(self, boxes: np.ndarray) -> np.ndarray:
        """float32 ``[N, target_rows, A]`` targets of ``[N, K, 5]`` padded boxes.

        Raises:
            DatasetError: a frame holds more boxes than the grid has cells.
        """
        boxes = np.asarray(boxes, np.float32)
        if boxes.ndim != 3 or boxes.shape[2] != 5:
            raise DatasetError(f"boxes to encode have shape {list(boxes.shape)}, not [N, K, 5]")
        if boxes.shape[1] > self.anchors:
            raise DatasetError(f"targets hold up to {boxes.shape[1]} boxes per frame; this "
                               f"detector's grid has {self.anchors} cells, at most that many "
                               "boxes fit a frame")
        rows, cols = self.cells
        n, k = boxes.shape[:2]
        out = np.zeros((n, self.target_rows, rows, cols), np.float32)
        heat = out[:, 4:4 + self.classes]
        gy, gx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        for i in range(n):
            frame = boxes[i]
            # Larger objects first, so a small one sharing a cell keeps its own centre.
            for box in frame[np.argsort(-(frame[:, 3] - frame[:, 1]) * (frame[:, 4] -
                                                                         frame[:, 2]))]:
                if box[0] == PAD:
                    continue
                w, h = float(box[3] - box[1]), float(box[4] - box[2])
                cx, cy = float(box[1] + box[3]) / 2, float(box[2] + box[4]) / 2
                col = min(max(int(cx // self.stride), 0), cols - 1)
                row = min(max(int(cy // self.stride), 0), rows - 1)
                sigma = _sigma(w / self.stride, h / self.stride)
                blob = np.exp(-((gx - col) ** 2 + (gy - row) ** 2) / (2 * sigma * sigma))
                cls = int(box[0])
                heat[i, cls] = np.maximum(heat[i, cls], blob)
                out[i, 0:4, row, col] = (cx, cy, max(w, 1.0), max(h, 1.0))
                out[i, self.center_row, row, col] = 1.0
        flat = out.reshape(n, self.target_rows, rows * cols)
        flat[:, self.center_row + 1, :] = PAD
        flat[:, self.center_row + 1:, :k] = boxes.transpose(0, 2, 1)
        return flat

    def truths(self, encoded: np.ndarray) -> List[np.ndarray]:
        """The original ``[K_i, 5]`` boxes of each frame of encoded targets."""
        packed = np.asarray(encoded)[:, self.center_row + 1:, :].transpose(0, 2, 1)
        return frame_boxes(packed)


def _sigma(w_cells: float, h_cells: float) -> float:
    """The heatmap's Gaussian width in cells: a radius that grows with the object, as in
    CenterNet (an off-centre cell still gives a box that overlaps the object well)."""
    radius = max(0.0, math.floor(0.3 * min(w_cells, h_cells)))
    return (2 * radius + 1) / 6.0
