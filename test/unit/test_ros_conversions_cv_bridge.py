"""cv_bridge's own Python tests, their cases run against cv_bridge and against our conversions.

The cases are those of vision_opencv's cv_bridge/test/{enumerants,conversions,python_bindings}.py
(noetic), written anew here. Where cv_bridge converts, ours gives the same message or array;
where cv_bridge raises (whatever it raises), ours raises ConversionError. Deliberate
differences, named at their case: ``image_to_array`` returns mono8 or rgb8 only and reads
``8UC3`` as OpenCV's BGR; ``array_to_image`` defaults to mono8 / rgb8, not cv_bridge's
passthrough; ``data`` as a str (which genpy cannot send) is refused. Not run, having no
counterpart here: compressed images, ``getCvType`` and ``cvtColorForDisplay``.
"""
import sys
from typing import Any, Optional

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from cv_bridge import CvBridge, CvBridgeError
from sensor_msgs.msg import Image

from ml_bridge.ros.conversions import IMAGE_ENCODINGS, ConversionError, array_to_image, image_to_array

BRIDGE = CvBridge()
#: OpenCV's depths, as conversions.py's test_encode_decode_cv2 lists them (CV_8U ... CV_64F).
CV_DTYPES = ["uint8", "int8", "uint16", "int16", "int32", "float32", "float64"]


def fields(msg: Image) -> tuple:
    return (msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step, bytes(msg.data))


def relabelled(msg: Image, encoding: str) -> Image:
    return Image(header=msg.header, height=msg.height, width=msg.width, encoding=encoding,
                 is_bigendian=msg.is_bigendian, step=msg.step, data=msg.data)


def same_image(array: Any, encoding: Optional[str], theirs: Optional[str] = None) -> Optional[Image]:
    """``array_to_image(array, encoding)`` equals cv_bridge's message of ``array`` in ``theirs``
    (default: ``encoding``), or raises ConversionError where cv_bridge raises anything."""
    try:
        expected = BRIDGE.cv2_to_imgmsg(array, theirs or encoding)
    except Exception:  # any exception of cv_bridge's is a refusal
        with pytest.raises(ConversionError):
            array_to_image(array, encoding)
        return None
    got = array_to_image(array, encoding)
    assert fields(got) == fields(expected)
    return got


