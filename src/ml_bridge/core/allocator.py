"""Keep large freed buffers in the process for the next frame (glibc's malloc).

Every camera frame passes through buffers of about a frame's size: rospy's read of the
connection (``buff_size`` bytes a read), the message's bytes, the image array, the mask to
publish. glibc serves an allocation over its mmap threshold (128 KiB at start) straight from
the kernel and hands it back when freed, and returns the free top of a heap past its trim
threshold, so the next frame's buffers start as fresh pages and fault in one by one, most of
a frame's receive cost (bench/NOTES.md). Raising both thresholds keeps those pages in the
process; raising only one does not. The price: up to ``keep_mb`` of freed memory stays in each
heap of the process instead of going back to the system.
"""
import ctypes
import sys
from typing import Callable, Optional

#: mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Default of the node's ``~keep_freed_mb``.
DEFAULT_KEEP_MB = 64
#: The most it takes: mallopt's values are C ints of bytes.
MAX_KEEP_MB = 2047
#: glibc refuses an mmap threshold over half its largest heap (64 MiB on 64-bit systems).
MAX_MMAP_THRESHOLD_MB = 32


def _mallopt() -> Optional[Callable[[int, int], int]]:
    """glibc's mallopt, or None where there is none (macOS, musl's libc has no such knobs)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int]
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


def keep_freed_buffers(keep_mb: int) -> bool:
    """Lets the process keep up to ``keep_mb`` MiB of freed memory per heap for reuse.

    Buffers under ``min(keep_mb / 2, 32)`` MiB (a 4K rgb8 frame is 24 MiB) come from the heap
    instead of fresh pages of their own, and the free top of a heap is returned to the system
    only past ``keep_mb`` MiB. ``keep_mb`` 0 leaves glibc's defaults.

    Returns:
        Whether the thresholds were set (False without glibc, or for 0).
    """
    if keep_mb <= 0:
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mmap_mb = max(1, min(keep_mb // 2, MAX_MMAP_THRESHOLD_MB))
    mmap_ok = mallopt(M_MMAP_THRESHOLD, mmap_mb << 20) == 1
    return mallopt(M_TRIM_THRESHOLD, keep_mb << 20) == 1 and mmap_ok
