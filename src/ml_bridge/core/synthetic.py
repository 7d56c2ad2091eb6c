"""Synthetic shape scenes from fixed seeds: the ``shapes`` dataset and a moving-scene source.

Filled circles, squares and triangles of random size, colour and rotation are drawn over a
textured background (colour gradients, blotches and noise), so a model has to learn shape and
not just "anything that is not the background colour". Everything is numpy and OpenCV, and
every array comes from a fixed seed: nothing is downloaded and every run sees the same data.

The drawing functions are public so other datasets (crops of single shapes) and the synthetic
camera reuse exactly the look the segmentation model is trained on.
"""
import math
from typing import Optional, Sequence, Tuple

import numpy as np

#: Class ids of the ``shapes`` masks: the index of each label.
SHAPE_LABELS = ["background", "circle", "square", "triangle"]
CIRCLE, SQUARE, TRIANGLE = 1, 2, 3

#: Frames per split and their seeds: held-out frames come from another seed and are never
#: trained on. Sizes keep 10 epochs of ``shapes_seg`` at about a minute on a 2-core CPU.
SIZE = 64
TRAIN_FRAMES = 2000
HELDOUT_FRAMES = 256
TRAIN_SEED = 20240611
HELDOUT_SEED = 99170531

#: Shape sizes relative to the shorter image side.
MIN_SIZE, MAX_SIZE = 0.22, 0.5
#: Sub-pixel precision of OpenCV's drawing (fixed-point bits).
_SHIFT = 4


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 H x W x 3 background: a colour gradient, soft blotches, fine texture, noise.

    The texture is defined relative to the image size (a fixed number of blotches and grain
    cells), so a background looks the same at 64 x 64 as at 640 x 480.
    """
    import cv2

    c0 = rng.uniform(20, 235, 3)
    c1 = rng.uniform(20, 235, 3)
    theta = rng.uniform(0, 2 * math.pi)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    t = math.cos(theta) * xs + math.sin(theta) * ys
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = c0[None, None, :] * (1.0 - t[:, :, None]) + c1[None, None, :] * t[:, :, None]
    # Blotches: a coarse random grid blown up smoothly; grain: a finer one, one value per
    # cell for all channels (luminance texture).
    blotches = rng.normal(0.0, 28.0, (4, 4, 3)).astype(np.float32)
    image += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0.0, 14.0, (16, 16)).astype(np.float32)
    image += cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)[:, :, None]
    image += rng.normal(0.0, 6.0, (height, width, 1)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def shape_points(kind: int, center: Tuple[float, float], size: float,
                 angle: float = 0.0) -> np.ndarray:
    """Corners (float x, y) of a square or triangle of ``size`` about ``center``.

    A square's side is ``size``; a triangle is equilateral with its corners on a circle of
    diameter ``size * 1.15`` (so its area is close to a circle's of diameter ``size``).
    ``angle`` is in radians.
    """
    if kind == SQUARE:
        radius, corners, start = size / math.sqrt(2.0), 4, math.pi / 4
    elif kind == TRIANGLE:
        radius, corners, start = size * 0.575, 3, -math.pi / 2
    else:
        raise ValueError(f"shape kind {kind} has no corners (use {SQUARE} or {TRIANGLE})")
    phis = start + angle + np.arange(corners) * (2 * math.pi / corners)
    return np.stack([center[0] + radius * np.cos(phis), center[1] + radius * np.sin(phis)], 1)


def draw_shape(image: np.ndarray, mask: Optional[np.ndarray], kind: int,
               center: Tuple[float, float], size: float, color: Sequence[float],
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


def render_scene(rng: np.random.Generator, height: int, width: int,
                 max_shapes: int = 3) -> Tuple[np.ndarray, np.ndarray]:
    """A scene of 1..``max_shapes`` shapes (any kinds, possibly overlapping).

    Returns:
        (image uint8 H x W x 3 RGB, mask uint8 H x W of class ids 0..3).
    """
    image = textured_background(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    side = min(height, width)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = int(rng.integers(1, 4))
        size = rng.uniform(MIN_SIZE, MAX_SIZE) * side
        # Centres may sit close to the border: shapes are sometimes cut off, as in a camera.
        x = rng.uniform(size * 0.3, width - size * 0.3)
        y = rng.uniform(size * 0.3, height - size * 0.3)
        behind = image[int(y), int(x)].astype(np.float64)
        color = contrasting_color(rng, behind)
        draw_shape(image, mask, kind, (x, y), size, color, rng.uniform(0, 2 * math.pi))
    return image, mask
