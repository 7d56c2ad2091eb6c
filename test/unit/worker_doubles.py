"""Test doubles of the model worker tests (test_core_worker, test_core_worker_inline): a
context that counts how deep each thread entered it, a model function y = 2x + 1 that records
and can hold its calls, and request rows."""
import threading
from types import TracebackType
from typing import List, Optional, Tuple, Type

import numpy as np

from ml_bridge.core.context import Context

TIMEOUT = 10.0


class DepthContext(Context):
    """Counts, per thread, how deep it is entered: a stand-in for a framework's state. Notes
    the thread of every entry; with ``fail_once`` the first entry fails."""

    def __init__(self, fail_once: bool = False) -> None:
        self._local = threading.local()
        self.fail_once = fail_once
        self.entered_on: List[str] = []

    @property
    def depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def __enter__(self) -> "DepthContext":
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("cannot restore device")
        self._local.depth = self.depth + 1
        self.entered_on.append(threading.current_thread().name)
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._local.depth -= 1


class Model:
    """predict_fn double: y = 2x + 1, recording each call's thread, rows and context depth;
    raises on negative input; can hold its first call; notes any call that starts while
    another is running."""

    def __init__(self, context: Optional[DepthContext] = None, hold_first: bool = False) -> None:
        self.context = context
        self.calls: List[Tuple[str, int, int]] = []  # (thread, rows, context depth)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.active = 0
        self.overlaps = 0
        self._lock = threading.Lock()
        if not hold_first:
            self.release.set()

    def __call__(self, inputs: List[np.ndarray]) -> Tuple[List[np.ndarray], int]:
        with self._lock:
            self.overlaps += int(self.active > 0)
            self.active += 1
        try:
            depth = self.context.depth if self.context is not None else 0
            self.calls.append((threading.current_thread().name, int(inputs[0].shape[0]), depth))
            self.entered.set()
            assert self.release.wait(TIMEOUT)
            if (inputs[0] < 0).any():
                raise ValueError("negative input")
            return [inputs[0] * 2 + 1], 7
        finally:
            with self._lock:
                self.active -= 1


def rows(n: int, start: float = 0.0) -> List[np.ndarray]:
    """``n`` request rows of 3 values, counting up from ``start``."""
    return [np.arange(start, start + 3 * n, dtype=np.float32).reshape(n, 3)]
