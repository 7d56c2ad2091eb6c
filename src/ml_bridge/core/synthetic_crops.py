"""The built-in ``shape_crops`` dataset: crops of single shapes, as a detector would cut them.

Each sample is one circle, square or triangle drawn with :func:`ml_bridge.core.synthetic.draw_shape`
(the look the ``shapes`` scenes have) on a textured background, then cut out with a square box
around it the way the ``objects`` pipeline cuts a detection: the box is the shape's bounding
box widened to a square, with the padding, scale and centre a real detector's box would get
wrong by a little. Colour, size and rotation vary. Crops come from fixed seeds (the held-out
set from another one): nothing is downloaded.
"""
import functools
import math
from typing import Optional, Tuple

import numpy as np

from ml_bridge.core.datasets import Dataset
from ml_bridge.core.synthetic import contrasting_color, draw_shape, textured_background
from ml_bridge.core.vision import ImageFormat, image_format_of, resize

#: Class labels; a label's index is its class id (the shape kind of core.synthetic minus 1).
CROP_LABELS = ["circle", "square", "triangle"]
#: Side of a crop in pixels.
CROP_SIZE = 48
#: Crops per class in the training set and in the held-out set.
TRAIN_PER_CLASS = 600
HELDOUT_PER_CLASS = 100
_SEEDS = {False: 5501, True: 6637}
#: The canvas a shape is drawn on before it is cut out: large enough for every box.
_CANVAS = 96
#: Shape size in canvas pixels (diameter, side or triangle size; see draw_shape).
_SHAPE_SIZE = (16.0, 30.0)
#: Box side over the shape's bounding-box side: from a tight box to a generous one.
_PADDING = (1.05, 1.5)
#: Largest shift of the box centre, as a fraction of its side (a detector's error).
_JITTER = 0.1


def _crop_one(rng: np.random.Generator, label: int) -> Tuple[np.ndarray, np.ndarray]:
    """One crop of a shape of class ``label``: (uint8 S x S x 3 image, uint8 S x S mask)."""
    import cv2

    image = textured_background(rng, _CANVAS, _CANVAS)
    mask = np.zeros((_CANVAS, _CANVAS), np.uint8)
    centre = _CANVAS / 2.0 + rng.uniform(-4.0, 4.0, 2)
    behind = image[int(centre[1]), int(centre[0])].astype(np.float64)
    draw_shape(image, mask, label + 1, (float(centre[0]), float(centre[1])),
               float(rng.uniform(*_SHAPE_SIZE)), contrasting_color(rng, behind).tolist(),
               float(rng.uniform(0.0, 2.0 * math.pi)))
    ys, xs = np.nonzero(mask)
    # The detection box: the bounding box widened to a square about its centre (as the
    # objects pipeline does), then padded and shifted a little.
    side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1.0
    side *= float(rng.uniform(*_PADDING))
    cx = (xs.min() + xs.max() + 1) / 2.0 + float(rng.uniform(-_JITTER, _JITTER)) * side
    cy = (ys.min() + ys.max() + 1) / 2.0 + float(rng.uniform(-_JITTER, _JITTER)) * side
    n = int(round(side))
    # Kept inside the canvas, as the pipeline clamps a box to the frame (never needed with
    # the sizes above; a guard against a square box being cut to a rectangle).
    x0 = min(max(int(round(cx - side / 2.0)), 0), _CANVAS - n)
    y0 = min(max(int(round(cy - side / 2.0)), 0), _CANVAS - n)
    box = (slice(y0, y0 + n), slice(x0, x0 + n))
    crop = resize(image[box], (CROP_SIZE, CROP_SIZE))
    crop_mask = cv2.resize(mask[box], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_NEAREST)
    return crop, crop_mask


@functools.lru_cache(maxsize=2)
def crop_samples(heldout: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops, their shape masks and class ids of the training (or held-out) set.

    Returns:
        crops uint8 [N, S, S, 3], masks uint8 [N, S, S] (the shape's kind 1..3 where it is,
        0 elsewhere) and labels int64 [N] (balanced, shuffled). Cached: read-only arrays.
    """
    per_class = HELDOUT_PER_CLASS if heldout else TRAIN_PER_CLASS
    rng = np.random.default_rng(_SEEDS[heldout])
    labels = rng.permutation(np.repeat(np.arange(len(CROP_LABELS), dtype=np.int64), per_class))
    crops = np.empty((len(labels), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    masks = np.empty((len(labels), CROP_SIZE, CROP_SIZE), np.uint8)
    for i, label in enumerate(labels):
        crops[i], masks[i] = _crop_one(rng, int(label))
    for array in (crops, masks, labels):
        array.flags.writeable = False
    return crops, masks, labels


def crop_images(heldout: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """The crops uint8 [N, S, S, 3] and class ids int64 [N] of the training (or held-out) set."""
    crops, _, labels = crop_samples(heldout)
    return crops, labels


def _dataset(name: str, fmt: Optional[ImageFormat], heldout: bool) -> Dataset:
    fmt = image_format_of(fmt, f"the model trained on '{name}'")
    crops, labels = crop_images(heldout)
    return Dataset(name, [fmt.batch(crops)], [np.array(labels, np.int64)])


def shape_crops(fmt: Optional[ImageFormat]) -> Dataset:
    """The built-in ``shape_crops`` training set: frames in ``fmt``, int64 class ids [N]."""
    return _dataset("shape_crops", fmt, heldout=False)


def shape_crops_heldout(fmt: Optional[ImageFormat]) -> Dataset:
    """The held-out crops of ``shape_crops`` (never trained on), in ``fmt``."""
    return _dataset("shape_crops:heldout", fmt, heldout=True)
