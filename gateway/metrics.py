"""Counters of the gateway, rendered in the Prometheus text format at `/metrics`.

The hot path bumps plain integers (no locks: CPython's GIL makes `+=` on one attribute from one
thread safe enough for monotonic counters read by a scraper); rendering happens on scrape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


class GatewayMetrics(Collector):
    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_decoded = 0
        self.readings = 0
        self.fields_dropped = 0  # payload fields their device type does not declare
        self.rejected: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()  # network server messages with nothing to store, by why
        self.events_out: Counter[str] = Counter()
        self.points_written = 0
        self.points_refused = 0  # points the database refused as bad data (each dead-lettered)
        self.write_errors = 0
        self.mqtt_connects = 0
        self.gauges: dict[str, Callable[[], float]] = {}
        self.collectors: list[Callable[[], Iterable[Metric]]] = []

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a value read at scrape time, e.g. the sink's buffer depth."""
        self.gauges[name] = read

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Register more metric families (e.g. per webhook endpoint), rendered on scrape."""
        self.collectors.append(collect)

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily("gridgate_messages_in", "MQTT messages received", value=self.messages_in)
        yield CounterMetricFamily(
            "gridgate_messages_decoded", "messages decoded into readings", value=self.messages_decoded
        )
        yield CounterMetricFamily(
            "gridgate_readings", "readings processed by device rules", value=self.readings
        )
        yield CounterMetricFamily(
            "gridgate_fields_dropped",
            "payload fields dropped: not declared for the device type",
            value=self.fields_dropped,
        )
        rejected = CounterMetricFamily("gridgate_messages_rejected", "payloads rejected", labels=["reason"])
        for reason, n in sorted(self.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        ignored = CounterMetricFamily(
            "gridgate_messages_ignored",
            "network server messages that hold no telemetry (duplicate, join, ack, ...)",
            labels=["reason"],
        )
        for reason, n in sorted(self.ignored.items()):
            ignored.add_metric([reason], n)
        yield ignored
        events = CounterMetricFamily(
            "gridgate_events", "event state changes published", labels=["kind", "state"]
        )
        for (kind, state), n in sorted(self.events_out.items()):
            events.add_metric([kind, state], n)
        yield events
        yield CounterMetricFamily(
            "gridgate_points_written", "points the sink confirmed", value=self.points_written
        )
        yield CounterMetricFamily(
            "gridgate_points_refused",
            "points the database refused as bad data, each sent to the dead-letter topic",
            value=self.points_refused,
        )
        yield CounterMetricFamily(
            "gridgate_write_errors", "failed sink writes (retried)", value=self.write_errors
        )
        yield CounterMetricFamily(
            "gridgate_mqtt_connects", "connections made to the broker", value=self.mqtt_connects
        )
        for name, read in sorted(self.gauges.items()):
            yield GaugeMetricFamily(f"gridgate_{name}", name.replace("_", " "), value=read())
        for collect in self.collectors:
            yield from collect()

    def registry(self) -> CollectorRegistry:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(self)
        return reg
