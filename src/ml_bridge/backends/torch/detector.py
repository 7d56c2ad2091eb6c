"""The built-in detector ``shapes_det`` (torch) and its loss.

A CenterNet-style single-stage detector: a small CNN down to 1/16 of the frame, joined back
to 1/8, and per cell of the 1/8 grid a heatmap score per class, the box centre's offset in
the cell and the box size. It serves the YOLOv8 layout ``[N, 4 + C, A]`` (cx, cy, w, h in
input pixels, then class probabilities; A = 256 cells of a 128 x 128 input), so the
``detect`` pipeline, the exports and ``map50`` read it as they read a YOLO export. It trains
on the dense targets of :class:`ml_bridge.core.box_targets.CenterGrid`, whose rows line up
with the output's.
"""
import math
from typing import List, Tuple

import numpy as np
import torch
from torch import nn

from ml_bridge.backends.torch.builtins import seeded_init
from ml_bridge.backends.torch.model import TorchModel
from ml_bridge.core.box_targets import CenterGrid
from ml_bridge.core.shape_scenes import SCENE_LABELS
from ml_bridge.core.spec import TensorSpec
from ml_bridge.core.vision import ImageFormat

#: What ``shapes_det`` takes: 128 x 128 RGB, pixel / 255 centred on 0.5, std 0.25.
DET_FORMAT = ImageFormat((128, 128), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                         channels_first=True)
STRIDE = 8
#: The class heatmaps start near this probability everywhere (CenterNet's prior), so the
#: first steps are not spent pushing every cell of the background down.
PRIOR = 0.05
#: Raw log-sizes are clamped here: a box at most e^4 cells across, so exp never overflows.
MAX_LOG_SIZE = 4.0


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation,
                                   dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ShapesDet(nn.Module):
    """Stages at 1/2, 1/4, 1/8 and 1/16 of the input; the 1/16 features, upsampled, are added
    to the 1/8 ones (the deepest stage sees whole large shapes), then a 1x1 head."""

    cell_xy: torch.Tensor

    def __init__(self, grid: CenterGrid,
                 widths: Tuple[int, int, int, int] = (16, 32, 48, 64)) -> None:
        """Builds the layers (random weights) for ``grid``'s input size and classes."""
        super().__init__()
        self.stride = grid.stride
        self.classes = grid.classes
        self.down = nn.ModuleList([
            _conv(3, widths[0], 2),
            _conv(widths[0], widths[1], 2),
            nn.Sequential(_conv(widths[1], widths[2], 2), _conv(widths[2], widths[2])),
            nn.Sequential(_conv(widths[2], widths[3], 2), _conv(widths[3], widths[3], dilation=2)),
        ])
        self.lateral = nn.Conv2d(widths[3], widths[2], 1)
        self.merge = _conv(widths[2], widths[2])
        self.head = nn.Conv2d(widths[2], 4 + grid.classes, 1)
        rows, cols = grid.cells
        gy, gx = torch.meshgrid(torch.arange(rows, dtype=torch.float32),
                                torch.arange(cols, dtype=torch.float32), indexing="ij")
        # Not weights: left out of the state dict, rebuilt from the grid.
        self.register_buffer("cell_xy", torch.stack([gx, gy]).reshape(1, 2, -1),
                             persistent=False)

    def init_prior(self) -> None:
        """Class logits start at :data:`PRIOR`; box outputs at the cell centre, 2 cells wide."""
        bias = self.head.bias
        assert bias is not None
        with torch.no_grad():
            bias.zero_()
            bias[2:4] = math.log(2.0)
            bias[4:] = math.log(PRIOR / (1 - PRIOR))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised RGB -> [N, 4 + C, A]: cx, cy, w, h (pixels), probabilities."""
        for stage in self.down[:3]:
            x = stage(x)
        deep = self.down[3](x)
        x = self.merge(x + nn.functional.interpolate(self.lateral(deep), scale_factor=2.0))
        raw = self.head(x).flatten(2)  # N, 4 + C, A
        centre = (self.cell_xy + torch.sigmoid(raw[:, 0:2])) * self.stride
        size = torch.exp(raw[:, 2:4].clamp(-MAX_LOG_SIZE, MAX_LOG_SIZE)) * self.stride
        return torch.cat([centre, size, torch.sigmoid(raw[:, 4:])], 1)


class CenterLoss(nn.Module):
    """CenterNet's loss on the served layout against :class:`CenterGrid` targets: a focal
    loss on the class heatmaps, and at object centres an L1 loss on the centre (in cells)
    and on the log of the size; each summed and divided by the number of objects."""

    def __init__(self, grid: CenterGrid) -> None:
        """For outputs and targets of ``grid``."""
        super().__init__()
        self.grid = grid

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss per object of a batch (outputs [N, 4 + C, A], targets [N, rows, A])."""
        c = self.grid.classes
        p = output[:, 4:4 + c].float().clamp(1e-4, 1 - 1e-4)
        heat = target[:, 4:4 + c]
        pos = (heat == 1.0).float()
        focal = -(torch.log(p) * (1 - p) ** 2 * pos
                  + torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - pos)).sum()
        centres = target[:, self.grid.center_row:self.grid.center_row + 1]
        count = centres.sum().clamp_min(1.0)
        offset = (output[:, 0:2] - target[:, 0:2]).abs() / self.grid.stride
        size = (torch.log(output[:, 2:4]) - torch.log(target[:, 2:4].clamp_min(1.0))).abs()
        return (focal + ((offset + size) * centres).sum()) / count


def _det_input(image: np.ndarray) -> List[np.ndarray]:
    return [DET_FORMAT.frame(image)[None]]


def shapes_det(device: torch.device) -> TorchModel:
    """The ``shapes_det`` detector: float32 [N, 3, 128, 128] -> [N, 7, 256], the YOLOv8
    layout (cx, cy, w, h in input pixels, then circle, square, triangle probabilities).

    Its defaults (Adam, learning rate 2e-3, batch 16) train 15 epochs on the built-in
    ``shape_scenes`` in about a minute on a 2-core CPU.
    """
    grid = CenterGrid(DET_FORMAT.size, STRIDE, len(SCENE_LABELS))
    with torch.device("cpu"):
        module = ShapesDet(grid)
        seeded_init(module, seed=5)
        module.init_prior()
    model = TorchModel(module, "shapes_det", device,
                       inputs=[TensorSpec("image", "float32", (-1,) + DET_FORMAT.input_shape())],
                       outputs=[TensorSpec("detections", "float32",
                                           (-1, 4 + grid.classes, grid.anchors))],
                       labels=SCENE_LABELS, outputs_probabilities=True,
                       preprocess_image=_det_input, batch_size=16, learning_rate=2e-3,
                       loss=CenterLoss(grid), image_format=DET_FORMAT)
    model.box_grid = grid
    model.is_classifier = False  # output 0 is dense boxes, not one score per class
    return model
