"""Hand-built detectors (tensor ops, no training) that find saturated red, green and blue blobs.

Factories for the node (``blob_detectors:torch_detector`` with this folder on PYTHONPATH) and
the tests. Each finds, per colour, the bounding box of the pixels whose channel is high while
the other two are low, and reports it as a detector would:

- ``torch_detector`` / ``keras_detector``: the YOLOv8 layout ``[N, 4 + 3, ANCHORS]``, anchor c
  holding colour c's box (cx, cy, w, h in input pixels) with score SCORE in row 4 + c, the
  other anchors zero;
- ``torch_boxes_detector``: torchvision's decoded dict, ``boxes`` [N, 3, 4] x1 y1 x2 y2,
  ``scores`` [N, 3] (0 for a colour not seen), ``labels`` [N, 3];
- ``torch_colour_classifier``: a crop classifier, scores [N, 3] of each colour's saturation.

Frames for them: :func:`blob_frame` draws rectangles of the pure colours on grey.
"""
from typing import Any, List, Sequence, Tuple

import numpy as np

from ml_bridge.core.spec import TensorSpec

COLOURS = ("red", "green", "blue")
SIZE = 64          # the detectors' input: SIZE x SIZE RGB, pixel / 255
ANCHORS = 16
SCORE = 0.9
HIGH, LOW = 0.5, 0.3  # a colour's channel above HIGH, the other two below LOW
#: Pure colours on a grey ground (the letterbox's 114 grey is not saturated either).
RGB = {"red": (230, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 230)}
GROUND = (120, 120, 120)


def blob_frame(height: int, width: int,
               blobs: Sequence[Tuple[str, Tuple[int, int, int, int]]]) -> np.ndarray:
    """An RGB frame: grey, with each (colour, (x1, y1, x2, y2)) rectangle filled."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = GROUND
    for colour, (x1, y1, x2, y2) in blobs:
        image[y1:y2, x1:x2] = RGB[colour]
    return image


def _torch_boxes(x: Any) -> Tuple[Any, Any]:
    """[N, 3, H, W] in [0, 1] -> per colour x1 y1 x2 y2 [N, 3, 4] and present [N, 3] (0 or 1)."""
    import torch

    masks = (x > HIGH) & (torch.roll(x, -1, 1) < LOW) & (torch.roll(x, -2, 1) < LOW)
    cols = masks.amax(dim=2).float()  # N, 3, W
    rows = masks.amax(dim=3).float()  # N, 3, H
    iw = torch.arange(x.shape[3], dtype=torch.float32)
    ih = torch.arange(x.shape[2], dtype=torch.float32)
    x1 = (cols * iw + (1 - cols) * x.shape[3]).amin(-1)
    x2 = (cols * (iw + 1)).amax(-1)
    y1 = (rows * ih + (1 - rows) * x.shape[2]).amin(-1)
    y2 = (rows * (ih + 1)).amax(-1)
    return torch.stack([x1, y1, x2, y2], dim=2), cols.amax(-1)


def torch_detector() -> Any:
    """A torch module: [N, 3, 64, 64] -> [N, 7, 16] (YOLOv8 layout)."""
    import torch

    class BlobDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_spec = [TensorSpec("image", "float32", (-1, 3, SIZE, SIZE))]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            corners, present = _torch_boxes(x)
            centre = (corners[:, :, :2] + corners[:, :, 2:]) / 2
            size = corners[:, :, 2:] - corners[:, :, :2]
            boxes = torch.cat([centre, size], dim=2).transpose(1, 2)     # N, 4, 3
            scores = torch.diag_embed(present * SCORE)                      # N, class, anchor
            dense = torch.cat([boxes, scores], dim=1)                       # N, 7, 3
            return torch.nn.functional.pad(dense, (0, ANCHORS - len(COLOURS)))

    return BlobDetector()


def torch_boxes_detector() -> Any:
    """A torch module: [N, 3, 64, 64] -> {boxes, scores, labels} (torchvision's names)."""
    import torch

    class BlobBoxes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_spec = [TensorSpec("image", "float32", (-1, 3, SIZE, SIZE))]

        def forward(self, x: torch.Tensor) -> Any:
            corners, present = _torch_boxes(x)
            labels = torch.arange(len(COLOURS)).expand(x.shape[0], len(COLOURS))
            return {"boxes": corners, "scores": present * SCORE, "labels": labels}

    return BlobBoxes()


def torch_colour_classifier() -> Any:
    """A torch module: crops [N, 3, 32, 32] -> scores [N, 3], each colour's mean saturation
    (its channel minus the mean of the other two), times 10 as logits."""
    import torch

    class ColourClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_spec = [TensorSpec("image", "float32", (-1, 3, 32, 32))]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = x.mean(dim=(2, 3))  # N, 3
            others = (torch.roll(mean, -1, 1) + torch.roll(mean, -2, 1)) / 2
            return (mean - others) * 10.0

    return ColourClassifier()


def keras_detector() -> Any:
    """A Keras model: [N, 64, 64, 3] -> [N, 7, 16] (YOLOv8 layout), the same boxes."""
    import keras
    from keras import ops

    class BlobLayer(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            chw = ops.transpose(x, (0, 3, 1, 2))  # N, 3, H, W
            nxt = ops.concatenate([chw[:, 1:], chw[:, :1]], axis=1)
            nxt2 = ops.concatenate([chw[:, 2:], chw[:, :2]], axis=1)
            masks = ops.cast((chw > HIGH) & (nxt < LOW) & (nxt2 < LOW), "float32")
            cols, rows = ops.max(masks, axis=2), ops.max(masks, axis=3)
            ramp = ops.arange(SIZE, dtype="float32")
            x1 = ops.min(cols * ramp + (1 - cols) * SIZE, axis=-1)
            x2 = ops.max(cols * (ramp + 1), axis=-1)
            y1 = ops.min(rows * ramp + (1 - rows) * SIZE, axis=-1)
            y2 = ops.max(rows * (ramp + 1), axis=-1)
            present = ops.max(cols, axis=-1)  # N, 3
            boxes = ops.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
            scores = ops.expand_dims(present * SCORE, 1) * ops.eye(len(COLOURS))  # N, cls, anchor
            dense = ops.concatenate([boxes, scores], axis=1)  # N, 7, 3
            return ops.pad(dense, ((0, 0), (0, 0), (0, ANCHORS - len(COLOURS))))

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    return keras.Model(inputs, BlobLayer()(inputs), name="blob_detector")


def expected_boxes(blobs: Sequence[Tuple[str, Tuple[int, int, int, int]]]) -> List[List[float]]:
    """The boxes a perfect detector reports for ``blobs``, in frame pixels."""
    return [[float(v) for v in box] for _, box in blobs]
