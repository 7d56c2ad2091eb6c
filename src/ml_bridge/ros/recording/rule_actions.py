"""``~rules`` on the node: every stream result is evaluated, ``~events`` published, bags recorded.

:class:`RosRules` is a stream listener (:class:`~ml_bridge.ros.streams.RosStream` calls it on
the stream's thread after each result is published). Evaluation is
:mod:`ml_bridge.pipelines.rules`; when a rule acts is its schedule's business and recording
is the :class:`~ml_bridge.ros.recording.recorder.Recorder`'s, whose writer thread does the file work.
Events of rules with ``upload`` go to the uploader's threads (:mod:`ml_bridge.ros.recording.uploads`).
"""
import math
import threading
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Sequence, Tuple

import rospy
from diagnostic_msgs.msg import DiagnosticStatus
from std_msgs.msg import Header

from ml_bridge.core.errors import InputError
from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.msg import Event
from ml_bridge.pipelines.base import Result
from ml_bridge.pipelines.rules import Match, check_cameras, parse_rules
from ml_bridge.ros.recording.recorder import Recorder
from ml_bridge.ros.recording.uploads import event_entry, make_uploader, upload_problems

if TYPE_CHECKING:  # the streams pull in cv_bridge and OpenCV; the rules need neither
    from ml_bridge.ros.streams import Listener, RosStream

#: The outputs whose computation fills a result's rows (what rules look at).
ROW_OUTPUTS = ("predictions", "objects")


