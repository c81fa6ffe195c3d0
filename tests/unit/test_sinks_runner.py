"""SinkRunner logic against a fake sink: batching, flush interval, retry, spool, cap, rejection."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gateway.metrics import GatewayMetrics
from gateway.sinks import (
    InfluxV1Sink,
    InfluxV2Sink,
    SinkError,
    SinkRunner,
    SQLiteSink,
    backoff_delay,
    build_sink,
)
from gateway.sinks.runner import DiskSpool
from gridgate.config import InfluxConfig, StorageConfig
from gridgate.models import Point


class FakeSink:
    """Records batches; fails while `failures` > 0 (retryable unless `refuse` is set)."""

    format = "fake"
    url = "fake://sink"

    def __init__(self, failures: int = 0, refuse: SinkError | None = None) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures
        self.refuse = refuse
        self.attempts = 0
        self.closed = False
        self.down = threading.Event()

    @staticmethod
    def encode(p: Point) -> str | None:
        return f"{p.measurement} {p.time_ns}" if p.fields else None

    def write(self, lines: list[str]) -> None:
        self.attempts += 1
        if self.down.is_set():
            raise SinkError("POST fake://sink: connection refused", retryable=True, url=self.url)
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("POST fake://sink: HTTP 503: busy", retryable=True, url=self.url, status=503)
        if self.refuse is not None:
            raise self.refuse
        self.batches.append(list(lines))

    def close(self) -> None:
        self.closed = True

    @property
    def lines(self) -> list[str]:
        return [line for b in self.batches for line in b]


def pt(i: int) -> Point:
    return Point("m", {"d": "x"}, {"v": i}, i)


def lines(n: int, start: int = 0) -> list[str]:
    return [f"m {i}" for i in range(start, start + n)]


def test_batches_of_batch_size_in_order() -> None:
    sink = FakeSink()
    with SinkRunner(sink, batch_size=10, flush_interval_s=5) as r:
        for i in range(25):
            r.add(pt(i))
        assert r.flush(5)
    assert [len(b) for b in sink.batches] == [10, 10, 5]
    assert sink.lines == lines(25)
    assert r.metrics.points_written == 25
    assert sink.closed


def test_full_batch_goes_out_without_waiting_for_the_interval() -> None:
    sink = FakeSink()
    with SinkRunner(sink, batch_size=100, flush_interval_s=30) as r:
        assert r.add_many(pt(i) for i in range(100)) == 100
        deadline = time.monotonic() + 3
        while not sink.batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [len(b) for b in sink.batches] == [100]


def test_partial_batch_goes_out_after_the_interval() -> None:
    sink = FakeSink()
    with SinkRunner(sink, batch_size=1000, flush_interval_s=0.2) as r:
        r.add(pt(1))
        time.sleep(0.6)
        assert sink.lines == ["m 1"]


def test_close_writes_what_is_pending() -> None:
    sink = FakeSink()
    r = SinkRunner(sink, batch_size=1000, flush_interval_s=30).start()
    for i in range(7):
        r.add(pt(i))
    r.close()
    assert sink.lines == lines(7)


def test_retryable_failures_are_retried_with_backoff_and_nothing_lost() -> None:
    sink = FakeSink(failures=3)
    metrics = GatewayMetrics()
    with SinkRunner(sink, batch_size=5, flush_interval_s=0.05, retry_base_s=0.01, metrics=metrics) as r:
        for i in range(12):
            r.add(pt(i))
        deadline = time.monotonic() + 5
        while len(sink.lines) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.lines == lines(12)
        assert r.healthy
    assert metrics.write_errors == 3
    assert metrics.points_written == 12


def test_refused_batch_is_counted_not_retried() -> None:
    refuse = SinkError(
        "HTTP 400: partial write: unable to parse", retryable=False, url="x", status=400, written=3
    )
    sink = FakeSink(refuse=refuse)
    with SinkRunner(sink, batch_size=5, flush_interval_s=0.05) as r:
        for i in range(5):
            r.add(pt(i))
        assert r.flush(5)
        assert sink.attempts == 1
        assert r.points_rejected == 2
        assert r.metrics.points_written == 3


def test_point_without_fields_is_rejected_and_counted() -> None:
    with SinkRunner(FakeSink()) as r:
        assert r.add(Point("m", {}, {}, 1)) is False
        assert r.points_rejected == 1
        assert r.buffer_depth == 0


def test_outage_spools_to_disk_and_a_restart_replays_it_first(tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    sink = FakeSink()
    sink.down.set()
    r = SinkRunner(sink, batch_size=10, flush_interval_s=0.05, retry_base_s=0.05, spool_path=spool).start()
    for i in range(35):
        r.add(pt(i))
    deadline = time.monotonic() + 5
    while r.spooled < 35 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.spooled == 35  # memory stays small while the server is away
    assert r.buffer_depth == 35
    r.close()
    assert sink.lines == []
    assert DiskSpool(spool, "fake").count() == 35

    sink2 = FakeSink()
    r2 = SinkRunner(sink2, batch_size=10, flush_interval_s=0.05, spool_path=spool)
    assert r2.buffer_depth == 35
    r2.add(pt(35))  # queued before start: still after the spooled ones
    r2.start()
    assert r2.flush(5)
    r2.close()
    assert sink2.lines == lines(36)
    assert DiskSpool(spool, "fake").count() == 0


def test_recovery_drains_spool_then_memory_in_order(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.down.set()
    with SinkRunner(
        sink,
        batch_size=7,
        flush_interval_s=0.05,
        retry_base_s=0.02,
        retry_max_s=0.1,
        spool_path=tmp_path / "s.db",
    ) as r:
        for i in range(50):
            r.add(pt(i))
            if i % 10 == 0:
                time.sleep(0.03)
        sink.down.clear()
        for i in range(50, 60):
            r.add(pt(i))
        assert r.flush(5)
        assert sink.lines == lines(60)
        assert r.metrics.write_errors >= 1


def test_backlog_cap_drops_oldest(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.down.set()
    with SinkRunner(
        sink,
        batch_size=10,
        flush_interval_s=0.05,
        retry_base_s=5,
        buffer_max_points=50,
        spool_path=tmp_path / "s.db",
    ) as r:
        for i in range(120):
            r.add(pt(i))
        deadline = time.monotonic() + 5
        while r.points_dropped < 70 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.points_dropped == 70
        assert r.buffer_depth == 50
        sink.down.clear()
        assert r.flush(5)
    assert sink.lines == lines(50, start=70)


def test_memory_only_buffer_is_capped_too() -> None:
    sink = FakeSink()
    sink.down.set()
    r = SinkRunner(sink, batch_size=10, flush_interval_s=30, buffer_max_points=20)
    for i in range(30):
        r.add(pt(i))
    assert r.points_dropped == 10
    assert r.buffer_depth == 20


def test_gauges_are_registered() -> None:
    metrics = GatewayMetrics()
    r = SinkRunner(FakeSink(), metrics=metrics)
    r.add(pt(1))
    assert metrics.gauges["buffer_depth"]() == 1
    assert metrics.gauges["points_dropped"]() == 0
    names = {m.name for m in metrics.collect()}
    assert {"gridgate_buffer_depth", "gridgate_points_dropped"} <= names
    r.close()


def test_status_has_no_secrets() -> None:
    sink = InfluxV1Sink("http://admin:hunter2@127.0.0.1:1/", "db", username="u", password="hunter2")
    r = SinkRunner(sink)
    assert "hunter2" not in repr(r.status())
    r.close()


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 10, 100])
def test_backoff_delay_is_capped_exponential_with_jitter(attempt: int) -> None:
    lo = backoff_delay(attempt, 0.5, 30, rand=lambda: 0.0)
    hi = backoff_delay(attempt, 0.5, 30, rand=lambda: 1.0)
    expected = min(30, 0.5 * 2 ** (attempt - 1))
    assert hi == pytest.approx(expected)
    assert lo == pytest.approx(expected / 2)
    assert lo <= backoff_delay(attempt, 0.5, 30) <= hi


def test_build_sink_follows_the_config(tmp_path: Path) -> None:
    storage = StorageConfig(data_dir=tmp_path)
    sinks = [
        build_sink(InfluxConfig(api="v1"), storage),
        build_sink(InfluxConfig(api="v2", token="t"), storage),
        build_sink(InfluxConfig(), storage),
    ]
    assert [type(s) for s in sinks] == [InfluxV1Sink, InfluxV2Sink, SQLiteSink]
    assert sinks[2].url.endswith("timeseries.sqlite")  # type: ignore[union-attr]
    for s in sinks:
        s.close()
    r = SinkRunner.from_config(InfluxConfig(api="v1", batch_size=123), storage)
    assert r.batch_size == 123
    assert r.spooled == 0
    r.close()
    assert storage.spool_db.exists()
