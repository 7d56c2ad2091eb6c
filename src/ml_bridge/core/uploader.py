"""Uploads of rule events: the outbox's writer thread and the sender thread; no rospy.

An event handed to :meth:`Uploader.submit` (on a stream's thread) is only queued: the writer
thread puts it in the :class:`~ml_bridge.core.outbox.Outbox` (fsynced) and wakes the sender,
so no stream waits on a disk or a network. The sender tries the entries oldest first, those
tried fewest times in this run first (an entry the server keeps refusing does not hold up the
others), and removes an entry only once the server answered 2xx. After a failed try it waits
:func:`~ml_bridge.core.upload_http.backoff` seconds, never more than ``retry_max``.

An outbox entry is a JSON object: ``url``, ``headers`` (as written, ``${NAME}`` unexpanded),
``body`` (what is POSTed; its ``id`` names the entry) and ``bag_path`` (the bag to PUT to
``<url>/bags/<file name>`` once complete, ``""`` for none). Once the POST went through,
``posted`` is written into the entry, so a restart sends the bag without the event again. A
bag is complete once it has its final name; an entry of an earlier run whose bag never got it
(the node was killed while recording) goes without its bag, as does one whose recording failed.
"""
import logging
import os
import random
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional, Set

from ml_bridge.core.outbox import Outbox
from ml_bridge.core.outbox_writer import OutboxWriter
from ml_bridge.core.threads import ThreadOwner
from ml_bridge.core.upload_http import Http, backoff

#: Seconds between looks at a bag that is still being written.
BAG_POLL = 0.5
#: Seconds between two warnings of the same trouble.
WARN_EVERY = 30.0
log = logging.getLogger(__name__)


@dataclass
class UploadStats:
    """Counters for diagnostics."""

    sent: int = 0           # events a server took (2xx)
    bags_sent: int = 0
    failed_tries: int = 0   # tries answered otherwise, or not at all
    bags_missing: int = 0   # bags that never completed: their event went without them


def bag_url(url: str, bag_path: str) -> str:
    """Where the bag ``bag_path`` of an event for ``url`` is PUT: ``<url>/bags/<file name>``."""
    return f"{url.rstrip('/')}/bags/{urllib.parse.quote(os.path.basename(bag_path))}"


def malformed(entry: Dict[str, Any]) -> str:
    """What is wrong with an outbox entry ("" when nothing)."""
    body, headers = entry.get("body"), entry.get("headers")
    if not isinstance(entry.get("url"), str) or not isinstance(entry.get("bag_path"), str):
        return "url and bag_path must be text"
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        return "headers must map names to text"
    if not isinstance(body, dict) or "id" not in body:
        return "body must be an object with an id"
    return ""


