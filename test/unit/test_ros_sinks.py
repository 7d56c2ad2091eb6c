"""The ROS sinks: an overlay goes out in its frame's encoding, with the frame's header."""
from typing import Optional, Tuple

import numpy as np
import pytest
from std_msgs.msg import Header

from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.ros.conversions import image_to_array
from ml_bridge.ros.sinks import SinkOptions, overlay_message

RGB = np.random.default_rng(0).integers(0, 256, (4, 5, 3), np.uint8)


def _result(encoding: str) -> Result:
    header = Header(frame_id="cam", seq=7)
    return Result(Frame(RGB, 1.0, header, encoding), ModelStamp(1), 0.0)


@pytest.mark.parametrize("encoding, expected, channels", [
    ("rgb8", "rgb8", RGB), ("bgr8", "bgr8", RGB[:, :, ::-1]), ("8UC3", "8UC3", RGB[:, :, ::-1]),
    ("rgba8", "rgba8", None), ("bgra8", "bgra8", None)])
def test_colour_overlay_is_published_in_the_frames_encoding(encoding: str, expected: str,
                                                            channels: Optional[np.ndarray]) -> None:
    msg = overlay_message(_result(encoding), RGB, SinkOptions())
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == (expected, 4, 5, "cam")
    raw = np.frombuffer(msg.data, np.uint8).reshape(4, 5, -1)
    if channels is not None:
        np.testing.assert_array_equal(raw, channels)
    np.testing.assert_array_equal(image_to_array(msg), RGB)  # read back: the same picture


@pytest.mark.parametrize("encoding, expected", [("mono8", "mono8"), ("8UC1", "8UC1"), ("mono16", "mono8")])
def test_mono_overlay_keeps_the_frames_encoding_mono16_as_mono8(encoding: str, expected: str) -> None:
    gray: np.ndarray = RGB[:, :, 0].copy()
    msg = overlay_message(_result(encoding), gray, SinkOptions())
    shape: Tuple[int, int] = (msg.height, msg.width)
    assert (msg.encoding, shape) == (expected, (4, 5))
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(4, 5), gray)
