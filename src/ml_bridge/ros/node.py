"""The ml_bridge node: ``~predict``, ``~info``, ``~train``, image streams, ``~samples``.

The node takes a ready ModelServer (loaded, context captured, in main) so tests can hand it a
fake one; every callback runs with the captured framework context restored. Image topics go
through streams (:mod:`ml_bridge.ros.streams`): one per camera, each running the pipeline
chosen by ``~pipeline`` on a thread of its own.
"""
import concurrent.futures
import functools
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import diagnostic_updater
import numpy as np
import rospy
from diagnostic_msgs.msg import DiagnosticStatus

from ml_bridge.core.context import in_context
from ml_bridge.core.errors import InputError, MLBridgeError
from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.server import ModelOutput, ModelServer
from ml_bridge.msg import TensorSpec
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.classify import classify
from ml_bridge.ros import bag_dataset
from ml_bridge.ros.conversions import (
    ConversionError,
    arrays_to_tensors,
    check_tensor_count,
    tensors_to_arrays,
)
from ml_bridge.ros.model_call import timeout_message
from ml_bridge.ros.recording.rule_actions import RosRules
from ml_bridge.ros.sample_topic import SampleRecorder
from ml_bridge.ros.service_loop import LoopedService
from ml_bridge.ros.sinks import SinkOptions
from ml_bridge.ros.stats import Stats
from ml_bridge.ros.streams import RosStream, camera_names
from ml_bridge.ros.train_action import TrainActionServer
from ml_bridge.srv import GetInfo, GetInfoRequest, GetInfoResponse, Predict, PredictRequest, PredictResponse

_DEFAULT = NODE_PARAMS.default


@dataclass
class NodeConfig:
    """The node's behaviour parameters (the ``~`` parameters that are not about the model).

    Each is declared, with its default and what it accepts, in
    :data:`ml_bridge.core.node_params.NODE_PARAMS`.
    """

    image: str = _DEFAULT("image")
    pipeline: str = _DEFAULT("pipeline")
    detections: str = _DEFAULT("detections")
    #: The node's private parameters, for the pipeline to read its own (~input_size, ...).
    pipeline_params: Dict[str, Any] = field(default_factory=dict)
    image_buff_size: int = _DEFAULT("image_buff_size")
    queue_size: int = _DEFAULT("queue_size")
    publish_outputs: bool = _DEFAULT("publish_outputs")
    default_dataset: str = _DEFAULT("default_dataset")
    max_elements: int = _DEFAULT("max_elements")
    timeout: float = _DEFAULT("timeout")
    rules: Any = field(default_factory=list)  # ~rules as read; validated by RosRules
    record_dir: str = _DEFAULT("record_dir")
    record_buffer_mb: float = _DEFAULT("record_buffer_mb")
    upload_retry_max: float = _DEFAULT("upload_retry_max")
    upload_outbox_mb: float = _DEFAULT("upload_outbox_mb")
    tensorboard_dir: str = _DEFAULT("tensorboard_dir")

#: The first field of a serialized PredictRequest: how many tensors ``inputs`` holds.
_COUNT = struct.Struct("<I")


