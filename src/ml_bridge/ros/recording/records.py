"""What the recorder keeps about its recordings: one open recording, and the counters."""
from dataclasses import dataclass, field, fields
from typing import Dict, FrozenSet, List

from ml_bridge.pipelines.rules import Rule
from ml_bridge.ros.recording.bagfile import BagFile
from ml_bridge.ros.recording.ring import Message


@dataclass
class Recording:
    """One open recording: its bag and the messages waiting for the writer."""

    rule: Rule
    path: str
    topics: FrozenSet[str]
    bag: BagFile                    # claimed when the rule fired
    pending: List[Message] = field(default_factory=list)
    done: bool = False              # the schedule ended it: no more messages
    failed: bool = False


@dataclass
class RecorderStats:
    """Counters for diagnostics."""

    buffer_bytes: int = 0
    buffer_dropped: int = 0     # messages the ring dropped because ~record_buffer_mb was full
    recordings_started: int = 0
    recordings_written: int = 0
    recordings_open: int = 0
    record_dropped: int = 0     # messages lost for a recording because the writer lagged
    record_errors: int = 0
    time_jumps: int = 0         # times ROS time went back (each closed the open recordings)

    def as_dict(self) -> Dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}
