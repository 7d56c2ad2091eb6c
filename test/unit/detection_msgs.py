"""Detection message types as their publishers define them, without vision_msgs or darknet_ros_msgs.

The .msg texts below are written here (field lists of Noetic's vision_msgs and of
darknet_ros_msgs); genmsg computes the full concatenated definition and md5sum from them, the
way a publisher's connection header carries them, and the classes are generated from that
definition at run time. Shared by the unit tests and the objects rostest.
"""
import io
import os
import tempfile
from typing import Any, Dict, Iterable, Optional, Tuple, Type

import genmsg
import genmsg.msg_loader
import genpy
import rospkg

from ml_bridge.ros.detections import message_class

MSG_TEXTS: Dict[str, str] = {
    "vision_msgs/Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
    "vision_msgs/Detection2D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\n"
        "sensor_msgs/Image source_img\nbool is_tracking\nstring tracking_id\n"),
    "vision_msgs/BoundingBox2D": "geometry_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/ObjectHypothesisWithPose": (
        "int64 id\nfloat64 score\ngeometry_msgs/PoseWithCovariance pose\n"),
    # darknet_ros writes the bare "Header" (std_msgs/Header by genmsg's special rule).
    "darknet_ros_msgs/BoundingBoxes": (
        "Header header\nHeader image_header\nBoundingBox[] bounding_boxes\n"),
    "darknet_ros_msgs/BoundingBox": (
        "float64 probability\nint64 xmin\nint64 ymin\nint64 xmax\nint64 ymax\nint16 id\n"
        "string Class\n"),
}
#: vision_msgs 4.x (ROS 2, as bridges publish it): bbox.center is a vision_msgs/Pose2D whose
#: position is a Point2D, and Detection2D has no source_img.
VISION_MSGS_4: Dict[str, str] = dict(MSG_TEXTS, **{
    "vision_msgs/Detection2D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\n"
        "string id\n"),
    "vision_msgs/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/ObjectHypothesisWithPose": (
        "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"),
    "vision_msgs/ObjectHypothesis": "string class_id\nfloat64 score\n",
})
#: darknet_ros_msgs before image_header was added: only the detector's header.
DARKNET_WITHOUT_IMAGE_HEADER: Dict[str, str] = dict(MSG_TEXTS, **{
    "darknet_ros_msgs/BoundingBoxes": "Header header\nBoundingBox[] bounding_boxes\n",
})
_SYSTEM_PACKAGES = ("std_msgs", "sensor_msgs", "geometry_msgs")


def definition(type_name: str, texts: Optional[Dict[str, str]] = None) -> Tuple[str, str]:
    """(full definition text, md5sum) of ``type_name``, as a publisher sends them.

    Args:
        texts: the .msg texts by type (default :data:`MSG_TEXTS`: Noetic's layouts).
    """
    with tempfile.TemporaryDirectory() as root:
        search: Dict[str, list] = {}
        for name, text in (MSG_TEXTS if texts is None else texts).items():
            package, base = name.split("/")
            folder = os.path.join(root, package, "msg")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, base + ".msg"), "w") as f:
                f.write(text)
            search[package] = [folder]
        pack = rospkg.RosPack()
        for package in _SYSTEM_PACKAGES:
            search[package] = [os.path.join(pack.get_path(package), "msg")]
        context = genmsg.MsgContext.create_default()
        spec = genmsg.msg_loader.load_msg_by_type(context, type_name, search)
        genmsg.msg_loader.load_depends(context, spec, search)
        return genmsg.compute_full_text(context, spec), genmsg.compute_md5(context, spec)


def detection_class(type_name: str, texts: Optional[Dict[str, str]] = None) -> Type[genpy.Message]:
    """The class of ``type_name`` generated from its definition (publishable with rospy)."""
    text, md5 = definition(type_name, texts)
    return message_class(type_name, text, md5)


def serialize(msg: Any) -> bytes:
    buff = io.BytesIO()
    msg.serialize(buff)
    return buff.getvalue()


def detection2d_array(cls: Type[genpy.Message], secs: int, nsecs: int, frame_id: str,
                      boxes: Iterable[Tuple[float, float, float, float]]) -> Any:
    """A Detection2DArray stamped (secs, nsecs) with boxes (x_center, y_center, w, h)."""
    msg = cls()
    msg.header.stamp.secs, msg.header.stamp.nsecs = secs, nsecs
    msg.header.frame_id = frame_id
    item = cls._slot_types[1][:-2]  # the dynamic Detection2D class lives beside it
    det_cls = sibling(cls, item)
    for cx, cy, w, h in boxes:
        det = det_cls()
        det.header = msg.header
        center = det.bbox.center
        point = center.position if hasattr(center, "position") else center  # 4.x or Noetic
        point.x, point.y = cx, cy
        det.bbox.size_x, det.bbox.size_y = w, h
        msg.detections.append(det)
    return msg


def bounding_boxes(cls: Type[genpy.Message], secs: int, nsecs: int, frame_id: str,
                   boxes: Iterable[Tuple[int, int, int, int]]) -> Any:
    """A darknet BoundingBoxes whose ``image_header`` is stamped (secs, nsecs) and whose
    ``header`` is not (darknet stamps it at publishing); boxes (xmin, ymin, xmax, ymax)."""
    msg = cls()
    msg.header.stamp.secs = secs + 1  # a later publish time: must not be used for matching
    msg.image_header.stamp.secs, msg.image_header.stamp.nsecs = secs, nsecs
    msg.image_header.frame_id = frame_id
    box_cls = sibling(cls, cls._slot_types[2][:-2])
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        msg.bounding_boxes.append(box_cls(probability=0.9, xmin=x0, ymin=y0, xmax=x1, ymax=y1,
                                          id=i, Class="thing"))
    return msg


def sibling(cls: Type[genpy.Message], type_name: str) -> Type[genpy.Message]:
    """The dynamically generated class of ``type_name`` from the module that made ``cls``."""
    import sys

    package, base = type_name.split("/")
    return getattr(sys.modules[cls.__module__], f"_{package}__{base}")  # type: ignore[no-any-return]
