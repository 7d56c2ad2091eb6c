"""Detections decoded from the publisher's definition (ros/detections.py), without a master and
without vision_msgs or darknet_ros_msgs installed."""
from typing import Any, Dict, List, Optional

import genpy.dynamic
import numpy as np
import pytest
import rospy
from detection_msgs import (
    DARKNET_WITHOUT_IMAGE_HEADER,
    MSG_TEXTS,
    VISION_MSGS_4,
    bounding_boxes,
    definition,
    detection2d_array,
    detection_class,
    serialize,
    sibling,
)
from std_msgs.msg import Header

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.objects import Box, Detections
from ml_bridge.ros import detections as module
from ml_bridge.ros.conversions import array_to_image
from ml_bridge.ros.detections import (
    BOUNDING_BOXES,
    DETECTION2D_ARRAY,
    DetectionsLayoutError,
    DetectionsSubscriber,
    DetectionsTypeError,
    decode,
    message_class,
)

STAMP = (1_700_000_000, 123_456_789)
STAMP_NS = 1_700_000_000_123_456_789


def wire(type_name: str, msg: Any, texts: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """What a subscriber gets: the connection header's fields and the bytes."""
    text, md5 = definition(type_name, texts)
    return {"type_name": type_name, "definition": text, "md5sum": md5, "data": serialize(msg)}


def test_a_detection2d_array_is_decoded_from_its_definition() -> None:
    cls = detection_class(DETECTION2D_ARRAY)
    msg = detection2d_array(cls, *STAMP, "camera_optical", [(10.5, 20.0, 4.0, 6.0),
                                                            (30.0, 40.0, 8.0, 2.0)])
    dets = decode(**wire(DETECTION2D_ARRAY, msg))
    assert dets.stamp_ns == STAMP_NS  # exact: no float on the way
    assert dets.boxes == [Box(10.5, 20.0, 4.0, 6.0), Box(30.0, 40.0, 8.0, 2.0)]
    assert dets.crops_given is None and not dets.self_contained()
    assert isinstance(dets.header, Header) and dets.header.frame_id == "camera_optical"
    assert (dets.header.stamp.secs, dets.header.stamp.nsecs) == STAMP


def test_a_filled_source_img_is_converted_and_an_empty_one_is_not() -> None:
    cls = detection_class(DETECTION2D_ARRAY)
    msg = detection2d_array(cls, *STAMP, "cam", [(5, 5, 4, 4), (9, 9, 2, 2), (1, 1, 2, 2)])
    crop = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    gray = np.full((3, 3), 77, np.uint8)
    for det, image, encoding in ((msg.detections[0], crop[:, :, ::-1], "bgr8"),
                                 (msg.detections[2], gray, "mono8")):
        img = array_to_image(np.ascontiguousarray(image), encoding)
        for slot in img.__slots__:  # into the dynamic Image class, field by field
            setattr(det.source_img, slot, getattr(img, slot))
    dets = decode(**wire(DETECTION2D_ARRAY, msg))
    assert dets.crops_given is not None
    first, second, third = dets.crops_given
    assert first is not None and second is None and third is not None
    np.testing.assert_array_equal(first, crop)  # RGB, as frames are
    np.testing.assert_array_equal(third, gray)


def test_darknet_bounding_boxes_are_matched_by_the_image_header() -> None:
    cls = detection_class(BOUNDING_BOXES)
    msg = bounding_boxes(cls, *STAMP, "cam", [(10, 20, 30, 60), (0, 0, 5, 5)])
    assert msg.header.stamp.secs != STAMP[0]  # darknet's publish time differs
    dets = decode(**wire(BOUNDING_BOXES, msg))
    assert dets.stamp_ns == STAMP_NS
    assert dets.boxes == [Box(20.0, 40.0, 20.0, 40.0), Box(2.5, 2.5, 5.0, 5.0)]
    assert dets.header.frame_id == "cam" and dets.crops_given is None


def test_vision_msgs_4_detections_are_read_from_bbox_center_position() -> None:
    cls = detection_class(DETECTION2D_ARRAY, VISION_MSGS_4)
    msg = detection2d_array(cls, *STAMP, "left_optical", [(10.5, 20.0, 4.0, 6.0)])
    assert hasattr(msg.detections[0].bbox.center, "position")  # the 4.x layout
    dets = decode(**wire(DETECTION2D_ARRAY, msg, VISION_MSGS_4))
    assert dets.stamp_ns == STAMP_NS and dets.frame_id == "left_optical"
    assert dets.boxes == [Box(10.5, 20.0, 4.0, 6.0)] and dets.crops_given is None


def test_a_layout_without_the_fields_read_names_what_it_has_and_what_is_read() -> None:
    old = detection_class(BOUNDING_BOXES, DARKNET_WITHOUT_IMAGE_HEADER)()  # no image_header
    with pytest.raises(DetectionsLayoutError) as err:
        decode(**wire(BOUNDING_BOXES, old, DARKNET_WITHOUT_IMAGE_HEADER))
    text = str(err.value)
    assert "no field image_header" in text and "the message has: header, bounding_boxes" in text
    assert "xmin, ymin, xmax, ymax" in text  # the layout read
    # A Detection2DArray whose bbox.center has neither x/y nor position.x/y.
    texts = dict(VISION_MSGS_4, **{"vision_msgs/Pose2D": "float64 u\nfloat64 v\n"})
    msg = detection2d_array(detection_class(DETECTION2D_ARRAY, texts), *STAMP, "cam", [])
    msg.detections.append(sibling(type(msg), "vision_msgs/Detection2D")())
    with pytest.raises(DetectionsLayoutError, match=r"no field bbox\.center\.x \(bbox\.center "
                       r"has: u, v\).*bbox\.center\.position\.x/y \(vision_msgs 4\.x\)"):
        decode(**wire(DETECTION2D_ARRAY, msg, texts))
    # The fields are there but of another type (corners as strings).
    texts = dict(MSG_TEXTS, **{"darknet_ros_msgs/BoundingBox": (
        "string xmin\nstring ymin\nstring xmax\nstring ymax\n")})
    boxes = detection_class(BOUNDING_BOXES, texts)()
    boxes.bounding_boxes.append(sibling(type(boxes), "darknet_ros_msgs/BoundingBox")())
    with pytest.raises(DetectionsLayoutError, match="not laid out as the node reads it"):
        decode(**wire(BOUNDING_BOXES, boxes, texts))


@pytest.mark.parametrize("type_name", ["vision_msgs/Detection2D", "std_msgs/String", ""])
def test_any_other_type_is_refused_naming_the_supported_ones(type_name: str) -> None:
    with pytest.raises(DetectionsTypeError) as err:
        decode(type_name, "string data\n", b"\x00\x00\x00\x00")
    assert DETECTION2D_ARRAY in str(err.value) and BOUNDING_BOXES in str(err.value)
    assert (type_name or "unknown") in str(err.value)


def test_classes_are_generated_once_per_md5sum(monkeypatch: pytest.MonkeyPatch) -> None:
    text, md5 = definition(BOUNDING_BOXES)
    first = message_class(BOUNDING_BOXES, text, md5)
    calls: List[str] = []
    real = genpy.dynamic.generate_dynamic

    def counting(core_type: str, msg_cat: str) -> Any:
        calls.append(core_type)
        return real(core_type, msg_cat)
    monkeypatch.setattr(genpy.dynamic, "generate_dynamic", counting)
    assert message_class(BOUNDING_BOXES, text, md5) is first
    assert calls == []
    assert first._md5sum == md5 and first._type == BOUNDING_BOXES


def test_unreadable_definitions_and_bytes_are_input_errors() -> None:
    cls = detection_class(BOUNDING_BOXES)
    good = wire(BOUNDING_BOXES, bounding_boxes(cls, *STAMP, "cam", [(1, 2, 3, 4)]))
    with pytest.raises(InputError, match="cannot read"):
        decode(**dict(good, data=good["data"][:-7]))
    with pytest.raises(InputError, match="announced"):
        decode(**dict(good, md5sum="0" * 32))
    with pytest.raises(InputError, match="sent no message definition"):
        decode(**dict(good, definition="", md5sum="1" * 32))


class FakeSubscriber:
    """Stands in for rospy.Subscriber: keeps the callback, needs no master."""

    def __init__(self, topic: str, data_class: type, callback: Any, queue_size: int) -> None:
        self.topic, self.data_class, self.callback = topic, data_class, callback
        self.unregistered = False

    def unregister(self) -> None:
        self.unregistered = True


def delivered(type_name: str, definition_text: str, md5: str, data: bytes) -> rospy.AnyMsg:
    """An AnyMsg as rospy hands it to the callback."""
    msg = rospy.AnyMsg().deserialize(data)
    msg._connection_header = {"type": type_name, "md5sum": md5,
                              "message_definition": definition_text}
    return msg


def test_the_subscriber_pushes_decoded_detections_and_counts_what_it_refuses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module.rospy, "Subscriber", FakeSubscriber)
    errors: List[str] = []
    monkeypatch.setattr(module.rospy, "logerr_throttle", lambda period, text: errors.append(text))
    pushed: List[Detections] = []
    warnings: List[str] = []
    sub = DetectionsSubscriber("/detections", pushed.append, warnings.append)
    fake: FakeSubscriber = sub._sub  # type: ignore[assignment]
    assert fake.data_class is rospy.AnyMsg and fake.topic == "/detections"

    cls = detection_class(DETECTION2D_ARRAY)
    good = wire(DETECTION2D_ARRAY, detection2d_array(cls, *STAMP, "cam", [(5, 5, 2, 2)]))
    fake.callback(delivered(DETECTION2D_ARRAY, good["definition"], good["md5sum"], good["data"]))
    assert [d.stamp_ns for d in pushed] == [STAMP_NS]

    fake.callback(delivered("std_msgs/String", "string data\n", "992ce8a1687cec8c8bd883ec73ca41d1",
                            b"\x00\x00\x00\x00"))
    fake.callback(delivered(DETECTION2D_ARRAY, good["definition"], good["md5sum"], b"\x01"))
    assert len(pushed) == 1
    assert sub.counters() == {"detections_refused": 1, "detections_invalid": 1}
    assert len(errors) == 1 and "std_msgs/String" in errors[0] and DETECTION2D_ARRAY in errors[0]
    assert len(warnings) == 1 and "cannot read" in warnings[0]
    sub.unregister()
    assert fake.unregistered


