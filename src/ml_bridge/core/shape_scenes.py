"""The ``shape_scenes`` detection dataset: boxes around circles, squares and triangles.

128 x 128 RGB frames with 1-6 filled shapes of varied sizes, colours and rotations on the
textured backgrounds of :mod:`ml_bridge.core.synthetic` (some turned grey). Each frame's
targets are a ``[K, 5]`` float32 array, one row per shape: class id (``SCENE_LABELS`` index),
then x1, y1, x2, y2 of its box in pixels. A :class:`Dataset` stacks frames, so it holds the
targets padded to ``[N, MAX_SHAPES, 5]`` with rows of class ``-1`` (see
:mod:`ml_bridge.core.box_targets`).

Everything comes from fixed seeds: nothing is downloaded and every run sees the same data.
The held-out frames come from another seed and are never trained on.
"""
import functools
import math
from typing import List, Optional, Tuple

import numpy as np

from ml_bridge.core.box_targets import pad_boxes
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.synthetic import (
    CIRCLE,
    contrasting_color,
    draw_shape,
    sensor_noise,
    shape_points,
    textured_background,
)
from ml_bridge.core.vision import ImageFormat, resize

#: Detection class ids: the index of each label.
SCENE_LABELS = ["circle", "square", "triangle"]
SIZE = 128
MAX_SHAPES = 6
#: Frames per split and their seeds. Sizes keep 15 epochs of ``shapes_det`` near a minute
#: on a 2-core CPU.
TRAIN_FRAMES = 1200
HELDOUT_FRAMES = 200
TRAIN_SEED = 20261202
HELDOUT_SEED = 77310419
#: Shape sizes (circle diameter, square side, triangle size) relative to the frame side.
MIN_SIZE, MAX_SIZE = 0.14, 0.45
#: The farthest a shape's outline reaches from its centre, relative to its size (a
#: triangle's corners: 0.7; a square's: 0.71).
_RADIUS = 0.72


def shape_box(kind: int, center: Tuple[float, float], size: float, angle: float) -> np.ndarray:
    """The axis-aligned box (x1, y1, x2, y2) around a shape drawn by :func:`draw_shape`."""
    if kind == CIRCLE:
        half = size / 2.0
        return np.array([center[0] - half, center[1] - half, center[0] + half,
                         center[1] + half])
    pts = shape_points(kind, center, size, angle)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def render_boxes_scene(rng: np.random.Generator, height: int = SIZE, width: int = SIZE,
                       max_shapes: int = MAX_SHAPES, sizes: Tuple[float, float] = (MIN_SIZE,
                                                                                   MAX_SIZE),
                       grey_share: float = 0.25) -> Tuple[np.ndarray, np.ndarray]:
    """One scene of 1..``max_shapes`` shapes and their boxes.

    Shapes are whole and do not touch, so each one's class can be told from the frame.

    Args:
        rng: the generator everything is drawn from.
        height: frame height in pixels.
        width: frame width in pixels.
        max_shapes: the most shapes in the scene.
        sizes: (smallest, largest) shape size relative to the shorter frame side.
        grey_share: the share of scenes whose background is turned grey.

    Returns:
        (image uint8 H x W x 3 RGB, boxes float32 [K, 5]: class id, x1, y1, x2, y2).
    """
    image = textured_background(rng, height, width)
    if rng.random() < grey_share:
        grey = image.astype(np.float32).mean(axis=2, keepdims=True)
        image = np.repeat(grey, 3, axis=2).astype(np.uint8)
    side = min(height, width)
    placed: List[Tuple[float, float, float]] = []
    rows: List[np.ndarray] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = int(rng.integers(1, 4))
        size = rng.uniform(*sizes) * side
        for _attempt in range(40):
            # Whole shapes, apart: a square cut by the border or by another shape may look
            # like a triangle, and a label the frame cannot support only teaches memorising.
            x = rng.uniform(size * _RADIUS, width - size * _RADIUS)
            y = rng.uniform(size * _RADIUS, height - size * _RADIUS)
            if all(math.hypot(x - px, y - py) >= _RADIUS * (size + ps) for px, py, ps in placed):
                break
        else:
            continue  # no room left: fewer shapes
        placed.append((x, y, size))
        angle = rng.uniform(0, 2 * math.pi)
        color = contrasting_color(rng, image[int(y), int(x)].astype(np.float64))
        draw_shape(image, None, kind, (x, y), size, color, angle)
        box = np.clip(shape_box(kind, (x, y), size, angle), 0, [width, height, width, height])
        rows.append(np.concatenate([[kind - 1], box]))
    boxes = np.asarray(rows, np.float32).reshape(-1, 5)
    return image, boxes


