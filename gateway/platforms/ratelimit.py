"""Token buckets per push source (its address): a flood from one source is answered 429, not journaled."""

from __future__ import annotations

import threading

MAX_SOURCES = 10_000  # buckets kept; full ones (idle sources) are forgotten beyond this


class SourceBuckets:
    """`rate_per_s` tokens a second up to `burst`, per source; `now` is passed in (seconds)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, source: str, now: float) -> bool:
        with self._lock:
            tokens, at = self._buckets.get(source, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate_per_s)
            allowed = tokens >= 1.0
            self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > MAX_SOURCES:
                self._forget_full(now)
            return allowed

    def _forget_full(self, now: float) -> None:
        for source, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate_per_s >= self.burst:
                del self._buckets[source]
