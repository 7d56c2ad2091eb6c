"""When a rule acts: fire, extend its recording, finish it, cool down; no rospy, no clock.

Every method takes ``now`` (seconds), so the logic is tested with a fake clock. For a rule
that records (``before``/``after``/``max`` from its ``record``):

- idle: a match at ``t`` fires; the recording runs from ``t - before`` to ``t + after``;
- recording: a match at ``m`` extends the end to ``m + after``, never past ``t + max``;
- the recording ends once ``now`` passes its end; then ``cooldown`` seconds from that end
  during which matches do nothing; then idle again.

A rule that records nothing fires on a match and then ignores matches for ``cooldown``
seconds (0: it fires on every matching result).
"""
from typing import Optional

from ml_bridge.pipelines.rules import Rule

#: What a match did.
FIRE = "fire"          # the rule fired: an event (and a new recording, with ``record``)
EXTEND = "extend"      # the open recording goes on (no new event)
IGNORE = "ignore"      # cooling down


class Schedule:
    """One rule's state: idle, recording or cooling down."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.recording = False
        self.start = 0.0   # event time of the recording
        self.end = 0.0     # when the recording ends (extended by further matches)
        self.limit = 0.0   # start + max: the end never goes past it
        self.until: Optional[float] = None  # cooling down until then

    def match(self, now: float) -> str:
        """The rule held at ``now``: returns FIRE, EXTEND or IGNORE."""
        self.poll(now)
        record = self.rule.record
        if self.recording:
            assert record is not None
            self.end = max(self.end, min(now + record.after, self.limit))
            return EXTEND
        if self.until is not None:
            return IGNORE
        if record is None:
            self.until = now + self.rule.cooldown if self.rule.cooldown > 0 else None
            return FIRE
        self.recording = True
        self.start = now
        self.limit = now + record.max
        self.end = min(now + record.after, self.limit)
        return FIRE

    def poll(self, now: float) -> bool:
        """Moves the state on to ``now``; True when a recording ended (``now`` > its end)."""
        ended = False
        if self.recording and now > self.end:
            self.recording = False
            self.until = self.end + self.rule.cooldown
            ended = True
        if self.until is not None and now >= self.until:
            self.until = None
        return ended

    def stop(self, now: float) -> None:
        """Ends an open recording at ``now`` (shutdown): nothing after it belongs to it."""
        if self.recording:
            self.recording = False
            self.end = min(self.end, now)
            self.until = self.end + self.rule.cooldown

    @property
    def window_start(self) -> float:
        """Receive time of the first message the current recording holds."""
        return self.start - (self.rule.record.before if self.rule.record else 0.0)
