"""Detections of a type known only at run time -> :class:`~ml_bridge.pipelines.objects.Detections`.

The ``objects`` pipeline takes ``vision_msgs/Detection2DArray`` (Noetic's layout, or vision_msgs
4.x's with ``bbox.center.position``, as ROS 2 bridges publish it) or
``darknet_ros_msgs/BoundingBoxes`` without depending on either package: it subscribes with
``rospy.AnyMsg`` and builds the message class from what the publisher sends in its connection
header (``type``, ``md5sum``, ``message_definition``) with genpy's dynamic generation, as
rosbag does for bags of unknown types. Classes are generated once per md5sum. Where the
packages are installed nothing changes: the wire format is the same.

:func:`decode` is the pure part (definition text + bytes -> Detections), usable without a
master; :class:`DetectionsSubscriber` is the rospy side.
"""
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Type

import genpy
import genpy.dynamic
import rospy
from genmsg import MsgGenerationException
from std_msgs.msg import Header

from ml_bridge.core.errors import InputError, MLBridgeError
from ml_bridge.pipelines.objects import Box, Detections
from ml_bridge.ros.conversions import image_to_array

DETECTION2D_ARRAY = "vision_msgs/Detection2DArray"
BOUNDING_BOXES = "darknet_ros_msgs/BoundingBoxes"
SUPPORTED = (DETECTION2D_ARRAY, BOUNDING_BOXES)
#: The fields read from each type, for the message that refuses another layout.
LAYOUTS = {
    DETECTION2D_ARRAY: "header and, per detection, bbox.center.x/y (vision_msgs 1.x, Noetic) or "
                       "bbox.center.position.x/y (vision_msgs 4.x), bbox.size_x/size_y and, if "
                       "present, source_img",
    BOUNDING_BOXES: "image_header (the camera's stamp and frame_id) and, per box, xmin, ymin, "
                    "xmax, ymax (darknet_ros_msgs)",
}


class DetectionsTypeError(InputError):
    """The detections topic carries a type the objects pipeline does not read."""


class DetectionsLayoutError(InputError):
    """A supported type name whose fields are laid out otherwise than the node reads."""


_classes: Dict[str, Type[genpy.Message]] = {}
_classes_lock = threading.Lock()


def message_class(type_name: str, definition: str, md5sum: str = "") -> Type[genpy.Message]:
    """The message class of ``type_name`` generated from its full definition (as
    ``gendeps --cat`` and the connection header give it), cached per md5sum.

    Raises:
        InputError: the definition cannot be parsed, or it does not match ``md5sum``.
    """
    key = md5sum or f"{type_name}\n{definition}"
    with _classes_lock:
        cls = _classes.get(key)
        if cls is not None:
            return cls
        if not definition.strip():
            raise InputError(f"the publisher of {type_name} sent no message definition")
        try:
            cls = genpy.dynamic.generate_dynamic(type_name, definition)[type_name]
        except (MsgGenerationException, KeyError, ValueError, SyntaxError) as err:
            raise InputError(f"cannot build {type_name} from the publisher's definition: "
                             f"{err}") from err
        if md5sum and cls._md5sum != md5sum:
            raise InputError(f"the definition of {type_name} the publisher sent has md5sum "
                             f"{cls._md5sum}, but it announced {md5sum}")
        _classes[key] = cls
        return cls


def decode(type_name: str, definition: str, data: bytes, md5sum: str = "") -> Detections:
    """A serialized detections message -> neutral Detections.

    Raises:
        DetectionsTypeError: ``type_name`` is not one of :data:`SUPPORTED`.
        InputError: the definition or the bytes cannot be read, or a ``source_img`` cannot
            be converted.
    """
    if type_name not in SUPPORTED:
        raise DetectionsTypeError(f"detections of type '{type_name or 'unknown'}' are not "
                                  f"supported; publish {' or '.join(SUPPORTED)}")
    cls = message_class(type_name, definition, md5sum)
    try:
        msg = cls().deserialize(data)
    except (genpy.DeserializationError, struct.error, ValueError, IndexError) as err:
        raise InputError(f"cannot read a {type_name} message: {err}") from err
    return to_detections(msg, type_name)


def to_detections(msg: Any, type_name: str) -> Detections:
    """A Detection2DArray or BoundingBoxes message (any class of that layout) -> Detections.

    Raises:
        DetectionsTypeError: an unsupported type.
        DetectionsLayoutError: a field the node reads is missing (another version's layout).
        InputError: a filled ``source_img`` cannot be converted.
    """
    try:
        if type_name == DETECTION2D_ARRAY:
            return _from_detection2d_array(msg)
        if type_name == BOUNDING_BOXES:
            return _from_bounding_boxes(msg)
    except (AttributeError, TypeError, ValueError) as err:  # a field of another type
        raise DetectionsLayoutError(f"this {type_name} is not laid out as the node reads it "
                                    f"({err}); the node reads {LAYOUTS[type_name]}") from err
    raise DetectionsTypeError(f"detections of type '{type_name}' are not supported; publish "
                              f"{' or '.join(SUPPORTED)}")