def assert_same_array(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("value", [
    1,  # upstream's case (TypeError from cv_bridge)
    None, 1.5, "abc", [1, 2, 3], np.uint8(1), np.zeros(5, np.uint8), np.zeros((0, 4), np.uint8),
])
def test_numpy_types(value: Any) -> None:
    """enumerants.py test_numpy_types: what is not an H x W (x C) array is no image."""
    same_image(value, "rgba8")
    with pytest.raises(ConversionError, match="H x W"):
        array_to_image(value, "rgba8")


def test_enumerants() -> None:
    """enumerants.py test_enumerants_cv2: rgba8 read as rgb8, then sent as rgb8 / bgr8, not rgba8."""
    msg = Image(width=640, height=480, encoding="rgba8", step=640 * 4, data=b"1234" * (640 * 480))
    theirs = BRIDGE.imgmsg_to_cv2(msg, "rgb8")
    ours = image_to_array(msg)
    assert_same_array(ours, theirs)
    assert sys.getrefcount(ours) == 2  # nothing else holds the result (ours, getrefcount's argument)
    same_image(ours, "rgba8")
    with pytest.raises(CvBridgeError):  # so the line above compared two refusals
        BRIDGE.cv2_to_imgmsg(theirs, "rgba8")
    for encoding in ("rgb8", "bgr8"):
        assert same_image(ours, encoding) is not None
    # Upstream fills data with a str; cv_bridge encodes it when there are several channels. A str
    # cannot cross the wire (genpy packs uint8[] from bytes only), so ours names the fix.
    msg.data = "1234" * (640 * 480)
    with pytest.raises(ConversionError, match=r"str.*pass bytes"):
        image_to_array(msg)


def test_mono16() -> None:
    """conversions.py test_mono16_cv2: no 8UC3 -> mono16; rgb8 -> mono16 converts."""
    im = np.random.default_rng(0).integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    plain = BRIDGE.cv2_to_imgmsg(im)
    assert plain.encoding == "8UC3"
    with pytest.raises(CvBridgeError):
        BRIDGE.imgmsg_to_cv2(plain, "mono16")
    # Ours reads 8UC3 as the BGR an OpenCV image is (documented); cv_bridge, told it is bgr8, agrees.
    assert_same_array(image_to_array(plain), BRIDGE.imgmsg_to_cv2(relabelled(plain, "bgr8"), "rgb8"))
    rgb = BRIDGE.cv2_to_imgmsg(im, "rgb8")
    assert_same_array(image_to_array(rgb), BRIDGE.imgmsg_to_cv2(rgb, "rgb8"))
    mono16 = BRIDGE.imgmsg_to_cv2(rgb, "mono16")
    # Ours reads mono16 (to mono8) and writes it, as cv_bridge does.
    msg16 = same_image(mono16, "mono16")
    assert msg16 is not None
    assert_same_array(image_to_array(msg16), BRIDGE.imgmsg_to_cv2(msg16, "mono8"))


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", CV_DTYPES)
def test_encode_decode(dtype: str, channels: Optional[int]) -> None:
    """conversions.py test_encode_decode_cv2, on fewer sizes and with each depth really used
    (upstream's loop over the depths builds uint8 images every time)."""
    rng = np.random.default_rng(1)
    for height, width in ((1, 1), (3, 7), (100, 300), (700, 100)):
        shape = (height, width) if channels is None else (height, width, channels)
        original = rng.integers(0, 255, size=shape).astype(dtype)
        # cv_bridge's default labels the array by its OpenCV type; ours asks for mono8 or rgb8
        default = "mono8" if channels in (None, 1) else "rgb8"
        ours = same_image(original, None, default)
        if ours is not None:  # uint8 in 1 or 3 channels: back as it was
            assert_same_array(image_to_array(ours), original.reshape(height, width, -1).squeeze(2)
                              if channels == 1 else original)
        passthrough = BRIDGE.cv2_to_imgmsg(original)
        assert_same_array(BRIDGE.imgmsg_to_cv2(passthrough),
                          original[:, :, 0] if channels == 1 else original)  # upstream's check
        # ours given cv_bridge's label, e.g. "16UC3" or "8UC5" (where cv_bridge's own look-up fails)
        same_image(original, passthrough.encoding)
        if passthrough.encoding not in IMAGE_ENCODINGS:  # the model gets mono8 or rgb8 only
            with pytest.raises(ConversionError, match="not supported"):
                image_to_array(passthrough)
        else:  # 8UC1, or 8UC3 read as BGR
            reference = relabelled(passthrough, "bgr8" if channels == 3 else "mono8")
            assert_same_array(image_to_array(passthrough),
                              BRIDGE.imgmsg_to_cv2(reference, IMAGE_ENCODINGS[reference.encoding]))


def test_endianness() -> None:
    """conversions.py test_endianness: a big-endian array is sent with is_bigendian and read back."""
    img = np.random.default_rng(2).integers(0, 255, size=(30, 40))
    big = img.astype(np.dtype("int32").newbyteorder(">"))
    theirs = BRIDGE.cv2_to_imgmsg(big)
    assert theirs.is_bigendian and (BRIDGE.imgmsg_to_cv2(theirs) == img).all()  # upstream's check
    assert same_image(big, "32SC1") is not None
    assert same_image(big, None, "mono8") is None  # ours defaults to mono8: refused by both
    with pytest.raises(ConversionError, match="'32SC1' is not supported"):
        image_to_array(theirs)
    # The same with an encoding ours reads: mono16, big-endian, reads as its little-endian twin.
    words = (img * 257).astype(">u2")
    msg = same_image(words, "mono16")
    assert msg is not None and msg.is_bigendian
    assert_same_array(image_to_array(msg), BRIDGE.imgmsg_to_cv2(msg, "mono8"))
    assert_same_array(image_to_array(msg), image_to_array(array_to_image(words.astype("<u2"), "mono16")))


def test_mono8_shape() -> None:
    """python_bindings.py: a mono8 image converts back with the shape H x W."""
    mono = (np.random.default_rng(3).random((100, 100)) * 255).astype(np.uint8)
    msg = same_image(mono, "mono8")
    assert msg is not None
    theirs = BRIDGE.imgmsg_to_cv2(msg, desired_encoding="mono8")
    assert theirs.shape == (100, 100)
    assert_same_array(image_to_array(msg), theirs)
