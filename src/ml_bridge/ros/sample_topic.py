"""``~samples``: every Sample received is stored, refused with a reason, or counted as dropped.

rospy calls a subscriber's callback on the connection's receive thread, after parsing all
the messages of one read (up to ``buff_size`` bytes); with a ``queue_size`` it keeps only
the newest of them and discards the rest without a trace. So the subscriber here has no
queue limit (memory stays bounded by one read), its callback only queues the message, and
one writer thread stores everything queued so far with one fsync for the group: a burst is
written at the speed of the disk's bandwidth, not of its fsync latency. When more than
``max_queued_bytes`` wait, the callback blocks, so TCP slows the publisher down instead of
anything being discarded here.

A sample counts as stored only once the fsync of its group has returned (acknowledged =
durable). One that does not fit the model is refused (``samples_refused``); one that fits
but cannot be written (full or read-only ``~data_root``), or that is still queued when the
node shuts down, is dropped (``samples_dropped``); both get a throttled warning. What rospy
cannot show: messages a *publisher's* own queue (its ``queue_size``) discards before they
are sent; a Sample carries no sequence number to detect that gap.
"""
import collections
import contextlib
import threading
import time
from typing import Any, Callable, ContextManager, Deque, Dict, List, Optional, Tuple

import rospy

from ml_bridge.core.errors import DatasetError, MLBridgeError
from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.sample_store import StoreWriteError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.spec import DEFAULT_MAX_ELEMENTS
from ml_bridge.core.threads import ThreadOwner
from ml_bridge.msg import Sample
from ml_bridge.ros.conversions import tensors_to_arrays

#: Seconds between two warnings of the same kind.
WARN_PERIOD = 10.0


def message_bytes(msg: Sample) -> int:
    """Approximate memory a queued Sample holds (its tensors' payloads)."""
    return 64 + sum(len(t.data) + 8 * len(t.values) for t in list(msg.inputs) + list(msg.targets))


