"""A scripted video for the tracking chain's end-to-end tests: K coloured squares crossing (or
not) the vertical line x = 64 of a 128 x 128 frame at known frames, and the truth about them.

The squares are the colours :mod:`blob_detectors` boxes (one box per colour per frame), so two
squares of one colour are never in view at once, and a colour's next square appears far from
where the previous one left. Squares move 4 pixels a frame (IoU 0.6 between two frames, well
above the tracker's default 0.3) and their edges fall on even pixels, so the detectors' 64 x 64
input (a scale of exactly 1/2) boxes them without rounding.
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from blob_detectors import blob_frame

SIZE = 128          # frame height and width
SIDE = 16           # a square's side
PERIOD = 0.1        # seconds between two frames' stamps
LINE = {"name": "middle", "points": [[64, 0], [64, 128]]}  # forward: left to right
MIN_DURATION = 1.3  # the rule's track_duration threshold
MAX_AGE = 0.5       # ~track_max_age of the node under test


@dataclass(frozen=True)
class Square:
    """A square of ``colour`` in view on frames ``first`` .. ``last`` (inclusive), its top at
    ``y``, its left edge at ``x`` on frame ``first``, moving ``step`` pixels a frame."""

    colour: str
    first: int
    last: int
    y: int
    x: int
    step: int

    def box(self, frame: int) -> Tuple[int, int, int, int]:
        x1 = self.x + self.step * (frame - self.first)
        return x1, self.y, x1 + SIDE, self.y + SIDE

    @property
    def duration(self) -> float:
        """From its first to its last frame, in seconds (what its track should report)."""
        return (self.last - self.first) * PERIOD

    @property
    def direction(self) -> str:
        """"forward", "backward" or "" (its centre stays on one side of the line)."""
        start, end = self.box(self.first)[0] + SIDE / 2, self.box(self.last)[0] + SIDE / 2
        if start < 64 < end:
            return "forward"
        return "backward" if end < 64 < start else ""


#: Two of each colour; the short ones (under MIN_DURATION) are tracks the rule must not fire on,
#: one of them crossing the line.
SQUARES = (
    Square("red", 2, 25, 10, 8, 4),         # 2.3 s, forward
    Square("green", 5, 24, 50, 104, -4),    # 1.9 s, backward
    Square("blue", 8, 12, 90, 20, 4),       # 0.4 s, stays left of the line
    Square("blue", 20, 44, 100, 4, 4),      # 2.4 s, forward
    Square("green", 30, 50, 26, 110, -4),   # 2.0 s, backward
    Square("red", 32, 40, 60, 40, 4),       # 0.8 s, forward
)
#: Frames of the video: empty ones after the last square, until every track has ended.
FRAMES = max(s.last for s in SQUARES) + int(round(MAX_AGE / PERIOD)) + 3


def frame(index: int) -> np.ndarray:
    """Frame ``index`` of the video (RGB)."""
    return blob_frame(SIZE, SIZE, [(s.colour, s.box(index)) for s in SQUARES
                                   if s.first <= index <= s.last])


def totals() -> Dict[str, int]:
    """Squares per colour: the ``total`` each label must reach."""
    found: Dict[str, int] = {}
    for square in SQUARES:
        found[square.colour] = found.get(square.colour, 0) + 1
    return found


def crossings() -> Tuple[int, int]:
    """(forward, backward) crossings of LINE."""
    directions = [s.direction for s in SQUARES]
    return directions.count("forward"), directions.count("backward")


def qualifying() -> List[Square]:
    """The squares whose track's end must fire the rule (duration >= MIN_DURATION)."""
    return [s for s in SQUARES if s.duration >= MIN_DURATION - 1e-9]