class RosRules:
    """The node's rules, their ``~events`` publisher and their recorder."""

    def __init__(self, rules: Any, record_dir: str, record_buffer_mb: Any,
                 cameras: Sequence[str],
                 upload_retry_max: Any = NODE_PARAMS.default("upload_retry_max"),
                 upload_outbox_mb: Any = NODE_PARAMS.default("upload_outbox_mb")) -> None:
        """Validates the rules; subscribes to nothing before :meth:`start`.

        Args:
            rules: the ``~rules`` parameter as read (a list of dicts, or empty).
            record_dir: ``~record_dir``.
            record_buffer_mb: ``~record_buffer_mb``: the ring buffer's bound, in MiB.
            cameras: the node's camera names ("" for a single camera; none without ``~image``).
            upload_retry_max: ``~upload_retry_max``: the longest wait between upload tries.
            upload_outbox_mb: ``~upload_outbox_mb``: the upload outbox's bound, in MiB.

        Raises:
            InputError: an invalid rule (named, with the field), ``~record_buffer_mb`` that is
                not a positive number, or a ``~record_dir`` that cannot be created; the
                upload parameters and outbox (:func:`~ml_bridge.ros.recording.uploads.make_uploader`).
        """
        self.rules = parse_rules(rules)
        check_cameras(self.rules, cameras)
        mb = record_buffer_mb
        if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not math.isfinite(mb) or mb <= 0:
            raise InputError(f"~record_buffer_mb must be a number of megabytes > 0, got {mb!r}")
        self.recorder = Recorder(self.rules, record_dir, int(mb * (1 << 20)))
        self.uploader = make_uploader(self.rules, record_dir, upload_retry_max, upload_outbox_mb)
        self.events = rospy.Publisher("~events", Event, queue_size=100) if self.rules else None
        self.matches = 0   # results a rule held on (fired, extended or cooling down)
        self.fired = 0     # events published
        self._lock = threading.Lock()
        if self.rules and not cameras:
            rospy.logwarn("~rules are set but ~image is empty: no stream produces results, so "
                          "no rule can fire")

    def for_camera(self, camera: str, outputs: Sequence[str]) -> Tuple[List["Listener"], FrozenSet[str]]:
        """The listeners and ``listens_to`` for the stream of ``camera`` whose pipeline
        publishes ``outputs``: the outputs that carry rows are computed even unsubscribed."""
        if not any(rule.applies_to(camera) for rule in self.rules):
            return [], frozenset()
        rows = [name for name in outputs if name in ROW_OUTPUTS] or list(outputs[:1])
        return [self.on_result], frozenset(rows)

    def start(self) -> None:
        """Subscribes to the recorded topics: after the streams' subscribers (see recorder);
        starts the uploads (what an earlier run left in the outbox goes first)."""
        self.recorder.start()
        if self.uploader is not None:
            self.uploader.start()

    def on_result(self, stream: "RosStream", result: Result) -> None:
        """Evaluates every rule of the stream's camera on ``result`` (the stream's thread)."""
        for rule in self.rules:
            if not rule.applies_to(stream.camera):
                continue
            for match in rule.matches(result):   # one per track row that holds
                self._act(stream, result, match)

    def _act(self, stream: "RosStream", result: Result, match: Match) -> None:
        """One match: the schedule decides whether it fires (event, recording) or not."""
        bag = self.recorder.trigger(match.rule.name)
        with self._lock:
            self.matches += 1
            self.fired += int(bag is not None)
        if bag is None or self.events is None:
            return
        header = result.frame.header if result.frame.header is not None else Header()
        event = Event(header=header, rule=match.rule.name, bag=bag, keys=list(match.keys),
                      values=list(match.values))
        looked = ", ".join(f"{k}={v}" for k, v in zip(match.keys, match.values))
        said = (f"rule '{match.rule.name}' fired on {stream.camera or stream.topic} ({looked})"
                + (f"; recording {bag}" if bag else ""))
        if match.rule.upload is None or self.uploader is None:
            self._announce(event, said, True)
            return
        # Announced => durable: the writer thread publishes it once its outbox entry is
        # fsynced (a SIGKILL before that loses an event nobody was told of); the stream
        # only queues it and goes on.
        self.uploader.submit(
            event_entry(match, stream.camera, result,
                        getattr(stream.pipeline, "model_source", ""), bag),
            lambda durable: self._announce(event, said, durable))

    def _announce(self, event: Event, said: str, durable: bool) -> None:
        """Publishes a fired event on ``~events``; one whose upload entry could not be kept
        (outbox full or its disk failing) is not announced, it is logged."""
        if not durable:
            rospy.logerr("%s, but its event was not announced: it could not be kept in the "
                         "upload outbox (full or not writable; see /diagnostics); raise "
                         "~upload_outbox_mb or free space in ~record_dir", said)
            return
        assert self.events is not None
        try:
            self.events.publish(event)
        except rospy.ROSException as err:  # written after ~events closed (the node stopping)
            rospy.logwarn("%s; its event is in the upload outbox but could not be published on "
                          "~events (%s)", said, err)
            return
        rospy.loginfo("%s", said)

    def counters(self) -> Dict[str, int]:
        """Counters for diagnostics (empty without rules)."""
        if not self.rules:
            return {}
        with self._lock:
            counters = {"rules": len(self.rules), "matches": self.matches, "events": self.fired}
        if self.recorder.rule_topics:
            counters.update(self.recorder.counters())
        if self.uploader is not None:
            counters.update(self.uploader.counters())
        return counters

    def problems(self) -> List[Tuple[int, str]]:
        """What ``/diagnostics`` says of recording, as (level, message): ERROR while
        recordings fail (the latest one failed), WARN once one failed or lost messages; each
        with its cause and what to do. Then what it says of uploads."""
        rec = self.recorder
        if not rec.rule_topics:
            return upload_problems(self.uploader)
        counters = rec.counters()
        found: List[Tuple[int, str]] = []
        if counters["record_errors"]:
            state = ("recordings fail" if rec.failing else
                     f"{counters['record_errors']} recording(s) failed")
            found.append((DiagnosticStatus.ERROR if rec.failing else DiagnosticStatus.WARN,
                          f"{state}, the last: {rec.last_error}; check ~record_dir "
                          f"{rec.record_dir} (free space, permissions)"))
        if counters["record_dropped"]:
            found.append((DiagnosticStatus.WARN, f"recordings lost {counters['record_dropped']} "
                          "messages: the writer fell ~record_buffer_mb behind (a slow disk); "
                          "raise ~record_buffer_mb or record fewer topics"))
        if counters["buffer_dropped"]:
            found.append((DiagnosticStatus.WARN, "recording buffer full: messages dropped, "
                          "raise ~record_buffer_mb"))
        return found + upload_problems(self.uploader)

    def close(self) -> None:
        """Ends open recordings now and writes them out complete; events waiting for the
        upload outbox are written to it (sent at the next start if not before)."""
        self.recorder.close()
        if self.uploader is not None:
            self.uploader.close()