@functools.lru_cache(maxsize=2)
def scene_frames(heldout: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The ``shape_scenes`` frames and boxes, rendered once per process from a fixed seed.

    Args:
        heldout: the held-out split (another seed, never trained on) instead of training.

    Returns:
        (frames uint8 [N, 128, 128, 3] RGB, boxes float32 [N, MAX_SHAPES, 5] padded with
        rows of class -1), read-only.
    """
    rng = np.random.default_rng(HELDOUT_SEED if heldout else TRAIN_SEED)
    count = HELDOUT_FRAMES if heldout else TRAIN_FRAMES
    frames = np.empty((count, SIZE, SIZE, 3), np.uint8)
    boxes = []
    for i in range(count):
        image, found = render_boxes_scene(rng)
        frames[i] = sensor_noise(rng, image, 4.0)  # light sensor noise: shapes are not flat either
        boxes.append(found)
    padded = pad_boxes(boxes, MAX_SHAPES)
    frames.flags.writeable = False
    padded.flags.writeable = False
    return frames, padded


def scale_boxes(boxes: np.ndarray, from_size: Tuple[int, int],
                to_size: Tuple[int, int]) -> np.ndarray:
    """Boxes [..., 5] of a frame of ``from_size`` (height, width) in pixels of ``to_size``;
    padding rows (class -1) stay as they are."""
    out = np.array(boxes, np.float32, copy=True)
    sy = to_size[0] / from_size[0]
    sx = to_size[1] / from_size[1]
    real = out[..., 0] >= 0
    out[..., 1:5] = np.where(real[..., None], out[..., 1:5] * np.array([sx, sy, sx, sy], np.float32),
                             out[..., 1:5])
    return out


def _dataset(name: str, fmt: Optional[ImageFormat], heldout: bool) -> Dataset:
    fmt = fmt if fmt is not None else ImageFormat((SIZE, SIZE), channels_first=False)
    if fmt.clip_length:
        raise DatasetError(f"dataset '{name}' holds single frames, but the model takes "
                           f"{fmt.clip_length}-frame clips; train a frame model on it")
    frames, boxes = scene_frames(heldout)
    if tuple(fmt.size) != (SIZE, SIZE):
        frames = np.stack([resize(f, fmt.size) for f in frames])
        boxes = scale_boxes(boxes, (SIZE, SIZE), fmt.size)
    return Dataset(name, [fmt.batch(frames)], [np.array(boxes, np.float32)])


def shape_scenes(fmt: Optional[ImageFormat]) -> Dataset:
    """The built-in ``shape_scenes`` training set in the model's format.

    Inputs are the frames through ``fmt``; targets float32 [N, MAX_SHAPES, 5] boxes in pixels
    of ``fmt.size`` (padding rows have class -1). ``fmt`` None: 128 x 128 RGB, NHWC,
    pixel / 255.
    """
    return _dataset("shape_scenes", fmt, heldout=False)


def shape_scenes_heldout(fmt: Optional[ImageFormat]) -> Dataset:
    """The held-out ``shape_scenes`` frames (never trained on), as :func:`shape_scenes`."""
    return _dataset("shape_scenes:heldout", fmt, heldout=True)
