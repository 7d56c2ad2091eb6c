"""The recorder's clocks: ROS time, which may go back or stop, and the wall clock.

Under sim time ROS time is whatever ``/clock`` says: ``rosbag play --loop --clock`` sends it
back to the bag's start at every loop, a simulator reset sends it back to zero, and a paused
player stops it. The recorder reads ROS time only through :meth:`Timeline.now`, under its one
lock, so successive readings are ordered and a reading earlier than the one before means the
clock went back: a new timeline, which no recording, buffered message or cooldown of the old
one may span (the recorder closes and forgets them).

A stopped clock would keep a recording open for ever (its end is never reached), so every
recording is also bounded by its ``max`` seconds on the monotonic wall clock.
"""
import time
from typing import Callable, Dict, Optional, Tuple


class Timeline:
    """ROS time readings that notice a jump back, and each open recording's wall-clock start."""

    def __init__(self, clock: Callable[[], float],
                 wall: Callable[[], float] = time.monotonic) -> None:
        """Args:
            clock: ROS time now, in seconds (``rospy.get_time``).
            wall: a monotonic wall clock, in seconds.
        """
        self._clock = clock
        self._wall = wall
        self.last: Optional[float] = None   # the previous reading
        self.jumps = 0                      # times the clock went back
        self._opened: Dict[str, float] = {}  # rule -> wall time its recording opened
        self._warned: Optional[float] = None  # wall time of the last jump warned of

    def now(self) -> Tuple[float, Optional[float]]:
        """ROS time now, and the time it went back from (None when it did not go back)."""
        now = self._clock()
        last, self.last = self.last, now
        if last is not None and now < last:
            self.jumps += 1
            return now, last
        return now, None

    def opened(self, rule: str) -> None:
        """The recording of ``rule`` opened now."""
        self._opened[rule] = self._wall()

    def overran(self, rule: str, seconds: float) -> bool:
        """True once the recording of ``rule`` has been open ``seconds`` of wall time."""
        start = self._opened.get(rule)
        return start is not None and self._wall() - start > seconds

    def closed(self, rule: str) -> None:
        """The recording of ``rule`` is over."""
        self._opened.pop(rule, None)

    def warn_due(self, every: float = 10.0) -> bool:
        """True at most once every ``every`` wall seconds: each loop of a bag is worth a
        warning, a clock that keeps jumping (two ``/clock`` publishers) is not worth a flood."""
        now = self._wall()
        if self._warned is not None and now - self._warned < every:
            return False
        self._warned = now
        return True