class Uploader(ThreadOwner):
    """The outbox, its writer thread and the sender thread (this object's own)."""

    def __init__(self, outbox: Outbox, retry_max: float, http: Optional[Http] = None,
                 writing_suffix: str = ".active",
                 rand: Callable[[], float] = random.random) -> None:
        """Starts nothing before :meth:`start`.

        Args:
            outbox: where entries wait; those an earlier run left are sent too.
            retry_max: the longest wait between two tries, in seconds.
            http: sends the tries (default: a :class:`~ml_bridge.core.upload_http.Http`).
            writing_suffix: what a bag being written has after its final name.
            rand: the backoff's jitter, a number in [0, 1).
        """
        super().__init__("ml_bridge-uploader")
        self.outbox = outbox
        self.retry_max = retry_max
        self.http = http or Http()
        self.writer = OutboxWriter(outbox, self._written)
        self.stats = UploadStats()
        #: The cause of the last failed try, and whether the latest try failed.
        self.last_problem = ""
        self.failing = False
        self._suffix = writing_suffix
        self._rand = rand
        self._cond = threading.Condition()
        self._stop = False
        self._fresh: Set[str] = set()   # entries of this run: their bags may still be written
        self._parked: Dict[str, float] = {}  # posted, waiting for their bag: since when
        self._tries: Dict[str, int] = {}
        self._failures = 0              # failed tries in a row
        self._warned = -WARN_EVERY

    def start(self) -> None:
        """Starts the writer thread and the sender thread."""
        self.writer.start()
        super().start()

    def submit(self, entry: Dict[str, Any],
               done: Optional[Callable[[bool], None]] = None) -> None:
        """Queues an event for upload (any thread; returns at once). ``entry["body"]["id"]``
        must be file-name safe (a hex uuid). ``done`` is called on the writer thread with True
        once the entry is durable in the outbox, with False if it never will be: an event is
        announced there, never before."""
        self.writer.submit(str(entry["body"]["id"]), entry, done)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every event submitted so far is in the outbox; False on timeout."""
        return self.writer.flush(timeout)

    def counters(self) -> Dict[str, int]:
        """``upload_pending`` (not yet taken by a server), ``upload_sent``, ... for diagnostics."""
        with self._cond:
            stats = asdict(self.stats)
        counters = {"upload_pending": len(self.outbox) + self.writer.waiting()}
        counters.update({f"upload_{key}": value for key, value in stats.items()})
        counters["upload_dropped"] = self.outbox.dropped + self.writer.lost
        return counters

    def close(self, timeout: Optional[float] = 5.0) -> None:
        """Writes what was submitted to the outbox, then stops the sender, waiting at most
        ``timeout`` seconds for a try in flight (what is not sent is sent at the next start)."""
        self.writer.close(None)
        super().close(timeout)
        if not self.thread.is_alive():
            self.http.close()
            self.outbox.close()

    # -- the sender thread ---------------------------------------------------------------------
    def _written(self, name: str) -> None:
        with self._cond:
            self._fresh.add(name)
            self._cond.notify_all()

    def _signal_stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                now = time.monotonic()
                names = [n for n in self.outbox.names()
                         if self._parked.get(n, -BAG_POLL) + BAG_POLL <= now]
                if not names:
                    self._cond.wait(BAG_POLL if self._parked else None)
                    continue
                name = min(names, key=lambda n: (self._tries.get(n, 0), n))
            try:
                ok = self._try(name)
            except Exception as err:  # a bug must not end uploads: logged, tried again later
                log.exception("upload of %s failed", name)
                ok = self._failed(name, f"{type(err).__name__}: {err}")
            if ok is None:  # its bag is still being written: neither success nor failure
                continue
            if ok:
                with self._cond:
                    if self.failing:
                        log.info("uploads go through again")
                    self._failures, self.failing = 0, False
                continue
            with self._cond:
                self._failures += 1
                self._cond.wait_for(lambda: self._stop,
                                    backoff(self._failures, self.retry_max, rand=self._rand))

    def _try(self, name: str) -> Optional[bool]:
        """One step of entry ``name``: True when done with it, False when a try failed, None
        when its bag is not complete yet (looked at again after BAG_POLL seconds)."""
        entry = self.outbox.read(name)
        if entry is None:
            return self._done(name)
        problem = malformed(entry)
        if problem:
            self.outbox.set_aside(name, problem)
            return self._done(name)
        url, headers, bag = entry["url"], entry["headers"], entry["bag_path"]
        if not entry.get("posted"):
            outcome = self.http.post_json(url, headers, entry["body"])
            if not outcome.ok:
                return self._failed(name, outcome.problem)
            with self._cond:
                self.stats.sent += 1
            if not bag:
                return self._done(name)
            entry["posted"] = True
            try:
                self.outbox.update(name, entry)
            except OSError:  # not fatal: after a restart the event is posted again
                pass
        if not os.path.exists(bag):
            if name in self._fresh and os.path.exists(bag + self._suffix):
                with self._cond:
                    self._parked[name] = time.monotonic()
                return None
            if not os.path.exists(bag):  # not renamed to it between the two looks
                log.warning("bag %s never completed (its recording failed, or its node "
                            "stopped while recording): event %s went without it", bag,
                            entry["body"]["id"])
                with self._cond:
                    self.stats.bags_missing += 1
                return self._done(name)
        outcome = self.http.put_file(bag_url(url, bag), headers, bag)
        if not outcome.ok:
            return self._failed(name, outcome.problem)
        with self._cond:
            self.stats.bags_sent += 1
        return self._done(name)

    def _done(self, name: str) -> bool:
        self.outbox.remove(name)
        with self._cond:
            self._tries.pop(name, None)
            self._fresh.discard(name)
            self._parked.pop(name, None)
        return True

    def _failed(self, name: str, problem: str) -> bool:
        now = time.monotonic()
        with self._cond:
            self._tries[name] = self._tries.get(name, 0) + 1
            self.stats.failed_tries += 1
            # Said when it starts, when the cause changes, and every WARN_EVERY seconds.
            warn = (not self.failing or problem != self.last_problem
                    or now >= self._warned + WARN_EVERY)
            self.last_problem, self.failing = problem, True
            if warn:
                self._warned = now
        if warn:
            log.warning("upload failed (%s); retrying with backoff up to %g s, %d pending",
                        problem, self.retry_max, len(self.outbox))
        return False
