"""core/vision.py against plain references: the shrinking resize and the per-channel normalize
that every image pipeline and every built-in image dataset share."""
import re
from typing import Tuple

import cv2
import numpy as np
import pytest

from ml_bridge.core.params import ParameterError
from ml_bridge.core.vision import ImageFormat, normalize, resize


def smooth(height: int, width: int) -> np.ndarray:
    """An RGB frame of slow gradients and waves (a camera image has little energy at the pixel
    frequency, unlike noise)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [np.sin(x / 17.0) + np.cos(y / 13.0), np.sin((x + y) / 29.0) * 2,
                np.cos(x / 41.0) - np.sin(y / 23.0)]
    return np.dstack([(c * 60 + 128).clip(0, 255) for c in channels]).astype(np.uint8)


@pytest.mark.parametrize("size, target", [((480, 640), (128, 128)), ((720, 1280), (64, 64)),
                                          ((480, 640), (60, 80)), ((481, 641), (100, 90)),
                                          ((96, 96), (64, 64))])
def test_shrinking_averages_areas_like_one_area_resize(size: Tuple[int, int],
                                                       target: Tuple[int, int]) -> None:
    image = smooth(*size)
    out = resize(image, target)
    assert out.shape == target + (3,) and out.dtype == np.uint8
    direct = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA)
    diff = np.abs(out.astype(np.int16) - direct.astype(np.int16))
    # the boxes of the halvings and of the last step differ from one box by under a
    # halved pixel: a grey level or so (most at 20x shrinks)
    assert diff.max() <= 6 and diff.mean() < 1.5


def test_a_shrink_by_whole_blocks_gives_the_exact_block_means() -> None:
    # 8 x 8 blocks of one colour each: every path (halving, then area) must return the colours
    colours = np.random.default_rng(3).integers(0, 256, (15, 20, 3), dtype=np.uint8)
    image = colours.repeat(8, axis=0).repeat(8, axis=1)  # 120 x 160
    np.testing.assert_array_equal(resize(image, (15, 20)), colours)
    gray = colours[:, :, 0].repeat(8, axis=0).repeat(8, axis=1)
    np.testing.assert_array_equal(resize(gray, (15, 20)), colours[:, :, 0])


def test_an_anti_aliased_shrink_averages_fine_stripes_to_grey() -> None:
    # 1-pixel stripes: an area shrink gives their mean everywhere; a point sampler would not
    stripes = np.zeros((480, 640), np.uint8)
    stripes[:, ::2] = 200
    out = resize(stripes, (128, 128))
    assert np.abs(out.astype(np.int16) - 100).max() <= 1


def test_same_size_is_returned_and_enlarging_is_bilinear() -> None:
    image = smooth(30, 40)
    assert resize(image, (30, 40)) is image
    np.testing.assert_array_equal(resize(image, (60, 80)),
                                  cv2.resize(image, (80, 60), interpolation=cv2.INTER_LINEAR))


@pytest.mark.parametrize("mean, std", [((0.0,), (1.0,)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                       ((0.5,), (0.25,))])
def test_normalize_in_both_layouts_is_the_per_channel_formula(mean: Tuple[float, ...],
                                                               std: Tuple[float, ...]) -> None:
    image = np.random.default_rng(4).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    m = np.broadcast_to(np.asarray(mean, np.float64), (3,))
    s = np.broadcast_to(np.asarray(std, np.float64), (3,))
    expected = (image / 255.0 - m) / s
    hwc = normalize(image, mean, std)
    chw = normalize(image, mean, std, channels_first=True)
    assert hwc.dtype == chw.dtype == np.float32
    assert hwc.shape == (9, 11, 3) and chw.shape == (3, 9, 11) and chw.flags.c_contiguous
    np.testing.assert_allclose(hwc, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(chw, hwc.transpose(2, 0, 1))
    # a flipped (bgr) view and one channel are handled the same way
    np.testing.assert_allclose(normalize(image[:, :, ::-1], mean, std), (image[:, :, ::-1] / 255.0 - m) / s,
                               rtol=1e-5, atol=1e-5)
    gray = image[:, :, :1]
    np.testing.assert_allclose(normalize(gray, mean[:1], std[:1], True)[0],
                               (gray[:, :, 0] / 255.0 - m[0]) / s[0], rtol=1e-5, atol=1e-5)


def test_the_format_gives_one_tensor_in_either_layout() -> None:
    frame = smooth(480, 640)
    first = ImageFormat((64, 48), (0.1, 0.2, 0.3), (0.5, 0.4, 0.3), "bgr", True)
    last = ImageFormat((64, 48), (0.1, 0.2, 0.3), (0.5, 0.4, 0.3), "bgr", False)
    np.testing.assert_array_equal(first.frame(frame), last.frame(frame).transpose(2, 0, 1))
    np.testing.assert_array_equal(last.frame_hwc(frame), last.frame(frame))
    np.testing.assert_array_equal(first.frame_hwc(frame), last.frame(frame))


def test_overrides_are_read_field_by_field_through_the_image_parameters() -> None:
    fmt = ImageFormat((4, 4), (0.5,), (0.5,), "gray", True)
    got = fmt.with_overrides({"input_size": "6, 8", "channels_first": "false", "color": " RGB ",
                              "mean": [0.1, 0.2, 0.3], "std": "", "clip_length": 0})
    assert got == ImageFormat((6, 8), (0.1, 0.2, 0.3), (0.5,), "rgb", False, 0)
    assert fmt.with_overrides({}) == fmt


@pytest.mark.parametrize("params, message", [
    ({"input_size": [6.5, 8]}, "~input_size must be a list of 2 integers >= 1 ([height, width]), "
                               "got [6.5, 8]"),  # never truncated to 6
    ({"input_size": [6]}, "~input_size must be a list of 2 integers >= 1"),
    ({"channels_first": "maybe"}, "~channels_first must be true or false, got 'maybe'"),
    ({"color": "cmyk"}, "~color must be rgb, bgr or gray, got 'cmyk'"),
    ({"mean": "a b"}, "~mean must be a list of numbers (one value, or one per channel), got 'a b'"),
])
def test_bad_overrides_are_refused_in_the_one_format(params: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=re.escape("parameter " + message)):
        ImageFormat((4, 4)).with_overrides(params)