def test_another_layout_is_counted_invalid_with_a_warning_not_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module.rospy, "Subscriber", FakeSubscriber)
    pushed: List[Detections] = []
    warnings: List[str] = []
    sub = DetectionsSubscriber("/darknet_ros/bounding_boxes", pushed.append, warnings.append)
    fake: FakeSubscriber = sub._sub  # type: ignore[assignment]
    old = wire(BOUNDING_BOXES, detection_class(BOUNDING_BOXES, DARKNET_WITHOUT_IMAGE_HEADER)(),
               DARKNET_WITHOUT_IMAGE_HEADER)
    for _ in range(3):  # an AttributeError here would reach rospy: a traceback per message
        fake.callback(delivered(BOUNDING_BOXES, old["definition"], old["md5sum"], old["data"]))
    assert pushed == []
    assert sub.counters() == {"detections_refused": 0, "detections_invalid": 3}
    assert len(warnings) == 3  # the stream's warn throttles them
    assert "/darknet_ros/bounding_boxes" in warnings[0] and "image_header" in warnings[0]


def test_the_objects_sink_publishes_one_entry_per_detection_with_the_frames_header() -> None:
    from ml_bridge.msg import ObjectPredictions

    from ml_bridge.core.model import ModelStamp
    from ml_bridge.pipelines.base import Frame, Result
    from ml_bridge.pipelines.objects import NO_ROI, ObjectResult
    from ml_bridge.ros.sinks import SinkOptions, sink

    header = Header(seq=3, stamp=rospy.Time(*STAMP), frame_id="cam")
    objects = [ObjectResult(0, (4, 5, 20, 20), 2, 0.75, "triangle"),
               ObjectResult(1, NO_ROI, -1, 0.0, "")]
    result = Result(Frame(np.zeros((1, 1), np.uint8), 0.0, header), ModelStamp(7), 2.5,
                    {"objects": objects})
    msg_type, convert = sink("objects")
    assert msg_type is ObjectPredictions
    msg: ObjectPredictions = convert(result, objects, SinkOptions())
    assert msg.header == header
    assert (msg.model_version, msg.inference_ms) == (7, 2.5)
    first, refused = msg.objects
    assert (first.roi.x_offset, first.roi.y_offset, first.roi.width, first.roi.height) == \
        (4, 5, 20, 20)
    assert (first.detection_index, first.class_id, first.label) == (0, 2, "triangle")
    assert first.score == pytest.approx(0.75)
    assert (refused.detection_index, refused.class_id, refused.roi.width) == (1, -1, 0)
    serialize(msg)  # every field has a type the wire accepts
