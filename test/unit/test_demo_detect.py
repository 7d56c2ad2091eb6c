"""The detection half of ``make demo-vision``: reading ``~detections`` back into boxes."""
import numpy as np

from ml_bridge.core.detection import Boxes
from ml_bridge.ros.demo_detect import boxes_of
from ml_bridge.ros.detection_array import detection_array


def test_boxes_read_back_from_a_detection_array_are_the_boxes_published() -> None:
    sent = Boxes(np.array([[10, 20, 50, 80], [0.5, 1.5, 3.5, 9.0]], np.float32),
                 np.array([0.9, 0.4], np.float32), np.array([2, 0], np.int64))
    got = boxes_of(detection_array(sent, None))
    np.testing.assert_allclose(got.boxes, sent.boxes, atol=1e-5)
    np.testing.assert_allclose(got.scores, sent.scores)
    assert got.class_ids.tolist() == [2, 0]
    empty = boxes_of(detection_array(Boxes.empty(), None))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