class MLBridgeNode:
    """Wires ROS interfaces to a ModelServer."""

    def __init__(self, server: ModelServer, config: Optional[NodeConfig] = None) -> None:
        self.server = server
        self._shut_down = False
        bag_dataset.register_loader()  # ~train goals may name .bag datasets under ~data_root
        self.config = config or NodeConfig()
        self.stats = Stats()
        # ~predict needs no context of its own: the model call restores it on whichever thread
        # runs it (ModelServer.predict); the rest of the handler is numpy and messages.
        # Bytes a request may have before its tensors are even looked at: 16 an element (data
        # and values both full of float64; ~max_elements bounds all tensors together), and
        # room for each input's name, dtype and shape.
        limit = 16 * self.config.max_elements + 4096 * len(server.model.input_specs) + (1 << 20)
        self.predict_srv = LoopedService(
            "~predict", Predict, self.handle_predicts, max_request_bytes=limit,
            hint=f" (~max_elements = {self.config.max_elements} elements a request)",
            screen=self.screen_predict)
        self.info_srv = rospy.Service("~info", GetInfo, in_context(server.context)(self.handle_info))
        # Rules are validated first (an invalid one stops start-up); their recorder subscribes
        # after every typed subscriber of the node: rospy shares a topic's connection within a
        # process and the first subscriber's type wins (the recorder takes either form).
        self.rules = RosRules(self.config.rules, self.config.record_dir,
                              self.config.record_buffer_mb, camera_names(self.config.image.split()),
                              self.config.upload_retry_max, self.config.upload_outbox_mb)
        self.streams: List[RosStream] = self._streams() if self.config.image.strip() else []
        self.samples = SampleRecorder(server, self.config.default_dataset, self.config.max_elements)
        self.samples.start()
        self.updater = diagnostic_updater.Updater()
        self.updater.setHardwareID(f"ml_bridge/{server.model.backend}/{server.model.device}")
        self.updater.add("model", self._diagnose)
        # reset=True: rospy's default timer thread dies on the first jump back of ROS time
        # (a bag played with --loop --clock, a simulator reset) and diagnostics would stop.
        self._diag_timer = rospy.Timer(rospy.Duration(1.0), self._update_diagnostics, reset=True)
        self.train = TrainActionServer(server, tensorboard_dir=self.config.tensorboard_dir)
        self.train.start()  # last: everything its callback uses exists now
        self.rules.start()

    # -- services -----------------------------------------------------------------------------
    def handle_predicts(self, requests: List[PredictRequest]) -> List[PredictResponse]:
        """The ~predict requests that arrived together: one thread serves every connection
        (:class:`LoopedService`). All are deferred (:meth:`ModelServer.defer`) before any is
        answered, so that the executor can join them into micro-batches.
        """
        start = time.perf_counter()  # each request's latency counts from its arrival
        if len(requests) == 1:
            return [self.handle_predict(requests[0], start)]
        calls = [self._defer(req) for req in requests]
        return [self._respond(start, req, call) for req, call in zip(requests, calls)]

    def screen_predict(self, body: bytes) -> Optional[PredictResponse]:
        """Answers a ~predict request from its bytes when it holds the wrong number of tensors
        (the count comes first), before genpy builds them: millions of empty tensors take
        seconds to deserialize, and every caller waits for the one serving thread."""
        start = time.perf_counter()
        if len(body) < 4:
            return None  # genpy's to refuse
        try:
            check_tensor_count(_COUNT.unpack_from(body)[0], len(self.server.model.input_specs))
        except ConversionError as err:
            self.stats.record((time.perf_counter() - start) * 1000.0, False)
            return self._refused(str(err))
        return None

    def handle_predict(self, req: PredictRequest, start: Optional[float] = None) -> PredictResponse:
        """Runs the model on the request's tensors; bad requests get success=false."""
        start = time.perf_counter() if start is None else start
        return self._respond(start, req, self._defer(req))

    def _arrays(self, req: PredictRequest) -> List[np.ndarray]:
        """The request's tensors as arrays, their count and sizes checked first."""
        return tensors_to_arrays(req.inputs, len(self.server.model.input_specs),
                                 self.config.max_elements)

    def _defer(self, req: PredictRequest) -> Callable[[], ModelOutput]:
        """The request's call (:meth:`ModelServer.defer`), or what raises its error."""
        try:
            return self.server.defer(self._arrays(req), self.config.timeout)
        except Exception as err:  # bad input: raised again, and answered, in its turn
            return functools.partial(_raise, err)

    def _respond(self, start: float, req: PredictRequest,
                 call: Callable[[], ModelOutput]) -> PredictResponse:
        """The response to ``req`` from ``call``'s ModelOutput, or its error (success=false)."""
        use_values = bool(req.inputs) and all(not len(t.data) and len(t.values) for t in req.inputs)
        try:
            pred = call()
            classes = classify(pred)
            resp = PredictResponse(True, "", pred.model_version,  # positional: the hot path
                                   arrays_to_tensors(pred.outputs, pred.model.output_names,
                                                     use_values),
                                   classes.class_ids, classes.scores, classes.labels)
        except concurrent.futures.TimeoutError:  # its str() is empty: say what happened
            resp = self._refused(timeout_message(self.config.timeout))
        except MLBridgeError as err:
            resp = self._refused(str(err))
        except Exception as err:  # reported to the caller and logged; the node keeps serving
            rospy.logerr("predict failed: %s: %s", type(err).__name__, err)
            resp = self._refused(f"internal error: {type(err).__name__}: {err}")
        self.stats.record((time.perf_counter() - start) * 1000.0, resp.success)
        return resp

    def _refused(self, message: str) -> PredictResponse:
        return PredictResponse(success=False, message=message, model_version=self.server.version)

    def handle_info(self, _req: GetInfoRequest) -> GetInfoResponse:
        """What is served."""
        info = self.server.info()
        return GetInfoResponse(
            backend=info.backend, framework_version=info.framework_version, device=info.device,
            model=info.model, model_version=info.model_version,
            inputs=[TensorSpec(s.name, s.dtype, list(s.shape)) for s in info.inputs],
            outputs=[TensorSpec(s.name, s.dtype, list(s.shape)) for s in info.outputs],
            labels=info.labels, training=info.training)

    # -- topics -------------------------------------------------------------------------------
    def _streams(self) -> List[RosStream]:
        """One stream per image topic, all served by one pipeline object and one model.

        Raises:
            InputError: unknown pipeline, invalid pipeline parameters, a model that does not
                suit the pipeline, or two cameras whose outputs would collide.
        """
        topics = self.config.image.split()
        names = camera_names(topics)
        detections = self.config.detections.split() or ["detections"]
        pipeline = make_pipeline(self.config.pipeline, self.server.model,
                                 self.config.pipeline_params)
        if "detections" in pipeline.event_kinds and len(detections) not in (1, len(topics)):
            raise InputError(f"~detections names {len(detections)} topics for {len(topics)} "
                             "cameras; give one per camera, in the order of ~image")
        options = SinkOptions(publish_outputs=self.config.publish_outputs)
        streams = []
        for i, (topic, camera) in enumerate(zip(topics, names)):
            dets = detections[i] if len(detections) == len(topics) else (
                f"{camera}/{detections[0]}" if camera and not detections[0].startswith("/")
                else detections[0])
            listeners, listens_to = self.rules.for_camera(camera, pipeline.outputs)
            streams.append(RosStream(topic, camera, pipeline, self.server, self.config.timeout,
                                     options, self.config.image_buff_size, dets, listeners,
                                     listens_to, self.config.queue_size))
        return streams

    # -- diagnostics --------------------------------------------------------------------------
    def _update_diagnostics(self, _event: Any) -> None:
        try:
            now = rospy.Time.now()
            if now < self.updater.last_time:  # ROS time went back: the updater would wait
                self.updater.last_time_period_checked = now  # until it is where it was
                self.updater.force_update()
            else:
                self.updater.update()
        except OSError as err:  # it reads ~diagnostic_period: an exception would end the timer
            rospy.logwarn_throttle(30.0, f"diagnostics not published: the ROS master does not "
                                   f"answer ({err})")

    def _diagnose(self, stat: Any) -> Any:
        info = self.server.info()
        p50, p95 = self.stats.percentiles()
        stat.summary(DiagnosticStatus.OK, "training" if info.training else "serving")
        for key, value in (("backend", info.backend), ("model", info.model),
                           ("model_version", info.model_version), ("device", info.device),
                           ("training", info.training), ("requests", self.stats.requests),
                           ("errors", self.stats.errors), ("latency_p50_ms", f"{p50:.3f}"),
                           ("latency_p95_ms", f"{p95:.3f}")):
            stat.add(key, str(value))
        for stream in self.streams:
            prefix = f"stream {stream.camera or stream.topic}: "  # apart from the node's own keys
            for key, value in stream.stats().items():
                stat.add(f"{prefix}{key}", str(value))
        for key, value in self.samples.stats().items():
            stat.add(key, str(value))
        for key, value in self.rules.counters().items():
            stat.add(f"rules: {key}", str(value))
        for level, message in self.rules.problems():  # recording failures, with their cause
            stat.mergeSummary(level, message)
        return stat

    def shutdown(self) -> None:
        """Closes what the node started, the last started first: the diagnostics timer, the
        sample writer (after what it holds), the streams, the rules (open recordings are
        written out complete), ``~info``, the ``~predict`` loop, then the model's executor.
        Each is closed even when one before it fails; the first failure is raised after. A
        second call returns at once."""
        if self._shut_down:
            return
        self._shut_down = True
        closers: List[Tuple[str, Callable[[], None]]] = [
            ("the diagnostics timer", self._diag_timer.shutdown), ("~samples", self.samples.close),
            *((f"stream {s.topic}", s.close) for s in reversed(self.streams)),
            ("rules", self.rules.close),  # after the streams, whose results it hears
            ("~info", self.info_srv.shutdown), ("~predict", self.predict_srv.close),
            ("the model executor", self.server.close)]
        failure: Optional[Exception] = None
        for what, close in closers:
            try:
                close()
            except Exception as err:  # the others still close; raised below
                rospy.logerr("ml_bridge shutdown: closing %s failed: %s: %s", what,
                             type(err).__name__, err)
                failure = failure or err
        if failure is not None:
            raise failure


def _raise(err: BaseException) -> ModelOutput:
    raise err
