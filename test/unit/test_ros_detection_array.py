"""``~detections``: vision_msgs/Detection2DArray generated without vision_msgs, Noetic's md5sum,
the frame's header, boxes in frame pixels; the objects pipeline's decoder reads it back."""
import io

import numpy as np
import pytest
import rospy
from std_msgs.msg import Header

from ml_bridge.core.detection import Boxes
from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.ros import detections as subscriber_side
from ml_bridge.ros.detection_array import (
    TYPE,
    detection_array,
    full_definition,
    generated_classes,
    message_classes,
)
from ml_bridge.ros.sinks import SinkOptions, sink

#: md5sum of vision_msgs/Detection2DArray as Noetic ships it (vision_msgs 0.0.1 / 0.0.2):
#: computed by genmsg from the .msg files of ros-perception/vision_msgs at tag 0.0.2 (branch
#: noetic-devel, commit 0c916da) with ros_comm's std_msgs, geometry_msgs and sensor_msgs;
#: the same value is in third-party ROS 1 bindings of that type (a C# and a Java port).
NOETIC_MD5 = "402071f61477de256df9f1aa45e6e4c8"


def _found() -> Boxes:
    return Boxes(np.array([[10, 20, 50, 80], [0, 0, 4, 2]], np.float32),
                 np.array([0.9, 0.4], np.float32), np.array([2, 0], np.int64))


def test_generated_class_has_noetics_md5sum() -> None:
    array_cls, _, _ = generated_classes()
    assert array_cls._type == TYPE
    assert array_cls._md5sum == NOETIC_MD5


def test_the_sink_publishes_the_class_in_use() -> None:
    msg_type, _ = sink("detections")
    assert msg_type is message_classes()[0]
    assert msg_type._md5sum == NOETIC_MD5  # vision_msgs is not installed here, or is Noetic's


def test_message_fields_header_and_round_trip_through_the_objects_decoder() -> None:
    header = Header(seq=3, stamp=rospy.Time(12, 345_678_901), frame_id="cam_optical")
    result = Result(Frame(np.zeros((100, 100, 3), np.uint8), 12.3, header), ModelStamp(1), 0.0)
    _, convert = sink("detections")
    msg = convert(result, _found(), SinkOptions())
    assert msg.header.frame_id == "cam_optical" and msg.header.stamp == rospy.Time(12, 345_678_901)
    first = msg.detections[0]
    assert (first.bbox.center.x, first.bbox.center.y, first.bbox.size_x, first.bbox.size_y) == \
        (30.0, 50.0, 40.0, 60.0)
    assert (first.results[0].id, first.results[0].score) == (2, pytest.approx(0.9))
    assert len(first.results) == 1 and len(first.source_img.data) == 0
    assert first.header.frame_id == "cam_optical"
    buff = io.BytesIO()
    msg.serialize(buff)
    read = subscriber_side.decode(TYPE, full_definition(), buff.getvalue(), NOETIC_MD5)
    assert read.stamp_ns == 12_345_678_901 and read.frame_id == "cam_optical"
    assert [(b.x_center, b.y_center, b.width, b.height) for b in read.boxes] == \
        [(30.0, 50.0, 40.0, 60.0), (2.0, 1.0, 4.0, 2.0)]
    assert read.crops_given is None


def test_no_boxes_is_an_empty_array_with_the_header() -> None:
    msg = detection_array(Boxes.empty(), Header(frame_id="f"))
    assert msg.detections == [] and msg.header.frame_id == "f"
