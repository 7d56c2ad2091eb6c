"""Per-pixel class maps and the images made from them (numpy and OpenCV only).

Class ids from scores (arg-max, a probability where ``~min_score`` needs one), a mask brought
to the frame's size by nearest neighbour (output pixel (y, x) is model pixel
(floor(y * h / H), floor(x * w / W))), the classes present with their pixel fractions, a blur
outside a class and a colour blend. Everything works on whole arrays; the costly steps at
camera size are one blur or one blend.
"""
import functools
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.base import Classes

#: Most classes a mask can hold: ``~mask`` is mono8, one class id per pixel.
MAX_CLASSES = 256


def _make_palette() -> np.ndarray:
    """256 distinct RGB colours; consecutive classes 134 degrees apart in hue; class 0 black."""
    ids = np.arange(MAX_CLASSES)
    hue = ids * 67 % 180                        # 8-bit hue is 0..180; 67 coprime to 180
    sat = np.where(ids >= 180, 140, 255)        # hues repeat from 180 on: paler then
    val = np.where(ids % 2 == 1, 255, 210)
    hsv = np.stack([hue, sat, val], axis=-1).astype(np.uint8)[None]
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    rgb[0] = 0
    return rgb


#: Class id -> RGB colour of the colour-blend overlay (class 0, the background, is not drawn).
PALETTE = _make_palette()


def class_scores_nchw(output: np.ndarray, classes: int, channels_first_hint: bool) -> np.ndarray:
    """The model's per-pixel scores as [N, C, h, w] (a view, no copy).

    Args:
        output: [N, C, h, w] or [N, h, w, C].
        classes: number of classes (the model's labels); 0 when unknown.
        channels_first_hint: the layout to assume when ``classes`` cannot tell (the input
            format's layout).

    Raises:
        InputError: the output is not 4-D, or no axis holds ``classes`` scores.
    """
    if output.ndim != 4:
        raise InputError(f"the segment pipeline needs per-pixel class scores [N, C, h, w] or "
                         f"[N, h, w, C], but the model returned {list(output.shape)}; serve a "
                         "segmentation model or use pipeline:=classify")
    first = channels_first_hint
    if classes > 0:
        on_first, on_last = output.shape[1] == classes, output.shape[3] == classes
        if not (on_first or on_last):
            raise InputError(f"the model has {classes} labels but its output "
                             f"{list(output.shape)} has no axis of {classes} class scores "
                             "(axis 1 or 3); give the model one label per output class")
        if on_first != on_last:
            first = on_first
    return output if first else output.transpose(0, 3, 1, 2)


def top_probability(scores: np.ndarray, probabilities: bool) -> np.ndarray:
    """The probability of the arg-max class per pixel of [N, C, h, w] scores, float32 [N, h, w].

    Logits: softmax at the arg-max, 1 / sum(exp(s - max)), without the full softmax.
    """
    top = scores.max(axis=1)
    if probabilities:
        return top.astype(np.float32, copy=False)
    shifted = scores.astype(np.float32) - top[:, None].astype(np.float32)
    np.exp(shifted, out=shifted)
    return 1.0 / shifted.sum(axis=1)


def mask_from_scores(scores: np.ndarray, probabilities: bool, min_score: float = 0.0) -> np.ndarray:
    """uint8 [N, h, w] class ids from [N, C, h, w] scores (logits, or ``probabilities``).

    A pixel whose top probability is under ``min_score`` gets class 0.

    Raises:
        InputError: more classes than a uint8 mask holds.
    """
    if scores.shape[1] > MAX_CLASSES:
        raise InputError(f"the model scores {scores.shape[1]} classes; a mask holds at most "
                         f"{MAX_CLASSES}")
    ids = class_argmax(scores)
    if min_score > 0:
        ids[top_probability(scores, probabilities) < min_score] = 0
    return ids


#: Up to this many classes the arg-max is a loop over classes: numpy's arg-max over the
#: strided class axis is slower for few classes.
_LOOP_ARGMAX_CLASSES = 16


def class_argmax(scores: np.ndarray) -> np.ndarray:
    """uint8 [N, h, w]: the class of the highest score per pixel of [N, C, h, w] scores; of
    equal scores the lower class id (as ``np.argmax``). A pixel with a NaN score gets an
    undefined class."""
    classes = scores.shape[1]
    if classes > _LOOP_ARGMAX_CLASSES:
        return scores.argmax(axis=1).astype(np.uint8)
    best = scores[:, 0].copy()
    ids = np.zeros(best.shape, np.uint8)
    for class_id in range(1, classes):
        candidate = scores[:, class_id]
        ids[candidate > best] = class_id
        np.maximum(best, candidate, out=best)
    return ids


@functools.lru_cache(maxsize=32)
def _source_index(src: int, dst: int) -> np.ndarray:
    """For each of ``dst`` output positions, its nearest-neighbour source: floor(i * src / dst).

    Integer arithmetic: cv2.INTER_NEAREST rounds a float scale and is off by one now and then.
    """
    index = np.arange(dst, dtype=np.intp) * src // dst
    index.flags.writeable = False  # cached and shared
    return index