class SampleRecorder(ThreadOwner):
    """Owns the ``~samples`` subscriber, its queue, the writer thread and the counters."""

    def __init__(self, server: ModelServer,
                 default_dataset: str = NODE_PARAMS.default("default_dataset"),
                 max_elements: int = DEFAULT_MAX_ELEMENTS, topic: str = "~samples",
                 max_queued_bytes: int = 256 << 20, buff_size: int = 1 << 20,
                 subscribe: Optional[Callable[..., Any]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Subscribes at once; call :meth:`start` to begin writing (the queue holds until then).

        Args:
            server: Validates and records each sample (:meth:`ModelServer.record`).
            default_dataset: Dataset of samples whose ``dataset`` is empty.
            max_elements: Limit on the elements of one sample's tensors.
            topic: Topic to subscribe.
            max_queued_bytes: Queue size above which the callback waits for the writer.
            buff_size: Bytes rospy reads from a connection at a time.
            subscribe: ``rospy.Subscriber`` or a stand-in (tests).
            clock: Seconds for throttling warnings (wall time: a paused /clock must not
                silence them).
        """
        self.server = server
        self.default_dataset = default_dataset
        self.max_elements = max_elements
        self.max_queued_bytes = max_queued_bytes
        self._cond = threading.Condition()
        self._queue: Deque[Tuple[Sample, int]] = collections.deque()
        self._queued_bytes = 0
        self._closed = False
        self._busy = False  # the writer holds a batch taken off the queue
        self.received = 0
        self.stored = 0
        self.refused = 0
        self.dropped = 0
        self._clock = clock
        self._warned: Dict[str, float] = {}
        ThreadOwner.__init__(self, "ml_bridge-samples")
        make = subscribe if subscribe is not None else rospy.Subscriber
        self.subscriber = make(topic, Sample, self.receive, queue_size=None, buff_size=buff_size)

    def receive(self, msg: Sample) -> None:
        """The subscriber callback: queues ``msg``; waits while the queue is full."""
        size = message_bytes(msg)
        with self._cond:
            while (self._queue and self._queued_bytes + size > self.max_queued_bytes
                   and not self._closed):
                self._cond.wait()
            self.received += 1
            if self._closed:
                self.dropped += 1
                return
            self._queue.append((msg, size))
            self._queued_bytes += size
            self._cond.notify_all()

    def stats(self) -> Dict[str, int]:
        """Counters for diagnostics."""
        with self._cond:
            return {"samples_received": self.received, "samples_stored": self.stored,
                    "samples_refused": self.refused, "samples_dropped": self.dropped,
                    "samples_queued": len(self._queue)}

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Waits until everything received so far has been stored, refused or dropped."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Stops receiving, writes what is queued (for up to ``timeout`` s), drops the rest."""
        super().close(timeout)
        with self._cond:
            if self._queue:
                self._note_dropped(len(self._queue), "the node shut down before they were written")
            self._queue.clear()
            self._queued_bytes = 0
            self._cond.notify_all()

    def _signal_stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        unregister = getattr(self.subscriber, "unregister", None)
        if unregister is not None:
            unregister()

    # -- the writer thread ------------------------------------------------------------------
    def _take(self) -> Optional[List[Tuple[Sample, int]]]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._queue) or self._closed)
            if not self._queue:
                return None
            batch = list(self._queue)
            self._queue.clear()
            self._busy = True
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            stored, refused, dropped = self._write([m for m, _ in batch])
            with self._cond:
                self.stored += stored
                self.refused += refused
                self._queued_bytes -= sum(size for _, size in batch)
                self._busy = False
                if dropped:
                    self._note_dropped(dropped[0], dropped[1])
                self._cond.notify_all()

    def _write(self, msgs: List[Sample]) -> Tuple[int, int, Optional[Tuple[int, str]]]:
        """Records ``msgs`` with one fsync; returns (stored, refused, (dropped, why) or None)."""
        written: Dict[str, int] = {}
        refused = 0
        failed: List[str] = []
        try:
            with self._grouped():
                for msg in msgs:
                    dataset = msg.dataset or self.default_dataset
                    try:
                        count = self._record(dataset, msg)
                    except StoreWriteError as err:
                        failed.append(str(err))
                        continue
                    except MLBridgeError as err:
                        refused += 1
                        self._warn("refused", f"sample for '{dataset}' refused: {err}")
                        continue
                    written[dataset] = count
        except StoreWriteError as err:  # the group's fsync failed: none of it is known durable
            return 0, refused, (len(msgs) - refused, str(err))
        for dataset, count in written.items():
            rospy.logdebug("dataset '%s' now has %d samples", dataset, count)
        stored = len(msgs) - refused - len(failed)
        return stored, refused, (len(failed), failed[-1]) if failed else None

    def _record(self, dataset: str, msg: Sample) -> int:
        model = self.server.model
        inputs = tensors_to_arrays(msg.inputs, len(model.input_specs), self.max_elements, "sample")
        targets = tensors_to_arrays(msg.targets, None, self.max_elements, "sample targets")
        return self.server.record(dataset, inputs, targets)

    def _grouped(self) -> ContextManager[None]:
        try:
            return self.server.datasets.store().deferred_sync()
        except DatasetError:  # no data root: every record call says so, one by one
            return contextlib.nullcontext()

    def _note_dropped(self, count: int, why: str) -> None:
        """Counts ``count`` dropped samples and warns, throttled (call with the lock held)."""
        self.dropped += count
        self._warn("dropped", f"{count} sample(s) dropped ({self.dropped} so far, see diagnostics "
                              f"samples_dropped): {why}")

    def _warn(self, kind: str, text: str) -> None:
        """One warning of each kind per WARN_PERIOD; the counters tell the rest."""
        now = self._clock()
        last = self._warned.get(kind)
        if last is None or now - last >= WARN_PERIOD:
            self._warned[kind] = now
            rospy.logwarn(text)
