"""``~detections`` as ``vision_msgs/Detection2DArray`` in Noetic's layout, with or without
vision_msgs installed.

vision_msgs is not a build dependency. Where it is importable its class is used; elsewhere the
class is generated at run time (genpy's dynamic generation, as :mod:`ml_bridge.ros.detections`
does for what it subscribes to) from the field lists below: those of vision_msgs 0.0.x, the
release Noetic ships, and of their dependencies. Field names and types are what the md5sum
is computed from (comments are not), so the generated class has Noetic's md5sum and writes
the same bytes: subscribers built against vision_msgs accept it.
"""
import threading
from typing import Any, List, Optional, Tuple, Type

import genpy
import genpy.dynamic

from ml_bridge.core.detection import Boxes

TYPE = "vision_msgs/Detection2DArray"
#: Each type's fields, in the order of its .msg file (Noetic's vision_msgs 0.0.x, ros_comm).
MSG_FIELDS: List[Tuple[str, str]] = [
    (TYPE, "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n"),
    ("vision_msgs/Detection2D",
     "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
     "vision_msgs/BoundingBox2D bbox\nsensor_msgs/Image source_img\n"),
    ("vision_msgs/ObjectHypothesisWithPose",
     "int64 id\nfloat64 score\ngeometry_msgs/PoseWithCovariance pose\n"),
    ("vision_msgs/BoundingBox2D",
     "geometry_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n"),
    ("std_msgs/Header", "uint32 seq\ntime stamp\nstring frame_id\n"),
    ("geometry_msgs/PoseWithCovariance", "geometry_msgs/Pose pose\nfloat64[36] covariance\n"),
    ("geometry_msgs/Pose", "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation\n"),
    ("geometry_msgs/Point", "float64 x\nfloat64 y\nfloat64 z\n"),
    ("geometry_msgs/Quaternion", "float64 x\nfloat64 y\nfloat64 z\nfloat64 w\n"),
    ("geometry_msgs/Pose2D", "float64 x\nfloat64 y\nfloat64 theta\n"),
    ("sensor_msgs/Image",
     "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
     "uint8 is_bigendian\nuint32 step\nuint8[] data\n"),
]

_lock = threading.Lock()
_generated: Optional[Tuple[Type[genpy.Message], Type[genpy.Message], Type[genpy.Message]]] = None


def full_definition() -> str:
    """The concatenated definition (the core type, then each dependency after a line of
    80 ``=`` and ``MSG: <type>``), as ``gendeps --cat`` writes it and publishers send it."""
    core, *deps = MSG_FIELDS
    return core[1] + "".join(f"\n{'=' * 80}\nMSG: {name}\n{text}" for name, text in deps)


def generated_classes() -> Tuple[Type[genpy.Message], Type[genpy.Message], Type[genpy.Message]]:
    """(Detection2DArray, Detection2D, ObjectHypothesisWithPose) generated from
    :data:`MSG_FIELDS`, once per process."""
    global _generated
    with _lock:
        if _generated is None:
            classes = genpy.dynamic.generate_dynamic(TYPE, full_definition())
            _generated = (classes[TYPE], classes["vision_msgs/Detection2D"],
                          classes["vision_msgs/ObjectHypothesisWithPose"])
        return _generated


def message_classes() -> Tuple[Type[genpy.Message], Type[genpy.Message], Type[genpy.Message]]:
    """(Detection2DArray, Detection2D, ObjectHypothesisWithPose): vision_msgs' own classes
    when installed, else :func:`generated_classes`."""
    try:
        from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
    except ImportError:
        return generated_classes()
    return Detection2DArray, Detection2D, ObjectHypothesisWithPose


def detection_array(found: Boxes, header: Any,
                    classes: Optional[Tuple[Type[genpy.Message], ...]] = None) -> Any:
    """One frame's boxes (frame pixels) -> a Detection2DArray.

    The array's and each detection's header are ``header`` (the frame's); per detection
    ``bbox.center.x/y`` and ``bbox.size_x/y`` in frame pixels, one result with ``id`` = the
    class id and ``score``; ``source_img`` stays empty.

    Args:
        found: the boxes, x1 y1 x2 y2.
        header: the frame's std_msgs/Header (None: an empty one).
        classes: the message classes (default :func:`message_classes`).
    """
    array_cls, detection_cls, hypothesis_cls = classes or message_classes()
    msg = array_cls()
    if header is not None:
        msg.header = header
    # A tracking detect's track ids: each detection's own header.seq (0: no confirmed track).
    track_ids = getattr(found, "track_ids", None)
    for i, ((x1, y1, x2, y2), score, class_id) in enumerate(zip(
            found.boxes.tolist(), found.scores.tolist(), found.class_ids.tolist())):
        det = detection_cls()
        det.header = msg.header if track_ids is None else type(msg.header)(
            seq=track_ids[i], stamp=msg.header.stamp, frame_id=msg.header.frame_id)
        det.bbox.center.x, det.bbox.center.y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        det.bbox.size_x, det.bbox.size_y = x2 - x1, y2 - y1
        det.results.append(hypothesis_cls(id=int(class_id), score=float(score)))
        msg.detections.append(det)
    return msg
