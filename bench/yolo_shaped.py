"""A detector with YOLOv8n's input and output shapes, for the detect figures.

``bench.yolo_shaped:yolov8n_shaped`` (a factory a node can serve) takes a 640 x 640 RGB frame
(pixels / 255, channels first) and answers ``[N, 84, 8400]`` in the YOLOv8 layout: cx, cy, w, h
in input pixels, then 80 class scores in [0, 1], for the 80 x 80 + 40 x 40 + 20 x 20 anchors of
strides 8, 16 and 32. A small convolutional backbone with a head per stride costs about what a
real-time detector does on a CPU; its weights are seeded, not trained, so what it detects is
planted: :func:`planted_output` lays :data:`OBJECTS` seeded objects over the anchors (each
anchor near an object's centre scores its class well above the threshold with a box close to
the object's, the rest score about 1e-4), and the network's own output only nudges that
(``NUDGE``). The decode, NMS and messages then see a few hundred candidates and about
:data:`OBJECTS` detections per frame, as a real detector's output gives them, the same on
every side of a comparison.
"""
from typing import List, Tuple

import numpy as np

from ml_bridge.core.model import ModelBundle
from ml_bridge.core.spec import TensorSpec
from ml_bridge.core.vision import ImageFormat

#: The side of the square input.
SIZE = 640
#: Classes (COCO's count, as YOLOv8n).
CLASSES = 80
STRIDES = (8, 16, 32)
#: Anchors of the three strides: 6400 + 1600 + 400.
ANCHORS = sum((SIZE // s) ** 2 for s in STRIDES)
#: Objects planted in the output.
OBJECTS = 20
#: How far the network's own output moves the planted boxes (pixels) and class logits.
NUDGE = (2.0, 0.2)
LABELS = [f"class{i}" for i in range(CLASSES)]


def anchor_centres() -> np.ndarray:
    """[A, 2] x, y of every anchor's centre in input pixels, stride 8 first (YOLOv8's order)."""
    out: List[np.ndarray] = []
    for stride in STRIDES:
        cells = SIZE // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        out.append(np.stack([xs.ravel(), ys.ravel()], 1) * stride + stride / 2)
    return np.concatenate(out).astype(np.float32)


def planted_output(seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(boxes [4, A] cx cy w h, class logits [C, A]) of :data:`OBJECTS` seeded objects.

    Every anchor of stride 8 or 16 within 1.5 strides of an object's centre gets the object's
    box (a pixel or two off, as neighbouring anchors' boxes are) and its class a logit of a
    score between 0.3 and 0.9; any other anchor a box of its stride's size on its centre and
    logits of about 1e-4.
    """
    rng = np.random.default_rng(seed)
    centres = anchor_centres()
    strides = np.concatenate([np.full((SIZE // s) ** 2, s, np.float32) for s in STRIDES])
    boxes = np.concatenate([centres.T, np.stack([strides, strides]) * 2]).astype(np.float32)
    logits = np.full((CLASSES, ANCHORS), -9.0, np.float32)
    for _ in range(OBJECTS):
        cx, cy = rng.uniform(80, SIZE - 80, 2)
        w, h = rng.uniform(24, 160, 2)
        cls = int(rng.integers(CLASSES))
        near = (np.hypot(centres[:, 0] - cx, centres[:, 1] - cy) < 1.5 * strides) & (strides < 32)
        count = int(near.sum())
        boxes[:, near] = (np.array([[cx], [cy], [w], [h]], np.float32)
                          + rng.normal(0, 1.5, (4, count)).astype(np.float32))
        score = rng.uniform(0.3, 0.9, count)
        logits[cls, near] = np.log(score / (1 - score))
    return boxes, logits


def yolov8n_shaped() -> ModelBundle:
    """The YOLOv8n-shaped torch detector (seeded; the same weights in every process)."""
    import torch
    from torch import nn

    from ml_bridge.backends.torch.builtins import seeded_init

    def conv(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.SiLU())

    class YoloShaped(nn.Module):
        """Strided 3 x 3 convolutions down to strides 8, 16 and 32, a 1 x 1 head of 4 + C
        channels on each, the planted output nudged by the heads (see the module)."""

        input_spec = [TensorSpec("images", "float32", (-1, 3, SIZE, SIZE))]
        output_spec = [TensorSpec("output0", "float32", (-1, 4 + CLASSES, ANCHORS))]
        planted: torch.Tensor
        nudge: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(conv(3, 8), conv(8, 16), conv(16, 32))
            self.down = nn.ModuleList([conv(32, 64), conv(64, 96)])
            self.heads = nn.ModuleList([nn.Conv2d(c, 4 + CLASSES, 1) for c in (32, 64, 96)])
            boxes, logits = planted_output()
            self.register_buffer("planted", torch.from_numpy(np.concatenate([boxes, logits])))
            nudge = np.full((4 + CLASSES, 1), NUDGE[1], np.float32)
            nudge[:4] = NUDGE[0]
            self.register_buffer("nudge", torch.from_numpy(nudge))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = [self.stem(x)]
            for layer in self.down:
                feats.append(layer(feats[-1]))
            out = torch.cat([head(f).flatten(2) for head, f in zip(self.heads, feats)], 2)
            out = out.clamp_(-1.0, 1.0).mul_(self.nudge).add_(self.planted)
            out[:, 4:].sigmoid_()
            return out

    with torch.device("cpu"):
        module = seeded_init(YoloShaped(), seed=3).eval()
    fmt = ImageFormat((SIZE, SIZE), channels_first=True)
    return ModelBundle(model=module, image_format=fmt)
