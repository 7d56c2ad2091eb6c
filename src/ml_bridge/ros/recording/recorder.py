"""Recordings of rules: a memory ring buffer of the listed topics, and bags written from it.

Every topic a rule records is subscribed as ``rospy.AnyMsg``: messages stay serialized (no
decoding cost) and are stamped with their **receive time** (``rospy.Time.now()`` on arrival):
the bag's timeline is when the node received each message, not the header stamps. The last
``before`` seconds (the longest ``before`` of the rules) are kept in memory, at most
``~record_buffer_mb`` in all; past that the oldest messages are dropped and counted.

When a rule fires (:meth:`Recorder.trigger`, on a stream's thread) the buffered messages from
``before`` seconds ahead of the event are handed to the writer thread, and so is every
message received until the rule's :class:`~ml_bridge.pipelines.schedule.Schedule` says the
recording is over. The writer thread does the file work, so a stream never waits on a disk
beyond claiming the bag's name when its rule fires (one file creation, :func:`bagfile.claim`):
the event then names a bag no other node sharing ``~record_dir`` can take.
One lock orders receive times, matches and ends: a message belongs to a recording exactly
when its receive time is inside the recording's window.

ROS time that goes back (a looping ``/clock``, a simulator reset) closes every open recording
and starts over: the buffer, the schedules and their cooldowns belong to the old timeline
(:mod:`ml_bridge.ros.recording.timeline`). A recording also ends after ``max`` seconds of wall time, so
a stopped clock cannot keep it open. Each bag starts with the last message of each latching
publisher of its topics (:class:`~ml_bridge.ros.recording.ring.Latched`).

A topic the node itself subscribes to with its type (the image topic) shares rospy's
connection with that subscriber, so it arrives decoded; it is serialized again here (a copy of
the bytes) so the ring holds one form. The recorder passes no queue or buffer size, which in
rospy would change them for the node's own subscriber of the same topic.
"""
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import rospy

from ml_bridge.core.errors import InputError
from ml_bridge.core.threads import ThreadOwner
from ml_bridge.pipelines.rules import Rule
from ml_bridge.pipelines.schedule import FIRE, Schedule
from ml_bridge.ros.recording import bagfile
from ml_bridge.ros.recording.records import RecorderStats, Recording
from ml_bridge.ros.recording.ring import Latched, Message, Ring, serialized
from ml_bridge.ros.recording.timeline import Timeline

__all__ = ["Message", "Recorder", "RecorderStats", "Recording", "Ring", "serialized"]

log = logging.getLogger(__name__)