def upscale_mask(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an h x w (or h x w x C) array to ``size`` (H, W).

    Pixel (y, x) of the result is ``mask[floor(y * h / H), floor(x * w / W)]``.
    """
    height, width = size
    h, w = mask.shape[:2]
    if (h, w) == (height, width):
        return mask
    # Columns first, on the small array; then whole rows are copied (memcpy per row).
    return mask.take(_source_index(w, width), axis=1).take(_source_index(h, height), axis=0)


@functools.lru_cache(maxsize=32)
def _upscale_weights(small: Tuple[int, int], size: Tuple[int, int]) -> np.ndarray:
    """How many pixels of the nearest-neighbour upscale to ``size`` each pixel of a ``small``
    mask becomes, flattened (float64 for bincount)."""
    rows = np.bincount(_source_index(small[0], size[0]), minlength=small[0])
    cols = np.bincount(_source_index(small[1], size[1]), minlength=small[1])
    weights = np.outer(rows, cols).astype(np.float64).ravel()
    weights.flags.writeable = False  # cached and shared
    return weights


def _upscaled_counts(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Pixels per class of ``upscale_mask(mask, size)``, counted on ``mask`` with weights."""
    weights = _upscale_weights((mask.shape[0], mask.shape[1]), (size[0], size[1]))
    return np.rint(np.bincount(mask.ravel(), weights=weights)).astype(np.int64)


def classes_present(mask: np.ndarray, labels: Sequence[str],
                    size: Optional[Tuple[int, int]] = None) -> Classes:
    """The classes of a mask, largest first (ties: lower id first); score = pixel fraction.

    Args:
        mask: class ids, H x W.
        labels: class id -> label ("" beyond the end).
        size: when given, ``mask`` is at the model's resolution and the fractions are those of
            its nearest-neighbour upscale to ``size`` (counted without upscaling).
    """
    counts = np.bincount(mask.ravel()) if size is None else _upscaled_counts(mask, size)
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    fractions = counts[order] / float(counts.sum())
    ids = order.tolist()
    return Classes(ids, fractions.tolist(), [labels[i] if i < len(labels) else "" for i in ids])


def soft_blur(image: np.ndarray, kernel: int) -> np.ndarray:
    """A Gaussian blur of about ``kernel`` pixels, done on a downscaled copy when it is wide.

    A wide kernel on a 1/f copy costs about 1/f^2 of the full-size blur; the result is as
    soft (the same sigma in frame pixels), which is all a blurred background needs.
    """
    if kernel <= 1:
        return image.copy()
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for this kernel size
    factor = max(1, kernel // 5)
    height, width = image.shape[:2]
    if factor == 1 or min(height, width) < 2 * factor:
        return cv2.GaussianBlur(image, (kernel, kernel), sigma)
    small = cv2.resize(image, (max(1, width // factor), max(1, height // factor)),
                       interpolation=cv2.INTER_AREA)
    small_sigma = sigma * small.shape[1] / width
    small_kernel = 2 * int(np.ceil(3 * small_sigma)) + 1
    small = cv2.GaussianBlur(small, (small_kernel, small_kernel), small_sigma)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def blur_outside(frame: np.ndarray, keep_mask: np.ndarray, kernel: int) -> np.ndarray:
    """The frame blurred (``kernel`` pixels) except where ``keep_mask`` (H x W, bool or
    uint8) is set: those pixels are exactly the frame's."""
    out = soft_blur(frame, kernel)
    cv2.copyTo(frame, keep_mask.view(np.uint8), out)
    return out


def _palette_for(frame: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The palette in the frame's layout: [256, 3] RGB, or [256] gray (luma) for mono frames."""
    if frame.ndim == 2 and palette.ndim == 2:
        return cv2.cvtColor(palette[None], cv2.COLOR_RGB2GRAY)[0]
    return palette


def class_colours(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The palette's colour of every pixel of a class-id mask: H x W x 3 for a [256, 3]
    palette, H x W for a [256] one. An OpenCV table look-up for uint8 masks, several times
    faster than numpy's take."""
    if mask.dtype != np.uint8 or palette.dtype != np.uint8 or palette.shape[0] != MAX_CLASSES:
        return palette.take(mask, axis=0)
    mask = np.ascontiguousarray(mask)
    if palette.ndim == 1:
        return cv2.LUT(mask, palette)
    return cv2.applyColorMap(mask, np.ascontiguousarray(palette[:, None, :]))


def _blend(frame: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) * frame + alpha * colours where mask != 0; the frame's pixels elsewhere."""
    out = cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(frame, (mask == 0).view(np.uint8), out)
    return out


def color_blend(frame: np.ndarray, mask: np.ndarray, alpha: float,
                palette: np.ndarray = PALETTE) -> np.ndarray:
    """Class colours blended over the frame with weight ``alpha``; class 0 left as it is.

    Args:
        frame: H x W x 3 RGB or H x W gray, uint8.
        mask: H x W class ids.
        alpha: weight of the colour, in [0, 1].
        palette: [256, 3] RGB colours by class id (mono frames get their luma).
    """
    return _blend(frame, mask, class_colours(mask, _palette_for(frame, palette)), alpha)
