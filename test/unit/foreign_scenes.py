"""Shape scenes drawn independently of ``ml_bridge.core.synthetic``, to test the built-in
segmenter on frames unlike its training set.

Nothing here calls the training set's drawing code: shapes are rasterised from their
geometry with numpy (no OpenCV primitives), the backgrounds are other textures (smoothed
grey noise, soft stripes, soft tiles, speckled flat colour), the colours partly come from a
fixed palette of saturated ones, shapes cover up to half the frame, and frames have camera
sizes (320 x 240 and others) that the segment pipeline resizes as the node does.
"""
import math
from typing import List, Tuple

import cv2
import numpy as np

#: Class ids, as the built-in's labels number them.
DISC, SQUARE, TRIANGLE = 1, 2, 3

#: Saturated colours a user would pick for a test (RGB).
PALETTE = np.array([[220, 30, 30], [30, 60, 220], [30, 180, 40], [240, 220, 40],
                    [250, 250, 250], [15, 15, 15], [240, 130, 20], [150, 40, 190],
                    [40, 210, 220]], np.float32)

#: (height, width) of the frames: 4:3 landscape mostly, portrait and square too.
FRAME_SIZES = [(240, 320), (240, 320), (480, 640), (320, 240), (300, 300)]


def grey_texture(rng: np.random.Generator, height: int, width: int,
                 level: float = 128.0) -> np.ndarray:
    """Grey (equal channels) around ``level``: blurred noise at two scales and fine grain."""
    coarse = cv2.GaussianBlur(rng.normal(0.0, 60.0, (height, width)).astype(np.float32),
                              (0, 0), sigmaX=height / 25.0)
    fine = cv2.GaussianBlur(rng.normal(0.0, 30.0, (height, width)).astype(np.float32),
                            (0, 0), sigmaX=1.5)
    grey = level + coarse * 4.0 + fine
    return np.repeat(grey[:, :, None], 3, axis=2)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 H x W x 3 background of one of four textures (not yet clipped)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:
        return grey_texture(rng, height, width, float(rng.uniform(70, 190)))
    low = rng.uniform(40, 200, 3).astype(np.float32)
    high = np.clip(low + rng.uniform(-70, 70, 3), 0, 255).astype(np.float32)
    if kind == 1:  # soft stripes at an angle
        period = rng.uniform(0.05, 0.25) * min(height, width)
        phi = rng.uniform(0, math.pi)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (xs * math.cos(phi) + ys * math.sin(phi)) / period)
    elif kind == 2:  # soft tiles, like a floor
        cell = rng.uniform(0.1, 0.3) * min(height, width)
        t = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
        t = cv2.GaussianBlur(t, (0, 0), sigmaX=2.0)
    else:  # flat colour with speckle
        t = np.zeros((height, width), np.float32)
    image = low * (1.0 - t[:, :, None]) + high * t[:, :, None]
    return image + rng.normal(0.0, 10.0, (height, width, 1)).astype(np.float32)


def _polygon_mask(height: int, width: int, corners: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie inside the convex polygon ``corners`` (x, y), any winding."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    signs = []
    for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0)):
        signs.append((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= 0)
    inside_ccw = np.logical_and.reduce(signs)
    inside_cw = np.logical_and.reduce([~s for s in signs])
    return inside_ccw | inside_cw


def shape_mask(kind: int, height: int, width: int, cx: float, cy: float, radius: float,
               angle: float) -> np.ndarray:
    """Boolean mask of a disc, square or equilateral triangle with circumradius ``radius``."""
    if kind == DISC:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
    corners = 4 if kind == SQUARE else 3
    phis = angle + np.arange(corners) * 2 * math.pi / corners
    return _polygon_mask(height, width,
                         np.stack([cx + radius * np.cos(phis), cy + radius * np.sin(phis)], 1))


def circumradius(kind: int, area: float) -> float:
    """The circumradius of a shape of ``kind`` with ``area`` pixels."""
    if kind == DISC:
        return math.sqrt(area / math.pi)
    if kind == SQUARE:
        return math.sqrt(area / 2.0)
    return math.sqrt(area * 4.0 / (3.0 * math.sqrt(3.0)))


def pick_colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A palette or random colour at least 100 (Euclidean, RGB) from ``behind``."""
    for _ in range(50):
        colour = (PALETTE[rng.integers(len(PALETTE))] if rng.random() < 0.6
                  else rng.uniform(0, 255, 3).astype(np.float32))
        if float(np.linalg.norm(colour - behind)) >= 100.0:
            return colour
    return np.where(behind > 127, 0.0, 255.0).astype(np.float32)


def paint(image: np.ndarray, truth: np.ndarray, mask: np.ndarray, kind: int,
          colour: np.ndarray, rng: np.random.Generator) -> None:
    """Fills ``mask`` with ``colour`` under a faint lighting ramp; writes ``kind`` in truth."""
    height, width = truth.shape
    ramp = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :] * rng.uniform(-0.08, 0.08)
    shade = (1.0 + np.broadcast_to(ramp, (height, width)))[mask]
    image[mask] = np.clip(colour[None, :] * shade[:, None], 0, 255)
    truth[mask] = kind


def scene(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """1..3 shapes apart from each other, the first often large (up to half the frame).

    Returns:
        (image uint8 H x W x 3 RGB, truth uint8 H x W class ids).
    """
    image = background(rng, height, width)
    truth = np.zeros((height, width), np.uint8)
    placed: List[Tuple[float, float, float]] = []
    for i in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(1, 4))
        share = rng.uniform(0.15, 0.5) if i == 0 and rng.random() < 0.6 else rng.uniform(0.03, 0.12)
        radius = min(circumradius(kind, share * height * width), 0.47 * min(height, width))
        for _attempt in range(40):
            cx = rng.uniform(radius, width - radius)
            cy = rng.uniform(radius, height - radius)
            if all(math.hypot(cx - x, cy - y) > radius + r + 4 for x, y, r in placed):
                break
        else:
            continue  # no room: fewer shapes
        placed.append((cx, cy, radius))
        mask = shape_mask(kind, height, width, cx, cy, radius, rng.uniform(0, 2 * math.pi))
        paint(image, truth, mask, kind, pick_colour(rng, image[mask].mean(axis=0)), rng)
    # A camera's softness and sensor noise.
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.8)
    image += rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def scenes(count: int, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``count`` scenes of the frame sizes in turn, from ``seed``."""
    rng = np.random.default_rng(seed)
    return [scene(rng, *FRAME_SIZES[i % len(FRAME_SIZES)]) for i in range(count)]


def disc_and_square(seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """The issue's frame: 320 x 240, a large red disc and a blue square on a grey texture."""
    rng = np.random.default_rng(seed)
    height, width = 240, 320
    image = grey_texture(rng, height, width)
    truth = np.zeros((height, width), np.uint8)
    paint(image, truth, shape_mask(DISC, height, width, 112.0, 120.0, 95.0, 0.0), DISC,
          PALETTE[0], rng)
    paint(image, truth, shape_mask(SQUARE, height, width, 262.0, 80.0, 50.0, math.pi / 4),
          SQUARE, PALETTE[1], rng)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.8)
    return np.clip(image, 0, 255).astype(np.uint8), truth
