"""ROS streams: one per camera. A callback only converts the message and hands it over.

:class:`RosStream` subscribes to one image topic (and, for ``objects``, its detections),
turns each message into a :class:`~ml_bridge.pipelines.base.Frame` and pushes it into a
:class:`~ml_bridge.pipelines.stream.Stream`, which runs the pipeline on a thread of its own
and publishes every result through the sinks of :mod:`ml_bridge.ros.sinks`, header copied.
"""
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Optional, Sequence

import rospy
from sensor_msgs.msg import Image

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.core.server import ModelOutput, ModelServer
from ml_bridge.pipelines.base import Frame, Pipeline, Result
from ml_bridge.pipelines.stream import Stream
from ml_bridge.ros import sinks
from ml_bridge.ros.conversions import image_to_array
from ml_bridge.ros.model_call import submit_within

if TYPE_CHECKING:
    from ml_bridge.ros.detections import DetectionsSubscriber

#: Called with (stream, result) after a result is published: rules and recorders listen here.
Listener = Callable[["RosStream", Result], None]


def camera_names(topics: Sequence[str]) -> List[str]:
    """The namespace of each camera's outputs: "" for one topic, else its parent namespace.

    ``/left/image_raw`` -> ``left``; ``/robot/left/image_raw`` -> ``robot/left``; a topic in
    the root namespace (``/image``) is named after itself.

    Raises:
        InputError: two topics give the same name (e.g. the same parent namespace).
    """
    if len(topics) <= 1:
        return [""] * len(topics)
    names: List[str] = []
    for topic in topics:
        path = topic.strip("/")
        parent = path.rsplit("/", 1)[0] if "/" in path else path
        if parent in names:
            other = topics[names.index(parent)]
            raise InputError(f"image topics '{other}' and '{topic}' share the namespace "
                             f"'{parent}', so their outputs would collide under ~{parent}/; "
                             "give each camera its own namespace")
        names.append(parent)
    return names


class RosStream:
    """One camera: its subscriber(s), its stream thread and its publishers."""

    def __init__(self, topic: str, camera: str, pipeline: Pipeline[Any], server: ModelServer,
                 timeout: float, options: sinks.SinkOptions, buff_size: int,
                 detections_topic: str = "", listeners: Sequence[Listener] = (),
                 listens_to: FrozenSet[str] = frozenset(), queue_size: int = 1) -> None:
        """Publishes the pipeline's outputs under ``~<camera>/`` (``~`` when camera is "").

        Args:
            topic: the image topic to subscribe to.
            camera: the name of the camera ("" for a single camera).
            pipeline: what to do with frames (shared by all streams; state is per stream).
            server: runs the model.
            timeout: seconds a model call may wait.
            options: what the sinks need (publish_outputs).
            buff_size: rospy's read size for the image connection.
            detections_topic: the detections topic (pipelines that take detections).
            listeners: called after each result is published (rules).
            listens_to: outputs the listeners need even when nobody subscribes.
            queue_size: the image subscriber's queue (``~queue_size``); the pipeline may need
                more (a clip window, the frames detections are matched against).
        """
        self.topic = topic
        self.camera = camera
        self.pipeline = pipeline
        self.options = options
        self.listeners = list(listeners)
        self.listens_to = listens_to
        prefix = f"~{camera}/" if camera else "~"
        self.publishers: Dict[str, rospy.Publisher] = {}
        for name in pipeline.outputs:
            msg_type, _ = sinks.sink(name)
            self.publishers[name] = rospy.Publisher(prefix + name, msg_type, queue_size=10)
        self.warnings = 0
        #: Messages published per output: an output nobody subscribes to stays at 0.
        self.published: Dict[str, int] = {name: 0 for name in pipeline.outputs}
        self.stream = Stream(camera or topic, pipeline,
                             lambda inputs: self._predict(server, inputs, timeout),
                             self._publish, self.wanted, self._warn,
                             queue_limit=max(64, pipeline.queue_size() * 2),
                             served=lambda: ModelStamp.of(server.model, server.version),
                             convert=self._frame)
        self.image_sub = rospy.Subscriber(topic, Image, self._on_image,
                                          queue_size=max(queue_size, pipeline.queue_size()),
                                          buff_size=buff_size,
                                          tcp_nodelay=True)
        self.detections_sub: Optional[DetectionsSubscriber] = None
        if "detections" in pipeline.event_kinds:
            from ml_bridge.ros import detections  # imported only for pipelines that take them

            self.detections_sub = detections.DetectionsSubscriber(
                detections_topic, self.stream.push_detections, self._warn)

    @staticmethod
    def _predict(server: ModelServer, inputs: List[Any], timeout: float) -> ModelOutput:
        # Submitted: frames of several cameras that arrive together share one call.
        return submit_within(server, inputs, timeout)  # a timeout skips the frame

    def _on_image(self, msg: Image) -> None:
        self.stream.push(msg)  # converted on the stream's thread, only if it is processed

    @staticmethod
    def _frame(msg: Image) -> Frame:
        """The Frame of an Image message (ConversionError for a bad encoding or size)."""
        return Frame(image_to_array(msg), msg.header.stamp.to_sec(), msg.header, msg.encoding)

    def wanted(self) -> FrozenSet[str]:
        """The outputs someone subscribes to now, plus those the listeners need."""
        live = {name for name, pub in self.publishers.items() if pub.get_num_connections() > 0}
        return frozenset(live) | self.listens_to

    def _publish(self, result: Result) -> None:
        for name, value in result.outputs.items():
            pub = self.publishers.get(name)
            if pub is None:
                continue
            _, convert = sinks.sink(name)
            pub.publish(convert(result, value, self.options))
            self.published[name] += 1
        for listener in self.listeners:
            listener(self, result)

    def _warn(self, text: str) -> None:
        self.warnings += 1
        rospy.logwarn_throttle(10.0, text)

    def stats(self) -> Dict[str, int]:
        """The stream's counters, for diagnostics."""
        counters = self.stream.counters()
        counters.update({f"published_{name}": n for name, n in self.published.items()})
        if self.detections_sub is not None:
            counters.update(self.detections_sub.counters())
        return counters

    def close(self) -> None:
        """Unsubscribes and stops the stream's thread."""
        self.image_sub.unregister()
        if self.detections_sub is not None:
            self.detections_sub.unregister()
        self.stream.close()
