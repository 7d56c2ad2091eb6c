"""Synthetic shape scenes from fixed seeds: the ``shapes`` dataset and a moving-scene source.

Filled circles, squares and triangles of random size, colour and rotation are drawn over a
textured background (colour gradients, blotches and noise; grey ground; stripes and plaids),
so a model has to learn shape and not just "anything that is not the background colour".
Shapes range from about 12 pixels across at 64 x 64 to ones covering half the frame, and a
third of the colours are saturated hues. Everything is numpy and OpenCV, and every array
comes from a fixed seed: nothing is downloaded and every run sees the same data.

The drawing functions are public so other datasets (crops of single shapes) and the synthetic
camera reuse exactly the look the segmentation model is trained on.
"""
import functools
import math
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.synthetic_textures import scene_background, textured_background
from ml_bridge.core.vision import ImageFormat, resize

#: Class ids of the ``shapes`` masks: the index of each label.
SHAPE_LABELS = ["background", "circle", "square", "triangle"]
CIRCLE, SQUARE, TRIANGLE = 1, 2, 3

#: Frames per split and their seeds: held-out frames come from another seed and are never
#: trained on. Sizes keep 10 epochs of ``shapes_seg`` at about two minutes on a 2-core CPU.
SIZE = 64
TRAIN_FRAMES = 2500
HELDOUT_FRAMES = 256
TRAIN_SEED = 20240611
HELDOUT_SEED = 99170531

#: Shape sizes relative to the shorter image side (``SMALL_SIZE``: the smallest in a scene of
#: the dataset, about 12 pixels across at 64 x 64).
MIN_SIZE, MAX_SIZE, SMALL_SIZE = 0.25, 0.5, 0.18
#: The first shape of some scenes is larger, up to this: a disc then covers about half of a
#: square frame, as an object close to the camera does (``LARGE_SHARE`` of the scenes).
LARGE_SIZE, LARGE_SHARE = 0.85, 0.35
#: Sub-pixel precision of OpenCV's drawing (fixed-point bits).
_SHIFT = 4


def shape_points(kind: int, center: Tuple[float, float], size: float,
                 angle: float = 0.0) -> np.ndarray:
    """Corners (float x, y) of a square or triangle of ``size`` about ``center``.

    A square's side is ``size``; a triangle is equilateral with its corners on a circle of
    diameter ``size * 1.4`` (so its area is near that of a circle of diameter ``size``).
    ``angle`` is in radians.
    """
    if kind == SQUARE:
        radius, corners, start = size / math.sqrt(2.0), 4, math.pi / 4
    elif kind == TRIANGLE:
        radius, corners, start = size * 0.7, 3, -math.pi / 2
    else:
        raise ValueError(f"shape kind {kind} has no corners (use {SQUARE} or {TRIANGLE})")
    phis = start + angle + np.arange(corners) * (2 * math.pi / corners)
    return np.stack([center[0] + radius * np.cos(phis), center[1] + radius * np.sin(phis)], 1)


def draw_shape(image: np.ndarray, mask: Optional[np.ndarray], kind: int,
               center: Tuple[float, float], size: float,
               color: Union[Sequence[float], np.ndarray],
               angle: float = 0.0) -> None:
    """Draws a filled shape into ``image`` and writes ``kind`` into ``mask`` (if given).

    Args:
        image: uint8 H x W x 3, drawn in place (anti-aliased edges).
        mask: uint8 H x W class ids, written in place, or None.
        kind: 1 circle, 2 square, 3 triangle (the ``SHAPE_LABELS`` index).
        center: (x, y) in pixels, may be fractional.
        size: circle diameter, square side, or triangle size (see :func:`shape_points`).
        color: the fill colour, 3 values in the image's channel order.
        angle: rotation in radians (squares and triangles).
    """
    import cv2

    scale = float(1 << _SHIFT)
    fill = tuple(float(c) for c in color)
    if kind == CIRCLE:
        c = (int(round(center[0] * scale)), int(round(center[1] * scale)))
        r = max(int(round(size / 2.0 * scale)), 1)
        cv2.circle(image, c, r, fill, -1, cv2.LINE_AA, _SHIFT)
        if mask is not None:
            cv2.circle(mask, c, r, int(kind), -1, cv2.LINE_8, _SHIFT)
        return
    pts = np.round(shape_points(kind, center, size, angle) * scale).astype(np.int32)[None]
    cv2.fillPoly(image, pts, fill, cv2.LINE_AA, _SHIFT)
    if mask is not None:
        cv2.fillPoly(mask, pts, int(kind), cv2.LINE_8, _SHIFT)


