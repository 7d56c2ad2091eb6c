"""ml_bridge.core.allocator: frame-sized buffers are reused instead of faulting in fresh pages.

Each check runs in a child process, since the thresholds are process-wide and stay set.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ml_bridge.core import allocator

SRC = Path(__file__).resolve().parents[2] / "src"
#: What rospy does with each 640 x 480 rgb8 frame it receives: 15 reads of 64 KiB appended to
#: a BytesIO, the message's bytes copied out, the buffer emptied; on a thread of its own.
FRAMES = textwrap.dedent("""
    import io, resource, sys, threading
    sys.path.insert(0, {src!r})
    from ml_bridge.core.allocator import keep_freed_buffers
    print("set", keep_freed_buffers({keep_mb}))
    chunk = bytes(range(256)) * 256

    def receive(out):
        buff = io.BytesIO()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(100):
            for _ in range(15):
                buff.write(chunk)
            data = buff.getvalue()[4:]
            buff.seek(0)
            buff.truncate(0)
            del data
        out.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)

    faults = []
    thread = threading.Thread(target=receive, args=(faults,))
    thread.start()
    thread.join()
    print("faults", faults[0])
""")


def _faults_per_frame(keep_mb: int) -> float:
    out = subprocess.run([sys.executable, "-c", FRAMES.format(src=str(SRC), keep_mb=keep_mb)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["set"] == str(keep_mb > 0), out
    return float(lines["faults"])


@pytest.mark.skipif(allocator._mallopt() is None, reason="glibc's mallopt only")
def test_a_frames_buffers_are_reused_once_kept() -> None:
    # Negative control: with the C library's defaults each frame faults in its pages afresh.
    assert _faults_per_frame(0) > 100
    assert _faults_per_frame(64) < 10


def test_zero_leaves_the_defaults() -> None:
    assert allocator.keep_freed_buffers(0) is False
