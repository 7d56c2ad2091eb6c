"""Pipeline results -> ROS messages, one converter per output name; every message carries the
header of the frame that produced it.

A pipeline's output is published on the topic of the same name under its stream's namespace
(``~mask``, ``~left/overlay``, ...). A new kind of output registers its message type and
converter here with :func:`register`; the node itself does not change.
"""
from dataclasses import dataclass
from typing import Any, Callable, List, Tuple

import genpy
import numpy as np
import rospy
from sensor_msgs.msg import Image, RegionOfInterest

from ml_bridge.core.detection import Boxes
from ml_bridge.core.registry import Registry
from ml_bridge.msg import Counts, ObjectPrediction, ObjectPredictions, Prediction, Track, Tracks
from ml_bridge.pipelines.base import Classes, Result
from ml_bridge.ros.conversions import ConversionError, array_to_image, arrays_to_tensors
from ml_bridge.ros.detection_array import detection_array, message_classes


@dataclass(frozen=True)
class SinkOptions:
    """What the converters need to know beyond the result."""

    publish_outputs: bool = False   # fill Prediction.outputs with the raw model outputs


#: Turns (result, the output's value, options) into a message.
Converter = Callable[[Result, Any, SinkOptions], Any]
#: Output name -> (message type, converter).
SINKS: "Registry[Tuple[type, Converter]]" = Registry("sink", KeyError)


def register(name: str, msg_type: type, converter: Converter) -> None:
    """Makes output ``name`` publishable as ``msg_type`` built by ``converter``.

    Raises:
        ValueError: a sink of that name is registered already (the message says where).
    """
    SINKS.register(name, (msg_type, converter))


def sink(name: str) -> Tuple[type, Converter]:
    """The message type and converter of output ``name``.

    Raises:
        KeyError: no sink is registered for it (a pipeline bug, not a user error).
    """
    return SINKS.get(name)


def _stamp(seconds: float) -> rospy.Time:
    return rospy.Time.from_sec(seconds) if seconds else rospy.Time()


def _window_start(result: Result) -> genpy.Time:
    """The stamp of a clip window's first frame, exactly as it came (zero if not a clip)."""
    stamp = getattr(result.first_header, "stamp", None)
    return stamp if isinstance(stamp, genpy.Time) else _stamp(result.window_start or 0.0)


def prediction_message(result: Result, classes: Classes, options: SinkOptions) -> Prediction:
    """``~predictions``: classes, scores, labels of the model that ran, the frame's header."""
    msg = Prediction(header=result.frame.header, model_version=result.model_version,
                     class_ids=classes.class_ids, scores=classes.scores, labels=classes.labels,
                     inference_ms=result.inference_ms,
                     window_start=_window_start(result))
    if options.publish_outputs:
        msg.outputs = arrays_to_tensors(result.raw, result.model.output_names, False)
    return msg


#: Frame encodings an overlay is published in as they are; any other goes out as mono8/rgb8.
OVERLAY_ENCODINGS = ("mono8", "rgb8", "bgr8", "rgba8", "bgra8", "8UC1", "8UC3")


def encode_like_frame(array: np.ndarray, encoding: str) -> np.ndarray:
    """An RGB (H x W x 3) or mono (H x W) uint8 array in the channel order of ``encoding``."""
    if array.ndim == 2:
        if encoding in ("mono8", "8UC1"):
            return array
        array = np.repeat(array[:, :, None], 3, axis=2)
    if encoding in ("mono8", "8UC1"):
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY)
    if encoding in ("bgr8", "8UC3"):
        return array[:, :, ::-1]
    if encoding in ("rgba8", "bgra8"):
        colour = array if encoding == "rgba8" else array[:, :, ::-1]
        alpha = np.full(array.shape[:2] + (1,), 255, np.uint8)
        return np.concatenate([colour, alpha], axis=2)
    return array


def image_message(array: np.ndarray, encoding: str, header: Any) -> Image:
    """An Image of ``array`` (already in ``encoding``'s channel order) with ``header``."""
    msg = array_to_image(np.ascontiguousarray(array), encoding)
    if header is not None:
        msg.header = header
    return msg


