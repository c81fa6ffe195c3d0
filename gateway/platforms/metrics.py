"""Counters of the push routes, rendered at `/metrics` beside the gateway's own."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PushMetrics:
    """Plain counters bumped by the HTTP threads (monotonic: `+=` under the GIL is enough)."""

    def __init__(self) -> None:
        self.answers: Counter[tuple[str, int]] = Counter()  # (platform, HTTP code)
        self.messages: Counter[str] = Counter()  # native messages journaled, by platform
        self.duplicates: Counter[str] = Counter()
        self.auth_failures: Counter[tuple[str, str]] = Counter()  # (platform, secret | signature)
        self.noted: Counter[tuple[str, str]] = Counter()  # (platform, what: commandResponse, event/...)
        self._latency: dict[str, list[int]] = {}
        self._latency_sum: Counter[str] = Counter()

    def answered(self, platform: str, code: int, seconds: float) -> None:
        self.answers[(platform, code)] += 1
        counts = self._latency.setdefault(platform, [0] * (len(LATENCY_BUCKETS_S) + 1))
        counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._latency_sum[platform] += seconds

    def collect(self) -> Iterable[Metric]:
        answers = CounterMetricFamily(
            "gridgate_push_requests", "platform pushes answered, by HTTP code", labels=["platform", "code"]
        )
        for (platform, code), n in sorted(self.answers.items()):
            answers.add_metric([platform, str(code)], n)
        yield answers
        messages = CounterMetricFamily(
            "gridgate_push_messages", "native messages journaled from platform pushes", labels=["platform"]
        )
        for platform, n in sorted(self.messages.items()):
            messages.add_metric([platform], n)
        yield messages
        dups = CounterMetricFamily(
            "gridgate_push_duplicates", "platform retries of a push already accepted", labels=["platform"]
        )
        for platform, n in sorted(self.duplicates.items()):
            dups.add_metric([platform], n)
        yield dups
        auth = CounterMetricFamily(
            "gridgate_push_auth_failures",
            "pushes refused: wrong path secret (401) or bad signature (403)",
            labels=["platform", "reason"],
        )
        for (platform, reason), n in sorted(self.auth_failures.items()):
            auth.add_metric([platform, reason], n)
        yield auth
        noted = CounterMetricFamily(
            "gridgate_push_noted",
            "command replies, event types and other pushes logged",
            labels=["platform", "what"],
        )
        for (platform, what), n in sorted(self.noted.items()):
            noted.add_metric([platform, what], n)
        yield noted
        latency = HistogramMetricFamily(
            "gridgate_push_latency_seconds", "time from a push's body to its answer", labels=["platform"]
        )
        for platform, counts in sorted(self._latency.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            latency.add_metric([platform], buckets, self._latency_sum[platform])
        yield latency
