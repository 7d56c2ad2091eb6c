"""Backgrounds of the synthetic scenes: textures drawn from a seeded generator.

:func:`textured_background` (colour gradients, blotches, grain) is the look of every synthetic
dataset; :func:`scene_background` adds grey ground and stripes or plaids for the ``shapes``
segmentation scenes, so a segmenter learns shapes against more than one kind of texture.
"""
import math

import numpy as np


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


def pattern_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Soft stripes or a plaid of two colours, with grain: float32 H x W x 3.

    One or two sine waves at random angles and periods, each squashed towards a square wave,
    so backgrounds have straight edges and corners of their own (stripes, tiles) that the
    model must not take for shapes.
    """
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None] * (height / min(height, width))
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :] * (width / min(height, width))
    t = np.ones((height, width), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        theta = rng.uniform(0, math.pi)
        waves = rng.uniform(2.0, 12.0)  # periods across the shorter side
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * waves * (math.cos(theta) * xs + math.sin(theta) * ys)
                      + phase)
        t = t * np.tanh(rng.uniform(1.0, 6.0) * wave)
    c0 = rng.uniform(20, 235, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-90, 90, 3), 0, 255).astype(np.float32)
    image = c0 + (c1 - c0) * (0.5 + 0.5 * t)[:, :, None]
    return image + rng.normal(0.0, rng.uniform(2.0, 12.0), (height, width, 1)).astype(np.float32)


def scene_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The background of a ``shapes`` scene, uint8 H x W x 3: one of several textures.

    Half are :func:`textured_background`; the rest are that background turned grey (concrete,
    asphalt), or soft stripes and plaids (:func:`pattern_background`), so that a model learns shapes
    against more than one kind of texture.
    """
    pick = rng.random()
    if pick < 0.5:
        return textured_background(rng, height, width)
    if pick < 0.7:
        grey = textured_background(rng, height, width).astype(np.float32).mean(axis=2)
        return np.clip(np.repeat(grey[:, :, None], 3, axis=2), 0, 255).astype(np.uint8)
    return np.clip(pattern_background(rng, height, width), 0, 255).astype(np.uint8)