def mask_message(result: Result, mask: np.ndarray, _options: SinkOptions) -> Image:
    """``~mask``: mono8, class id per pixel, the frame's size."""
    return image_message(mask, "mono8", result.frame.header)


def overlay_message(result: Result, overlay: np.ndarray, _options: SinkOptions) -> Image:
    """``~overlay``: the frame's encoding and size.

    An 8-bit frame's overlay is published in the frame's own encoding (``8UC3`` in OpenCV's BGR
    order, as it was read); a ``mono16`` frame's as ``mono8``, the 8 bits it was scaled to.
    """
    encoding = result.frame.encoding
    if encoding not in OVERLAY_ENCODINGS:
        encoding = "mono8" if overlay.ndim == 2 else "rgb8"
    try:
        return image_message(encode_like_frame(overlay, encoding), encoding, result.frame.header)
    except ConversionError:
        return image_message(overlay, "mono8" if overlay.ndim == 2 else "rgb8",
                             result.frame.header)


def objects_message(result: Result, objects: List[Any], _options: SinkOptions) -> ObjectPredictions:
    """``~objects``: one entry per detection in input order (a pipelines.objects.ObjectResult
    each), the frame's header, the model that ran; an empty list for a frame without boxes."""
    entries = [ObjectPrediction(RegionOfInterest(x_offset=o.roi[0], y_offset=o.roi[1],
                                                 width=o.roi[2], height=o.roi[3]),
                                o.detection_index, o.class_id, o.score, o.label)
               for o in objects]
    msg = ObjectPredictions(model_version=result.model_version, objects=entries,
                            inference_ms=result.inference_ms)
    if result.frame.header is not None:
        msg.header = result.frame.header
    return msg


def _time_ns(ns: int) -> rospy.Time:
    return rospy.Time(ns // 1_000_000_000, ns % 1_000_000_000)


def _roi(box: Tuple[float, float, float, float]) -> RegionOfInterest:
    """x1 y1 x2 y2 (frame pixels, inside the frame) -> whole-pixel offset and size."""
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=max(0, int(round(box[2])) - x0),
                            height=max(0, int(round(box[3])) - y0))


def tracks_message(result: Result, tracks: Any, _options: SinkOptions) -> Tracks:
    """``~tracks``: a pipelines.track_stage.TrackList -> ml_bridge/Tracks, the frame's header."""
    entries = [Track(id=t.id, state=t.state, class_id=t.class_id, label=label, score=t.score,
                     roi=_roi(t.box), first_seen=_time_ns(t.first_seen_ns),
                     last_seen=_time_ns(t.last_seen_ns), duration=t.duration)
               for t, label in zip(tracks.tracks, tracks.labels)]
    msg = Tracks(model_version=result.model_version, tracks=entries)
    if result.frame.header is not None:
        msg.header = result.frame.header
    return msg


def counts_message(result: Result, counts: Any, _options: SinkOptions) -> Counts:
    """``~counts``: a pipelines.counting.Counts -> ml_bridge/Counts, the frame's header."""
    msg = Counts(labels=counts.labels, in_frame=counts.in_frame, total=counts.total,
                 lines=counts.lines, forward=counts.forward, backward=counts.backward)
    if result.frame.header is not None:
        msg.header = result.frame.header
    return msg


register("predictions", Prediction, prediction_message)
register("mask", Image, mask_message)
register("overlay", Image, overlay_message)
register("objects", ObjectPredictions, objects_message)
register("tracks", Tracks, tracks_message)
register("counts", Counts, counts_message)


def detections_message(result: Result, found: Boxes, _options: SinkOptions) -> Any:
    """``~detections``: vision_msgs/Detection2DArray (Noetic's layout) of the frame's boxes in
    frame pixels, the frame's header (:func:`ml_bridge.ros.detection_array.detection_array`)."""
    return detection_array(found, result.frame.header)


register("detections", message_classes()[0], detections_message)