def contrasting_color(rng: np.random.Generator, behind: np.ndarray,
                      min_distance: float = 110.0) -> np.ndarray:
    """A random colour at least ``min_distance`` (sum of channel differences) from ``behind``."""
    color = rng.uniform(0, 255, 3)
    for _ in range(20):
        if float(np.abs(color - behind).sum()) >= min_distance:
            break
        color = rng.uniform(0, 255, 3)
    else:  # rare: push each channel away from the background's
        color = np.where(behind < 128, 255.0, 0.0)
    return color


def shape_color(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A shape's fill colour: a third are saturated (any hue, as painted objects are), the
    rest anywhere in the RGB cube; either way at least 110 from ``behind`` (see
    :func:`contrasting_color`)."""
    if rng.random() >= 1.0 / 3.0:
        return contrasting_color(rng, behind)
    for _ in range(20):
        hue = rng.uniform(0, 6)
        ramp = np.clip(np.abs(((hue + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
        color = rng.uniform(120, 255) * (1.0 - rng.uniform(0.75, 1.0) * (1.0 - ramp))
        if float(np.abs(color - behind).sum()) >= 110.0:
            return color
    return contrasting_color(rng, behind)


def render_scene(rng: np.random.Generator, height: int, width: int,
                 max_shapes: int = 3) -> Tuple[np.ndarray, np.ndarray]:
    """A scene of 1..``max_shapes`` shapes of random kinds, sizes, colours and rotations on a
    :func:`scene_background`.

    Shapes may overlap a little and reach over the border a little, as objects do in a
    camera's view, but each keeps most of its outline visible (so its class can be told):
    they are drawn largest first, so a shape drawn later, on top, is never the larger one.

    Returns:
        (image uint8 H x W x 3 RGB, mask uint8 H x W of class ids 0..3).
    """
    image = scene_background(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    side = min(height, width)
    placed: List[Tuple[float, float, float]] = []
    count = int(rng.integers(1, max_shapes + 1))
    largest = LARGE_SIZE if rng.random() < LARGE_SHARE else MAX_SIZE
    sizes = rng.uniform(SMALL_SIZE, MAX_SIZE, count) * side
    sizes[0] = rng.uniform(SMALL_SIZE, largest) * side
    # Largest first: a small shape drawn over a large one still leaves most of the large
    # one's outline, whereas a large one drawn later could hide all but a sliver of a small
    # one, leaving pixels whose class nothing in the frame shows.
    for size in sorted(sizes, reverse=True):
        kind = int(rng.integers(1, 4))
        for _attempt in range(10):
            x = rng.uniform(size * 0.4, width - size * 0.4)
            y = rng.uniform(size * 0.4, height - size * 0.4)
            if all(math.hypot(x - px, y - py) >= 0.4 * (size + ps) for px, py, ps in placed):
                break
        else:
            continue  # no room left: fewer shapes
        placed.append((x, y, size))
        behind = image[int(y), int(x)].astype(np.float64)
        color = shape_color(rng, behind)
        draw_shape(image, mask, kind, (x, y), size, color, rng.uniform(0, 2 * math.pi))
    return image, mask


def _training_scene(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One 64 x 64 training scene; half are drawn on a larger canvas of another aspect ratio
    and squeezed to 64 x 64, as a camera frame is by the pipeline (4:3 frames make circles
    slightly oval), so the model segments squeezed frames as well as square ones."""
    if rng.random() < 0.5:
        return render_scene(rng, SIZE, SIZE, max_shapes=4)
    height = int(SIZE * rng.uniform(1.0, 3.0))
    width = int(round(height * math.exp(rng.uniform(math.log(0.75), math.log(1.5)))))
    image, mask = render_scene(rng, height, width, max_shapes=4)
    return resize(image, (SIZE, SIZE)), _resize_mask(mask, (SIZE, SIZE))


def _resize_mask(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def sensor_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` with grey Gaussian noise of ``sigma`` added (the same on every channel)."""
    noise = rng.normal(0.0, sigma, image.shape[:2] + (1,)).astype(np.float32)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=2)
def shapes_frames(heldout: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The ``shapes`` frames and masks, rendered once per process from a fixed seed.

    Args:
        heldout: the held-out split (another seed, never trained on) instead of training.

    Returns:
        (frames uint8 [N, 64, 64, 3] RGB, masks uint8 [N, 64, 64] class ids), read-only.
    """
    rng = np.random.default_rng(HELDOUT_SEED if heldout else TRAIN_SEED)
    count = HELDOUT_FRAMES if heldout else TRAIN_FRAMES
    frames = np.empty((count, SIZE, SIZE, 3), np.uint8)
    masks = np.empty((count, SIZE, SIZE), np.uint8)
    for i in range(count):
        image, masks[i] = _training_scene(rng)
        # Light sensor noise over everything, so shapes are not perfectly flat either.
        frames[i] = sensor_noise(rng, image, 4.0)
    frames.flags.writeable = False
    masks.flags.writeable = False
    return frames, masks


def _dataset(name: str, fmt: Optional[ImageFormat], heldout: bool) -> Dataset:
    fmt = fmt if fmt is not None else ImageFormat((SIZE, SIZE), channels_first=False)
    if fmt.clip_length:
        raise DatasetError(f"dataset '{name}' holds single frames, but the model takes "
                           f"{fmt.clip_length}-frame clips; train a frame model on it")
    frames, masks = shapes_frames(heldout)
    targets = np.stack([_resize_mask(m, fmt.size) for m in masks]).astype(np.int64)
    return Dataset(name, [fmt.batch(frames)], [targets])


def shapes(fmt: Optional[ImageFormat]) -> Dataset:
    """The built-in ``shapes`` training set in the model's format.

    Inputs are the frames through ``fmt`` (float32 [N, C, H, W] channels first, else
    [N, H, W, C]); targets are int64 class ids [N, H, W] (masks resized nearest-neighbour to
    ``fmt.size``). ``fmt`` None: 64 x 64 RGB, NHWC, pixel / 255.
    """
    return _dataset("shapes", fmt, heldout=False)


def shapes_heldout(fmt: Optional[ImageFormat]) -> Dataset:
    """The held-out ``shapes`` frames (never trained on), as :func:`shapes` makes them."""
    return _dataset("shapes:heldout", fmt, heldout=True)


class _Mover:
    """One shape of a moving scene: position and angle advance each frame, bouncing off the
    frame's edges."""

    def __init__(self, rng: np.random.Generator, kind: int, lane: float, height: int,
                 width: int, background: np.ndarray) -> None:
        side = min(height, width)
        self.kind = kind
        self.size = rng.uniform(MIN_SIZE + 0.02, 0.4) * side
        # Each shape starts in its own third of the frame (``lane`` in 0..1), so they begin
        # apart; they may cross later, briefly, as objects in a camera's view do.
        self.pos = np.array([lane * width, rng.uniform(0.35, 0.65) * height])
        speed = rng.uniform(0.006, 0.015) * side  # pixels per frame
        heading = rng.uniform(0, 2 * math.pi)
        self.velocity = speed * np.array([math.cos(heading), math.sin(heading)])
        self.angle = rng.uniform(0, 2 * math.pi)
        self.spin = rng.uniform(-0.03, 0.03)  # radians per frame
        behind = background[int(self.pos[1]), int(self.pos[0])].astype(np.float64)
        self.color = contrasting_color(rng, behind, min_distance=150.0)
        self.limits = np.array([width, height], np.float64)

    def step(self) -> None:
        self.pos += self.velocity
        margin = self.size * 0.55  # a rotated square's corners stay (nearly) in view
        for axis in (0, 1):
            if self.pos[axis] < margin or self.pos[axis] > self.limits[axis] - margin:
                self.velocity[axis] = -self.velocity[axis]
                self.pos[axis] = float(np.clip(self.pos[axis], margin,
                                               self.limits[axis] - margin))
        self.angle += self.spin


def moving_scenes(height: int, width: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Endless uint8 H x W x 3 RGB frames of a circle, a square and a triangle moving
    smoothly over a fixed textured background (the look of ``shapes``, at any frame size).

    Args:
        height: Frame height in pixels.
        width: Frame width in pixels.
        seed: Seed of the background, shapes, colours and motions.
    """
    rng = np.random.default_rng(seed)
    background = textured_background(rng, height, width)
    kinds = rng.permutation([CIRCLE, SQUARE, TRIANGLE])
    movers = [_Mover(rng, int(kind), (i + 0.5) / 3, height, width, background)
              for i, kind in enumerate(kinds)]
    while True:
        frame = background.copy()
        for mover in movers:
            draw_shape(frame, None, mover.kind, (float(mover.pos[0]), float(mover.pos[1])),
                       mover.size, mover.color, mover.angle)
            mover.step()
        yield frame
