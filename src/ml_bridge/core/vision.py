"""Image operations shared by the backends (numpy and OpenCV only)."""
from typing import List, Tuple

import numpy as np

from ml_bridge.core.errors import InputError


def to_gray(image: np.ndarray) -> np.ndarray:
    """H x W uint8 gray from H x W gray or H x W x 3 RGB."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    raise InputError(f"expected a gray (H x W) or RGB (H x W x 3) image, got shape "
                     f"{list(image.shape)}")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB from H x W gray or H x W x 3 RGB."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    raise InputError(f"expected a gray (H x W) or RGB (H x W x 3) image, got shape "
                     f"{list(image.shape)}")


def resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resizes to (height, width) with area averaging (good for shrinking)."""
    import cv2

    height, width = size
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def digits_input(image: np.ndarray) -> List[np.ndarray]:
    """The digits_mlp image preprocessing: gray, 8 x 8, pixel / 255 -> float32 [1, 64]."""
    small = resize(to_gray(image), (8, 8)).astype(np.float32) / 255.0
    return [small.reshape(1, 64)]


def rgb_input(image: np.ndarray, size: Tuple[int, int], channels_first: bool) -> List[np.ndarray]:
    """RGB resized to ``size``, pixel / 255 -> float32 [1, H, W, 3] (or [1, 3, H, W])."""
    x = resize(to_rgb(image), size).astype(np.float32) / 255.0
    if channels_first:
        x = x.transpose(2, 0, 1)
    return [np.ascontiguousarray(x[None])]


def top_class(scores: np.ndarray, probabilities: bool) -> Tuple[List[int], List[float]]:
    """Per row of [N, C] scores: the arg-max class and its probability.

    ``probabilities``: the scores already are probabilities; otherwise they are logits and the
    probability is the softmax at the arg-max, 1 / sum(exp(s - max)), without the full softmax.
    """
    ids = scores.argmax(axis=1)
    top = scores[np.arange(len(ids)), ids].astype(np.float64)
    if not probabilities:
        shifted = scores.astype(np.float64) - top[:, None]
        top = 1.0 / np.exp(shifted).sum(axis=1)
    return ids.tolist(), top.tolist()