class Recorder(ThreadOwner):
    """Schedules of every rule, the ring buffer, the subscribers and the writer thread."""

    def __init__(self, rules: Sequence[Rule], record_dir: str, buffer_bytes: int,
                 clock: Optional[Callable[[], float]] = None,
                 resolve: Optional[Callable[[str], str]] = None,
                 wall: Callable[[], float] = time.monotonic) -> None:
        """Nothing is subscribed or started before :meth:`start`.

        Args:
            rules: every rule (those without ``record`` are scheduled here too).
            record_dir: where bags go (``~`` expanded); created, leftovers set aside.
            buffer_bytes: the ring buffer's bound (and that of messages waiting to be written).
            clock: seconds now (default: ROS time, ``rospy.get_time``).
            resolve: topic name -> global name (default: ``rospy.resolve_name``).
            wall: a monotonic wall clock (seconds), bounding each recording to ``max``.

        Raises:
            InputError: ``record_dir`` cannot be created or is not writable.
        """
        resolve = resolve or rospy.resolve_name
        self._time = Timeline(clock or rospy.get_time, wall)
        self.schedules = {r.name: Schedule(r) for r in rules}
        self.rule_topics = {r.name: frozenset(resolve(t) for t in r.record.topics)
                            for r in rules if r.record is not None}
        self.topics = sorted(set().union(*self.rule_topics.values()))
        horizon = max([r.record.before for r in rules if r.record is not None] or [0.0])
        self.ring = Ring(horizon, buffer_bytes)
        self.latched = Latched()
        self.limit = buffer_bytes
        self.record_dir = os.path.abspath(os.path.expanduser(record_dir))
        self.stats = RecorderStats()
        self._cond = threading.Condition()
        self._active: Dict[str, Recording] = {}   # rule name -> its recording, while it takes messages
        self._open: List[Recording] = []          # recordings the writer has not closed yet
        self._pending_bytes = 0
        self._drop_warned = -math.inf  # receive time of the last buffer-full warning
        self._stopping = False  # set by close, read by the writer under the lock
        self._subscribers: List[rospy.Subscriber] = []
        ThreadOwner.__init__(self, "ml_bridge-recorder")
        #: The cause of the last failed recording, and whether the latest one failed.
        self.last_error = ""
        self.failing = False
        if self.rule_topics:
            try:
                leftovers = bagfile.prepare(self.record_dir)
            except OSError as err:
                raise InputError(f"~record_dir {self.record_dir} cannot be created or written "
                                 f"({err}); set ~record_dir to a writable directory") from err
            for aside in leftovers:
                log.warning("a recording was left unfinished by a node that did not stop cleanly; "
                            "renamed to %s (rosbag reindex recovers what reached the disk)", aside)

    def start(self) -> None:
        """Subscribes to the recorded topics and starts the writer thread."""
        if not self.rule_topics:
            return
        self._subscribers = [rospy.Subscriber(t, rospy.AnyMsg, self.receive, callback_args=t)
                             for t in self.topics]
        super().start()

    # -- any thread -------------------------------------------------------------------------------
    def receive(self, msg: Any, topic: str) -> None:
        """A message of a recorded topic arrived (a rospy callback)."""
        raw, header = serialized(msg)  # outside the lock: a decoded message is copied here
        with self._cond:
            item = Message(topic, self._now(), raw, header)
            dropped = self.ring.dropped
            self.ring.add(item)
            self.latched.add(item)
            if self.ring.dropped > dropped and item.t >= self._drop_warned + 30.0:
                self._drop_warned = item.t
                log.warning("recording buffer full (%.0f MB): messages dropped before their "
                            "time; raise ~record_buffer_mb or shorten the rules' 'before'",
                            self.limit / (1 << 20))
            queued = False
            for name, rec in list(self._active.items()):
                if topic not in rec.topics or self._ended(name, item.t):
                    continue
                if self._pending_bytes + item.size > self.limit:
                    self.stats.record_dropped += 1
                    continue
                rec.pending.append(item)
                self._pending_bytes += item.size
                queued = True
            if queued:
                self._cond.notify_all()

    def trigger(self, rule: str) -> Optional[str]:
        """Rule ``rule`` held now. Returns None when it does nothing (cooling down, or its
        recording goes on), else the bag the event announces ("" when it records nothing)."""
        with self._cond:
            now = self._now()
            schedule = self.schedules[rule]
            self._ended(rule, now)
            if schedule.match(now) != FIRE:
                return None
            topics = self.rule_topics.get(rule)
            if topics is None:
                return ""
            try:
                # named by the wall clock, as rosbag record names bags (ROS time may be sim time)
                bag = bagfile.claim(self.record_dir, rule, time.time())
            except OSError as err:  # the event goes out naming no bag; the schedule runs on
                self._failed(rule, f"{type(err).__name__}: {err}", "no bag could be created")
                return ""
            window = self.ring.since(schedule.window_start, topics)
            start = window[0].t if window else now
            rec = Recording(schedule.rule, bag.path, topics, bag,
                            self.latched.opening(topics, window, start) + window)
            self._time.opened(rule)
            self._pending_bytes += sum(m.size for m in rec.pending)
            self._active[rule] = rec
            self._open.append(rec)
            self.stats.recordings_started += 1
            self._cond.notify_all()
            return bag.path

    def _failed(self, rule: str, cause: str, kept: str) -> None:
        """A recording of ``rule`` failed (any thread): counted, logged, kept for diagnostics."""
        with self._cond:  # re-entrant: trigger holds it already
            self.stats.record_errors += 1
            self.last_error = f"rule '{rule}': {cause}"
            self.failing = True
        log.error("recording of rule '%s' failed (%s); %s", rule, cause, kept)

    def _ended(self, rule: str, now: float) -> bool:
        """Under the lock: True (and the recording handed over to be closed) once it is over."""
        schedule = self.schedules[rule]
        if rule in self._active and (schedule.poll(now) or self._time.overran(
                rule, schedule.rule.record.max if schedule.rule.record else 0.0)):
            schedule.stop(now)  # ends one the wall clock ended (no-op after poll)
            self._time.closed(rule)
            self._active.pop(rule).done = True
            self._cond.notify_all()
        return rule not in self._active

    def _now(self) -> float:
        """Under the lock: ROS time now. When it went back, the old timeline ends first."""
        now, back_from = self._time.now()
        if back_from is not None:
            self._restart(back_from, now)
        return now

    def _restart(self, then: float, now: float) -> None:
        """Under the lock: ROS time went back from ``then`` to ``now``. Open recordings end
        (nothing received from now on is theirs) and are written out; the buffer and the rules'
        schedules with their cooldowns are forgotten, so no window mixes the two timelines."""
        ended = list(self._active)
        for rule in ended:
            self._time.closed(rule)
            self._active.pop(rule).done = True
        self.schedules = {name: Schedule(s.rule) for name, s in self.schedules.items()}
        self.ring.clear()
        self._drop_warned = -math.inf
        self.stats.time_jumps += 1
        self._cond.notify_all()
        if self._time.warn_due():
            log.warning("ROS time went back from %.3f to %.3f s (a looping /clock or a simulator "
                        "reset): %s, and the recording buffer starts over", then, now,
                        f"closed the recordings of {', '.join(ended)}" if ended else
                        "no recording was open")

    def counters(self) -> Dict[str, int]:
        """The recorder's counters, by name."""
        with self._cond:
            self.stats.buffer_bytes = self.ring.bytes
            self.stats.buffer_dropped = self.ring.dropped
            self.stats.recordings_open = len(self._open)
            return self.stats.as_dict()

    def close(self, timeout: Optional[float] = None) -> None:
        """Unsubscribes, ends open recordings now and writes them out (bags complete); waits
        for the writer as long as it takes unless ``timeout`` is given."""
        super().close(timeout)
        with self._cond:
            now = self._now()
            for rule in list(self._active):
                self.schedules[rule].stop(now)
                self._time.closed(rule)
                self._active.pop(rule).done = True
        self.step()

    # -- the writer thread ----------------------------------------------------------------------
    def _signal_stop(self) -> None:
        for sub in self._subscribers:
            sub.unregister()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                # With a recording open, wake up often enough to close it on time.
                self._cond.wait(0.05 if self._open else None)
            self.step()

    def step(self) -> None:
        """Writes what is waiting and closes the recordings that are over (writer thread)."""
        with self._cond:
            now = self._now()
            for rule in list(self._active):
                self._ended(rule, now)
            work = [(rec, rec.pending, rec.done) for rec in self._open]
            for rec in self._open:
                self._pending_bytes -= sum(m.size for m in rec.pending)
                rec.pending = []
            self._open = [rec for rec in self._open if not rec.done]
        for rec, items, done in work:
            if not rec.failed:
                self._write(rec, items, done)

    def _write(self, rec: Recording, items: List[Message], done: bool) -> None:
        bag = rec.bag
        try:
            for item in items:
                bag.write(item.topic, item.t, item.raw, item.header)
            if not done:
                return
            bag.close()
        except Exception as err:  # a full disk, a bag error: reported, the node goes on
            rec.failed = True
            kept = bag.abandon()  # the file is closed: deleting files frees their space
            self._failed(rec.rule.name, f"{type(err).__name__}: {err}",
                         f"what it holds is kept as {kept}" if kept else "nothing was kept")
            return
        with self._cond:
            self.stats.recordings_written += 1
            self.failing = False
        if bag.messages == 0:
            log.warning("rule '%s' wrote %s without messages: are %s published?", rec.rule.name,
                        bag.path, ", ".join(sorted(rec.topics)))
        else:
            log.info("rule '%s' wrote %s: %d messages over %.1f s", rec.rule.name, bag.path,
                     bag.messages, (bag.last or 0.0) - (bag.first or 0.0))
