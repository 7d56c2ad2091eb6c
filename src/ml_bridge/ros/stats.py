"""Request counters and latency percentiles for diagnostics (thread-safe)."""
import collections
import threading
from typing import Deque, Tuple

import numpy as np


class Stats:
    """Counts requests and errors and keeps the last ``window`` latencies."""

    def __init__(self, window: int = 1000) -> None:
        self._lock = threading.Lock()
        self._latencies: Deque[float] = collections.deque(maxlen=window)
        self.requests = 0
        self.errors = 0

    def record(self, latency_ms: float, ok: bool) -> None:
        """One request's outcome and latency."""
        with self._lock:
            self.requests += 1
            if ok:
                self._latencies.append(latency_ms)
            else:
                self.errors += 1

    def percentiles(self) -> Tuple[float, float]:
        """(p50, p95) latency in ms over the window; (0, 0) before the first request."""
        with self._lock:
            if not self._latencies:
                return 0.0, 0.0
            p50, p95 = np.percentile(np.fromiter(self._latencies, dtype=float), [50, 95])
        return float(p50), float(p95)
