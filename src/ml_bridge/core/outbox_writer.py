"""The outbox's writer thread: entries are put in on a thread of its own, so the thread an
event comes from never waits on the disk; no rospy.

A disk that fails keeps the entries in memory (at most :data:`MAX_WAITING`, the oldest go
first) and is tried again with backoff. Whoever announces an entry does it from the ``done``
callback, called once the entry is on the disk, so nothing announced can be lost by a crash.
"""
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

from ml_bridge.core.threads import ThreadOwner
from ml_bridge.core.upload_http import backoff

if TYPE_CHECKING:  # outbox.py re-exports this module's class
    from ml_bridge.core.outbox import Outbox

#: The most events waiting for the disk (a disk that keeps failing); the oldest go first.
MAX_WAITING = 10_000
#: The longest wait, in seconds, before writing again to a disk that failed.
RETRY_MAX = 30.0
log = logging.getLogger(__name__)
Done = Optional[Callable[[bool], None]]


class OutboxWriter(ThreadOwner):
    """Puts submitted entries into the outbox, in order, on its own thread."""

    def __init__(self, outbox: "Outbox", written: Callable[[str], None]) -> None:
        """``written`` is called with each new entry's name, once it is on the disk."""
        super().__init__("ml_bridge-outbox")
        self.outbox = outbox
        self.lost = 0  # events that never reached the disk
        self._written = written
        self._cond = threading.Condition()
        self._queue: Deque[Tuple[str, Dict[str, Any], Done]] = deque()
        self._busy = False
        self._stop = False

    def submit(self, key: str, entry: Dict[str, Any],
               done: Done = None) -> None:
        """Queues ``entry`` (``key``: its file-name-safe id); returns at once.

        ``done`` is called on the writer thread with True once the entry is on the disk, or
        with False once it never will be (dropped or lost): whoever announces the entry does
        it there, so nothing is announced that a crash could still lose.
        """
        with self._cond:
            dropped = self._queue.popleft() if len(self._queue) >= MAX_WAITING else None
            self.lost += dropped is not None
            self._queue.append((key, entry, done))
            self._cond.notify_all()
        if dropped is not None:
            self._report(dropped[2], False)

    def waiting(self) -> int:
        """Entries not on the disk yet."""
        with self._cond:
            return len(self._queue)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every entry submitted so far is on the disk (or lost); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _signal_stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._stop)
                if not self._queue:
                    return
                key, entry, done = self._queue[0]
                self._busy = True
            try:
                name = self.outbox.put(key, entry)
            except OSError as err:  # a full disk: the events wait in memory and it tries again
                failures += 1
                given_up: List[Done] = []
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    if self._stop and failures > 1:  # tried once more after close: given up
                        self.lost += len(self._queue)
                        log.error("%d event(s) could not be written to the upload outbox %s "
                                  "(%s) and are not uploaded", len(self._queue),
                                  self.outbox.directory, err)
                        given_up = [item[2] for item in self._queue]
                        self._queue.clear()
                    elif failures == 1:
                        log.error("the upload outbox %s cannot be written (%s): events wait in "
                                  "memory; free space in ~record_dir", self.outbox.directory, err)
                    if not given_up:
                        self._cond.wait_for(lambda: self._stop, backoff(failures, RETRY_MAX))
                for gone in given_up:
                    self._report(gone, False)
                if given_up:
                    return
                continue
            if failures:
                log.info("the upload outbox %s is written again", self.outbox.directory)
            failures = 0
            with self._cond:
                self._queue.popleft()
            if name is not None:
                self._written(name)
            self._report(done, name is not None)
            with self._cond:  # flush() returns once the entry is announced too
                self._busy = False
                self._cond.notify_all()

    @staticmethod
    def _report(done: Done, durable: bool) -> None:
        if done is None:
            return
        try:
            done(durable)
        except Exception:  # a failing announcement must not stop the writes
            log.exception("announcing an outbox entry failed")
