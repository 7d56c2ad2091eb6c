"""A stream: one camera's frames (and detections) through a pipeline, on a thread of its own.

Callers (rospy callbacks, or any Python code) only hand events over with :meth:`Stream.push`
and :meth:`Stream.push_detections`; the stream's thread takes them in arrival order, lets the
pipeline decide when a request is due, runs the model (blocking this stream only: streams of
other cameras keep going, and the model thread micro-batches their concurrent requests) and
hands each result to ``publish``. At most one request per stream is in flight.

- Latest frame wins (``keeps_every_frame`` false): a frame that arrives while the previous
  one is still being processed replaces any frame waiting (counted as ``frames_replaced``).
- Every frame (clip windows, detection matching): frames queue up to ``queue_limit``; past
  it the oldest is dropped and counted as ``frames_dropped``, and the pipeline's state is
  restarted so a window never mixes frames across the gap.
- Nothing is computed while ``wanted()`` is empty (nobody subscribes, no rule listens).
"""
import collections
import logging
import threading
from dataclasses import dataclass, fields
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Tuple

from ml_bridge.core.errors import MLBridgeError
from ml_bridge.core.model import ModelStamp
from ml_bridge.core.server import ModelOutput
from ml_bridge.core.threads import ThreadOwner
from ml_bridge.pipelines.base import Frame, Pipeline, PredictFn, Request, Result

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """Counters of one stream, for diagnostics."""

    frames: int = 0            # frames handed to the stream
    frames_replaced: int = 0   # latest-wins: frames superseded before they were processed
    frames_dropped: int = 0    # every-frame pipelines: frames lost because the queue was full
    detections: int = 0        # detection messages handed to the stream
    detections_dropped: int = 0
    requests: int = 0          # model calls made
    skipped: int = 0           # due requests not run because a newer one was due
    results: int = 0           # results published
    errors: int = 0            # frames, detections or calls refused with an error

    def as_dict(self) -> Dict[str, int]:
        """The counters by name."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


class Stream(ThreadOwner):
    """Feeds one camera's events to a pipeline on a thread of its own."""

    def __init__(self, name: str, pipeline: Pipeline[Any], predict: PredictFn,
                 publish: Callable[[Result], None],
                 wanted: Optional[Callable[[], FrozenSet[str]]] = None,
                 warn: Optional[Callable[[str], None]] = None, queue_limit: int = 64,
                 served: Optional[Callable[[], ModelStamp]] = None,
                 convert: Optional[Callable[[Any], Frame]] = None) -> None:
        """Starts the stream's thread.

        Args:
            name: the camera's name, for logs and diagnostics.
            pipeline: what to do with the events.
            predict: runs the model (e.g. ``ModelServer.predict`` with a timeout); may raise
                MLBridgeError, which is counted and reported through ``warn``.
            publish: receives every result, on the stream's thread.
            wanted: the outputs someone wants now; None: all of the pipeline's outputs.
            warn: receives one line per refused event (the ROS layer throttles it).
            queue_limit: every-frame pipelines: most events waiting before the oldest drops.
            served: the model served now, named by a result made without a model call (a
                request without tensors: objects, a frame without detections); None: version 0.
            convert: turns what :meth:`push` was given (e.g. a ROS Image) into a Frame, on the
                stream's thread and only for frames that are processed: a frame that latest-wins
                replaces is never converted. May raise MLBridgeError (counted, warned). None:
                push is given Frames.
        """
        self.name = name
        self.pipeline = pipeline
        self.stats = StreamStats()
        self._predict = predict
        self._publish = publish
        everything = frozenset(pipeline.outputs)
        self._wanted = wanted or (lambda: everything)
        self._warn = warn or (lambda text: log.warning("%s", text))
        self._served = served or (lambda: ModelStamp(0))
        self._convert = convert
        self._limit = max(1, queue_limit)
        self._events: Deque[Tuple[str, Any]] = collections.deque()
        self._latest: Any = None  # the latest frame, not yet converted
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self._state = pipeline.new_state()
        ThreadOwner.__init__(self, f"ml_bridge-stream-{name}")
        self.start()  # last: the thread reads everything above

    # -- producers (any thread) -----------------------------------------------------------------
    def push(self, frame: Any) -> None:
        """Hands a frame to the stream; returns at once."""
        with self._cond:
            self.stats.frames += 1
            if self.pipeline.keeps_every_frame:
                self._append(("image", frame))
            else:
                if self._latest is not None:
                    self.stats.frames_replaced += 1
                self._latest = frame
            self._cond.notify()

    def push_detections(self, detections: Any) -> None:
        """Hands a detections message to the stream; returns at once."""
        with self._cond:
            self.stats.detections += 1
            self._append(("detections", detections))
            self._cond.notify()

    def _append(self, event: Tuple[str, Any]) -> None:
        self._events.append(event)
        if len(self._events) > self._limit:
            kind, _ = self._events.popleft()
            if kind == "image":
                self.stats.frames_dropped += 1
            else:
                self.stats.detections_dropped += 1
            self._restart = True

    def counters(self) -> Dict[str, int]:
        """The stream's counters and the pipeline's own for this stream, by name."""
        counters = self.stats.as_dict()
        counters.update(self.pipeline.counters(self._state))
        return counters

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Waits until every event handed over so far is processed (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or (
                not self._events and self._latest is None and not self._busy), timeout)

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Stops the thread after the event in progress (waiting at most ``timeout`` s)."""
        super().close(timeout)

    def _signal_stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the stream's thread --------------------------------------------------------------------
    _restart = False

    def _take(self) -> Optional[List[Tuple[str, Any]]]:
        with self._cond:
            self._busy = False
            self._cond.notify_all()  # wait_idle
            while not self._events and self._latest is None:
                if self._closed:
                    return None
                self._cond.wait()
            events = list(self._events)
            self._events.clear()
            if self._latest is not None:
                events.append(("image", self._latest))
                self._latest = None
            restart, self._restart = self._restart, False
            self._busy = True
        if restart:
            self._state = self.pipeline.restart(self._state)
        return events

    def _run(self) -> None:
        while True:
            events = self._take()
            if events is None:
                return
            try:
                self._handle(events)
            except Exception as err:  # a bug must not kill the stream: report and go on
                self.stats.errors += 1
                log.exception("stream %s: %s", self.name, err)
                self._warn(f"stream {self.name}: internal error {type(err).__name__}: {err}")

    def _handle(self, events: List[Tuple[str, Any]]) -> None:
        wanted = self._wanted()
        if not wanted:
            self._state = self.pipeline.restart(self._state)  # nobody listens: nothing computed
            return
        pending: Optional[Request] = None
        for kind, event in events:
            try:
                if kind == "image":
                    frame = event if self._convert is None else self._convert(event)
                    ready = self.pipeline.accept(frame, self._state)
                else:
                    ready = self.pipeline.accept_detections(event, self._state)
                # Built when due, before later events change the state (a clip window must
                # end on the frame that made it due).
                request = self.pipeline.request(self._state) if ready else None
            except MLBridgeError as err:
                self.stats.errors += 1
                self._warn(f"{kind} skipped on {self.name}: {err}")
                continue
            if request is None:
                continue
            if self.pipeline.every_request:
                self._answer(request, wanted)
            else:
                self.stats.skipped += int(pending is not None)
                pending = request
        if pending is not None:
            self._answer(pending, wanted)

    def _answer(self, request: Request, wanted: FrozenSet[str]) -> None:
        try:
            if request.inputs:
                self.stats.requests += 1
                prediction = self._predict(request.inputs)
            else:  # nothing for the model (objects: no boxes): a result without a call
                prediction = ModelOutput([], self._served(), 0.0)
            result = self.pipeline.postprocess(request, prediction, wanted)
        except MLBridgeError as err:
            self.stats.errors += 1
            self._warn(f"frame skipped on {self.name}: {err}")
            return
        self._publish(result)
        self.stats.results += 1