def _from_detection2d_array(msg: Any) -> Detections:
    """bbox.center.x/y (Noetic) or bbox.center.position.x/y (4.x) and bbox.size_x/size_y; the
    array's header stamp. 4.x has no source_img."""
    def get(obj: Any, name: str, where: str) -> Any:
        return _field(obj, name, where, DETECTION2D_ARRAY)

    header = get(msg, "header", "")
    boxes: List[Box] = []
    crops: List[Any] = []
    for i, det in enumerate(get(msg, "detections", "")):
        bbox = get(det, "bbox", f"detections[{i}].")
        center = get(bbox, "center", "bbox.")
        point = center.position if hasattr(center, "position") else center
        where = "bbox.center.position." if point is not center else "bbox.center."
        boxes.append(Box(float(get(point, "x", where)), float(get(point, "y", where)),
                         float(get(bbox, "size_x", "bbox.")), float(get(bbox, "size_y", "bbox."))))
        image = getattr(det, "source_img", None)
        if image is not None and len(image.data):
            try:
                crops.append(image_to_array(image))
            except MLBridgeError as err:
                raise InputError(f"detection {i}: source_img: {err}") from err
        else:
            crops.append(None)
    given = crops if any(c is not None for c in crops) else None
    return Detections(_nanoseconds(header.stamp), boxes, _header(header), given,
                      _track_ids(msg, header))


def _track_ids(msg: Any, header: Any) -> Optional[List[int]]:
    """Each detection's track id (0: none): a numeric ``tracking_id`` (with ``is_tracking``)
    or ``id`` in layouts that have one, else ``header.seq``, where a ``detect`` node with
    ``~track`` puts it. None where they cannot be ids: seqs all 0 (not filled) or all the
    array's own (a detector that copies the array's header into each detection)."""
    named = _named_ids(msg.detections)
    if named is not None:
        return named
    seqs = [int(getattr(getattr(det, "header", None), "seq", 0) or 0) for det in msg.detections]
    if all(seq == 0 or seq == int(header.seq) for seq in seqs):
        return None
    return seqs


def _named_ids(detections: List[Any]) -> Optional[List[int]]:
    """Ids from ``tracking_id`` / ``id`` fields; None where there are none, none is set, or
    one is not a number (an id of another scheme)."""
    ids: List[int] = []
    for det in detections:
        if hasattr(det, "tracking_id"):
            text = det.tracking_id if getattr(det, "is_tracking", True) else ""
        elif isinstance(getattr(det, "id", None), str):
            text = det.id
        else:
            return None
        if text and not text.isdigit():
            return None
        ids.append(int(text) if text else 0)
    return ids if any(ids) else None


def _from_bounding_boxes(msg: Any) -> Detections:
    """darknet_ros: xmin..ymax in pixels; the image's stamp is in ``image_header`` (its
    ``header`` is stamped when the detector publishes)."""
    image_header = _field(msg, "image_header", "", BOUNDING_BOXES)
    boxes: List[Box] = []
    for i, b in enumerate(_field(msg, "bounding_boxes", "", BOUNDING_BOXES)):
        x0, y0, x1, y1 = (_field(b, name, f"bounding_boxes[{i}].", BOUNDING_BOXES)
                          for name in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(Box((x0 + x1) / 2.0, (y0 + y1) / 2.0, float(x1 - x0), float(y1 - y0)))
    return Detections(_nanoseconds(image_header.stamp), boxes, _header(image_header))


def _field(obj: Any, name: str, where: str, type_name: str) -> Any:
    """``obj.name``, or an error naming the layout found and the one read.

    Raises:
        DetectionsLayoutError: ``obj`` has no field ``name``.
    """
    try:
        return getattr(obj, name)
    except AttributeError:
        found = ", ".join(getattr(obj, "__slots__", ())) or "no fields"
        raise DetectionsLayoutError(
            f"this {type_name} has no field {where}{name} ({where.rstrip('.') or 'the message'} "
            f"has: {found}); the node reads {LAYOUTS[type_name]}") from None


def _nanoseconds(stamp: Any) -> int:
    return int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)


def _header(header: Any) -> Header:
    """A std_msgs/Header copy of a dynamically generated one (published with results)."""
    return Header(seq=header.seq, stamp=rospy.Time(header.stamp.secs, header.stamp.nsecs),
                  frame_id=header.frame_id)


class DetectionsSubscriber:
    """Subscribes to one detections topic of either supported type and pushes Detections."""

    def __init__(self, topic: str, push: Callable[[Detections], None],
                 warn: Callable[[str], None], queue_size: int = 32) -> None:
        """Subscribes at once.

        Args:
            topic: the detections topic.
            push: receives each decoded message (the stream's ``push_detections``).
            warn: receives one line per message that cannot be read (throttled by the caller).
            queue_size: messages rospy may queue for this subscriber.
        """
        self.topic = topic
        self.refused = 0   # messages of an unsupported type
        self.invalid = 0   # messages of a supported type that could not be read
        self._push = push
        self._warn = warn
        self._sub = rospy.Subscriber(topic, rospy.AnyMsg, self._on_message,
                                     queue_size=queue_size)

    def _on_message(self, msg: rospy.AnyMsg) -> None:
        header: Dict[str, str] = getattr(msg, "_connection_header", None) or {}
        try:
            detections = decode(header.get("type", ""), header.get("message_definition", ""),
                                msg._buff, header.get("md5sum", ""))
        except DetectionsTypeError as err:
            self.refused += 1
            rospy.logerr_throttle(10.0, f"detections on {self.topic} ignored: {err}")
            return
        except MLBridgeError as err:
            self.invalid += 1
            self._warn(f"detections on {self.topic} skipped: {err}")
            return
        self._push(detections)

    def counters(self) -> Dict[str, int]:
        """``detections_refused`` (wrong type) and ``detections_invalid`` (unreadable)."""
        return {"detections_refused": self.refused, "detections_invalid": self.invalid}

    def unregister(self) -> None:
        """Stops the subscription."""
        self._sub.unregister()

