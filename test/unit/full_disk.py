"""A recording that hits a full disk, run as its own process (``python full_disk.py DIR``).

The disk is made full for this process alone with RLIMIT_FSIZE: a write past the limit fails
in the kernel (EFBIG) at the same place a full disk fails (ENOSPC), inside rosbag's buffered
file, whatever the code above it. A limit is process-wide, hence a process of its own. Prints
one JSON object of what was seen after the failed recording and after the next one, written
once the limit is lifted (space is back).
"""
import json
import os
import resource
import signal
import sys
from typing import Any, Dict, List

from std_msgs.msg import String

from ml_bridge.pipelines.rules import parse_rules
from ml_bridge.ros.recording.recorder import Recorder

LIMIT = 32 * 1024  # bytes a file may have while the disk is "full"


def open_files(directory: str) -> List[str]:
    """The files under ``directory`` this process holds open (deleted ones too)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(directory):
            found.append(target)
    return found


def record(rec: Recorder, clock: List[float], fire: float, until: float) -> None:
    """4 KiB messages every 1/8 s up to ``until``; the rule fires at ``fire``."""
    text = "x" * 4096
    while clock[0] <= until:
        rec.receive(String(text), "/t")
        if clock[0] == fire:
            rec.trigger("seen")
        rec.step()
        clock[0] += 0.125


def state(rec: Recorder, directory: str) -> Dict[str, Any]:
    return {"counters": rec.counters(), "failing": rec.failing, "last_error": rec.last_error,
            "files": sorted(os.listdir(directory)), "open": open_files(directory)}


def main(directory: str) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    clock = [100.0]
    rules = parse_rules([{"name": "seen", "all": [{"key": "score", "op": ">", "value": 0.5}],
                          "record": {"topics": ["/t"], "before": 1.0, "after": 0.5, "max": 2.0}}])
    rec = Recorder(rules, directory, 1 << 24, clock=lambda: clock[0], resolve=lambda n: n)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, hard))
    record(rec, clock, 101.0, 102.0)
    full = state(rec, directory)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    record(rec, clock, 104.0, 105.0)
    print(json.dumps({"full": full, "after": state(rec, directory)}))


if __name__ == "__main__":
    main(sys.argv[1])
