"""SinkRunner logic against a fake sink: batching, flush interval, retry, spool, cap, rejection."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
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
from gateway.sinks.runner import DiskSpool, process_share, refused_dead_letter
from gridgate.config import InfluxConfig, StorageConfig
from gridgate.logs import KeyValueFormatter
from gridgate.models import Point


class FakeSink:
    """Records batches; fails while `failures` > 0 (retryable unless `refuse` is set).

    A batch holding a line of `bad` is refused like VictoriaMetrics (nothing stored, no line named)
    or, with `partial`, like InfluxDB 1.x (the good lines stored, the refused ones only counted).
    """

    format = "fake"
    url = "fake://sink"

    def __init__(
        self,
        failures: int = 0,
        refuse: SinkError | None = None,
        bad: Iterable[str] = (),
        partial: bool = False,
    ) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures
        self.refuse = refuse
        self.bad = set(bad)
        self.partial = partial
        self.attempts = 0
        self.closed = False
        self.down = threading.Event()
        self.gate = threading.Event()  # while cleared, write() blocks (a slow server)
        self.gate.set()

    @staticmethod
    def encode(p: Point) -> str | None:
        return f"{p.measurement} {p.time_ns}" if p.fields else None

    def write(self, lines: list[str]) -> None:
        self.attempts += 1
        self.gate.wait()
        if self.down.is_set():
            raise SinkError("POST fake://sink: connection refused", retryable=True, url=self.url)
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("POST fake://sink: HTTP 503: busy", retryable=True, url=self.url, status=503)
        if self.refuse is not None:
            raise self.refuse
        refused = [line for line in lines if line in self.bad]
        if refused:
            if self.partial:
                self.batches.append([line for line in lines if line not in self.bad])
            raise SinkError(
                f"POST fake://sink: HTTP 400: partial write: type conflict dropped={len(refused)}",
                retryable=False,
                url=self.url,
                status=400,
            )
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


def test_refusal_naming_its_lines_is_settled_in_one_attempt() -> None:
    refuse = SinkError(
        "HTTP 400: partial write: unable to parse 'm 1': bad",
        retryable=False,
        url="x",
        status=400,
        refused={1: "unable to parse 'm 1': bad", 3: "unable to parse 'm 3': bad"},
        resend=[],
    )
    sink = FakeSink(refuse=refuse)
    refused: list[tuple[str, str]] = []
    with SinkRunner(sink, batch_size=5, flush_interval_s=0.05, on_refused=lambda *a: refused.append(a)) as r:
        for i in range(5):
            r.add(pt(i))
        assert r.flush(5)
        assert sink.attempts == 1  # the server stored the others and said so: nothing written twice
        assert r.points_rejected == 2
        assert r.metrics.points_refused == 2
        assert r.metrics.points_written == 3
    assert refused == [("m 1", "unable to parse 'm 1': bad"), ("m 3", "unable to parse 'm 3': bad")]


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


# -- a refused point is isolated (issue 8 A) ---------------------------------------------------


@pytest.mark.parametrize("partial", [False, True], ids=["whole_batch_refused", "partial_write"])
def test_one_refused_point_never_takes_others_with_it(partial: bool) -> None:
    sink = FakeSink(bad={"m 37"}, partial=partial)
    refused: list[tuple[str, str]] = []
    metrics = GatewayMetrics()
    with SinkRunner(
        sink, batch_size=100, flush_interval_s=0.05, metrics=metrics, on_refused=lambda *a: refused.append(a)
    ) as r:
        r.add_many(pt(i) for i in range(100))
        assert r.flush(5)
    assert sorted(set(sink.lines), key=lambda line: int(line.split()[1])) == [
        f"m {i}" for i in range(100) if i != 37
    ]
    assert len(refused) == 1
    line, reason = refused[0]
    assert line == "m 37"
    assert "type conflict" in reason and "fake://sink" in reason
    assert metrics.points_refused == 1 and r.points_rejected == 1
    assert metrics.points_written == 99  # each good point counted once, however often it was sent
    assert sink.attempts <= 2 * 7 + 1  # bisection: about two writes per halving of the batch
    assert r.healthy


def test_a_refusal_asking_to_resend_everything_is_split_rather_than_looped() -> None:
    refuse = SinkError("HTTP 422: no", retryable=False, status=422, resend=[0, 1, 2])
    refused: list[str] = []
    with SinkRunner(
        FakeSink(refuse=refuse),
        batch_size=3,
        flush_interval_s=0.05,
        on_refused=lambda line, _: refused.append(line),
    ) as r:
        r.add_many(pt(i) for i in range(3))
        assert r.flush(5)
    assert refused == lines(3)


def test_a_batch_of_only_refused_points_is_all_dead_lettered() -> None:
    sink = FakeSink(bad={f"m {i}" for i in range(8)})
    refused: list[str] = []
    with SinkRunner(
        sink, batch_size=8, flush_interval_s=0.05, on_refused=lambda line, _: refused.append(line)
    ) as r:
        r.add_many(pt(i) for i in range(8))
        assert r.flush(5)
    assert sorted(refused) == lines(8) and sink.lines == []


def test_outage_while_isolating_keeps_the_rest_in_order(tmp_path: Path) -> None:
    class FailsOnce(FakeSink):
        """Refuses the batch, then the server goes away on the first half."""

        def write(self, batch: list[str]) -> None:
            if self.attempts == 1:
                self.attempts += 1
                self.down.set()
            super().write(batch)

    sink = FailsOnce(bad={"m 7"})
    refused: list[str] = []
    with SinkRunner(
        sink,
        batch_size=10,
        flush_interval_s=0.05,
        retry_base_s=0.02,
        spool_path=tmp_path / "s.db",
        on_refused=lambda line, _: refused.append(line),
    ) as r:
        r.add_many(pt(i) for i in range(10))
        wait_for(lambda: r.spooled == 10)  # the whole batch waits on disk, in order
        r.add_many(pt(i) for i in range(10, 15))
        sink.down.clear()
        assert r.flush(5)
    assert sink.lines == [line for line in lines(15) if line != "m 7"]
    assert refused == ["m 7"]


def test_refused_points_in_the_spool_are_isolated_too(tmp_path: Path) -> None:
    spool = tmp_path / "s.db"
    DiskSpool(spool, "fake").push([(line, False) for line in lines(20)])
    sink = FakeSink(bad={"m 3", "m 15"})
    refused: list[str] = []
    with SinkRunner(
        sink, batch_size=20, spool_path=spool, on_refused=lambda line, _: refused.append(line)
    ) as r:
        assert r.flush(5)
    assert sink.lines == [line for line in lines(20) if line not in ("m 3", "m 15")]
    assert refused == ["m 3", "m 15"]
    assert DiskSpool(spool, "fake").count() == 0


def test_unexpected_sink_error_drops_the_batch_after_retries_and_dead_letters_it() -> None:
    class Broken(FakeSink):
        def write(self, batch: list[str]) -> None:
            self.attempts += 1
            raise ValueError("bug")

    sink = Broken()
    refused: list[str] = []
    with SinkRunner(
        sink,
        batch_size=3,
        flush_interval_s=0.05,
        retry_base_s=0.01,
        on_refused=lambda line, _: refused.append(line),
    ) as r:
        r.add_many(pt(i) for i in range(3))
        assert r.flush(5)
    assert sink.attempts == 3 and refused == lines(3) and r.points_rejected == 3


def test_refused_dead_letter_body() -> None:
    body = orjson.loads(refused_dead_letter("m f=1 1", "HTTP 400: field type conflict"))
    assert body["reason"] == "sink_refused"
    assert body["detail"] == "HTTP 400: field type conflict"
    assert body["line"] == "m f=1 1"
    assert body["topic"] is None and body["received_at"] > 0


def test_from_config_wires_the_dead_letter_publisher(tmp_path: Path) -> None:
    published: list[bytes] = []
    r = SinkRunner.from_config(
        InfluxConfig(api="v1"),
        StorageConfig(data_dir=tmp_path),
        sink=FakeSink(bad={"m 1"}),
        dead_letter=published.append,
    ).start()
    r.add(pt(1))
    assert r.flush(5)
    r.close()
    assert [orjson.loads(b)["line"] for b in published] == ["m 1"]


# -- the backlog cap: global share, events and tickets first (issue 8 B) ------------------------


def kept(measurement: str, i: int) -> Point:
    return Point(measurement, {}, {"v": i}, i)


def test_spool_over_the_cap_drops_telemetry_before_events_and_tickets(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.down.set()
    with SinkRunner(
        sink,
        batch_size=10,
        flush_interval_s=0.02,
        retry_base_s=5,
        buffer_max_points=50,
        spool_path=tmp_path / "s.db",
    ) as r:
        r.add_many([kept("events", i) for i in range(5)] + [kept("tickets", i) for i in range(5, 10)])
        for i in range(10, 300):
            r.add(kept("telemetry", i))
            if i % 50 == 0:
                time.sleep(0.03)
        wait_for(lambda: r.buffer_depth <= 50 and not r._buf)
        assert r.points_dropped == 250
        assert r.dropped_recently and r.status()["dropped_recently"]
        sink.down.clear()
        assert r.flush(5)
    assert sink.lines[:10] == [f"events {i}" for i in range(5)] + [f"tickets {i}" for i in range(5, 10)]
    assert sink.lines[10:] == [f"telemetry {i}" for i in range(260, 300)]  # the newest telemetry, in order


def test_events_go_only_when_nothing_else_is_left(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.down.set()
    with SinkRunner(
        sink,
        batch_size=10,
        flush_interval_s=0.02,
        retry_base_s=5,
        buffer_max_points=20,
        spool_path=tmp_path / "s.db",
    ) as r:
        r.add_many(kept("telemetry", i) for i in range(5))
        r.add_many(kept("events", i) for i in range(5, 35))
        wait_for(lambda: r.points_dropped == 15 and not r._buf)
        sink.down.clear()
        assert r.flush(5)
    assert sink.lines == [f"events {i}" for i in range(15, 35)]


def test_memory_cap_keeps_events_too() -> None:
    sink = FakeSink()
    r = SinkRunner(sink, batch_size=100, flush_interval_s=30, buffer_max_points=10)
    r.add(kept("events", 0))
    r.add_many(kept("telemetry", i) for i in range(1, 20))
    r.add(kept("tickets", 20))
    assert r.points_dropped == 11 and r.buffer_depth == 10
    r.start()
    assert r.flush(5)
    r.close()
    assert sink.lines == ["events 0", *(f"telemetry {i}" for i in range(12, 20)), "tickets 20"]


def test_runners_of_several_processes_share_the_cap(tmp_path: Path) -> None:
    cfg = InfluxConfig(api="v1", buffer_max_points=1000, flush_interval_s=0.02, retry_max_s=5)
    storage = StorageConfig(data_dir=tmp_path)
    runners = []
    for i in range(3):  # the gateway process and two workers
        sink = FakeSink()
        sink.down.set()
        runners.append(
            SinkRunner.from_config(
                cfg, storage, sink=sink, processes=3, spool_path=tmp_path / f"s{i}.db"
            ).start()
        )
    assert [r.buffer_max_points for r in runners] == [333, 333, 333]
    assert process_share(1000, 3) == 333 and process_share(1000, 1) == 1000
    for r in runners:
        r.add_many(pt(i) for i in range(1500))
    wait_for(lambda: all(r.spooled and not r._buf for r in runners))
    assert sum(r.buffer_depth for r in runners) <= 1000
    assert all(r.points_dropped == 1500 - 333 for r in runners)
    for r in runners:
        r.close()


def test_a_spool_from_before_the_keep_flag_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, fmt TEXT NOT NULL, line TEXT NOT NULL)"
    )
    db.executemany("INSERT INTO spool (fmt, line) VALUES ('fake', ?)", [(line,) for line in lines(3)])
    db.commit()
    db.close()
    spool = DiskSpool(path, "fake")
    assert spool.push([("m 3", True)], drop=3) == (3, 0)
    assert [line for _, line in spool.peek(10)] == ["m 3"]
    spool.close()


def test_status_says_backing_off_with_the_error_and_no_credentials(tmp_path: Path) -> None:
    class Down(FakeSink):
        def write(self, batch: list[str]) -> None:
            raise SinkError(
                "POST http://admin:hunter2@db:8086/write?db=x&u=admin&p=hunter2: ConnectError", retryable=True
            )

    metrics = GatewayMetrics()
    with SinkRunner(
        Down(), flush_interval_s=0.02, retry_base_s=5, spool_path=tmp_path / "s.db", metrics=metrics
    ) as r:
        r.add(pt(1))
        wait_for(lambda: not r.healthy)
        st = r.status()
        assert st["state"] == "backing_off" and st["failed_attempts"] >= 1
        assert "ConnectError" in st["last_error"] and "hunter2" not in repr(st)
        assert metrics.gauges["sink_failed_attempts"]() >= 1
        wait_for(lambda: r.spooled == 1)
        assert metrics.gauges["points_spooled"]() == 1


# -- durability: added, durable, persist (issue 8 D) -------------------------------------------


def test_added_and_durable_count_every_point_in_order() -> None:
    sink = FakeSink()
    with SinkRunner(sink, batch_size=1000, flush_interval_s=30) as r:
        assert (r.added, r.durable) == (0, 0)
        r.add(pt(0))
        r.add(Point("m", {}, {}, 1))  # not encodable: done at once, counted
        r.add_many([pt(2), Point("m", {}, {}, 3)])
        assert r.added == 4
        assert r.durable == 0  # point 0 still waits in memory
        assert r.persist(5)
        assert r.durable == r.added == 4
    assert sink.lines == ["m 0", "m 2"]


def test_persist_with_a_healthy_sink_writes_rather_than_spools(tmp_path: Path) -> None:
    sink = FakeSink()
    with SinkRunner(sink, batch_size=1000, flush_interval_s=30, spool_path=tmp_path / "s.db") as r:
        r.add_many(pt(i) for i in range(10))
        assert r.persist(5)
        assert sink.lines == lines(10)
        assert DiskSpool(tmp_path / "s.db", "fake").count() == 0


def test_persist_spools_when_the_sink_hangs_and_order_is_kept(tmp_path: Path) -> None:
    sink = FakeSink()
    with SinkRunner(sink, batch_size=5, flush_interval_s=0.05, spool_path=tmp_path / "s.db") as r:
        r.add_many(pt(i) for i in range(5))
        assert r.flush(5)
        sink.gate.clear()  # the server stops answering
        r.add_many(pt(i) for i in range(5, 10))
        wait_for(lambda: r._inflight == 5)  # the writer is stuck on 5..9
        r.add_many(pt(i) for i in range(10, 30))
        assert not r.persist(0.3)  # 5..9 are in a write that has not answered
        assert r.spooled == 20  # but the rest is on disk already, in one transaction
        sink.down.set()  # the stuck write fails
        sink.gate.set()
        assert r.persist(5)
        assert r.durable == r.added == 30
        assert r.spooled == 25
        sink.down.clear()
        assert r.flush(5)
    assert sink.lines == lines(30)  # the failed batch went ahead of the newer spooled lines


def test_persist_while_backing_off_spools_at_once(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.down.set()
    with SinkRunner(
        sink, batch_size=100, flush_interval_s=5, retry_base_s=30, spool_path=tmp_path / "s.db"
    ) as r:
        r.add(pt(0))
        r._force(1)
        wait_for(lambda: not r.healthy)
        r.add_many(pt(i) for i in range(1, 50))
        t0 = time.monotonic()
        assert r.persist(5)
        assert time.monotonic() - t0 < 1  # no waiting for the backoff (30 s) or the flush interval
        assert r.spooled == 50 and r.durable == 50
        attempts = sink.attempts
        assert r.persist(5) and sink.attempts == attempts  # nothing pending: no work, no write
        sink.down.clear()
        assert r.flush(5)
    assert sink.lines == lines(50)


def test_persist_without_a_spool_writes_to_the_sink() -> None:
    sink = FakeSink(failures=1)
    with SinkRunner(sink, batch_size=100, flush_interval_s=30, retry_base_s=30) as r:
        r.add_many(pt(i) for i in range(3))
        assert r.persist(5)  # the failure's 30 s backoff is cut short: the embedded sink retries now
    assert sink.lines == lines(3)


def test_persist_times_out_when_nothing_can_take_the_points() -> None:
    sink = FakeSink()
    sink.down.set()
    with SinkRunner(sink, batch_size=100, flush_interval_s=0.05, retry_base_s=0.05) as r:
        r.add(pt(0))
        t0 = time.monotonic()
        assert not r.persist(0.3)
        assert 0.25 <= time.monotonic() - t0 < 2
        assert r.durable == 0 and r.added == 1
        sink.down.clear()
        assert r.persist(5)


def test_persist_from_another_thread_under_load_loses_and_reorders_nothing(tmp_path: Path) -> None:
    sink = FakeSink()
    stop = threading.Event()
    results: list[bool] = []

    def persister(r: SinkRunner) -> None:
        while not stop.is_set():
            results.append(r.persist(2))
            time.sleep(0.005)

    with SinkRunner(
        sink, batch_size=50, flush_interval_s=0.01, retry_base_s=0.01, spool_path=tmp_path / "s.db"
    ) as r:
        t = threading.Thread(target=persister, args=(r,))
        t.start()
        for i in range(3000):
            r.add(pt(i))
            if i % 500 == 0:
                sink.down.set() if i % 1000 == 0 else sink.down.clear()
        sink.down.clear()
        stop.set()
        t.join()
        assert r.flush(10)
    assert sink.lines == lines(3000)
    assert results and all(results)


# -- logs (issue 8 C) --------------------------------------------------------------------------


def test_every_sink_log_line_is_an_event_with_key_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gridgate.sinks")
    sink = FakeSink(failures=1, bad={"m 7"})
    with SinkRunner(
        sink,
        batch_size=5,
        flush_interval_s=0.02,
        retry_base_s=0.01,
        buffer_max_points=3,
        spool_path=tmp_path / "s.db",
    ) as r:
        r.add_many(pt(i) for i in range(8))
        r.add(Point("m", {}, {}, 9))
        assert r.flush(5)
    formatted = [KeyValueFormatter().format(rec) for rec in caplog.records if rec.name == "gridgate.sinks"]
    events = {line.split(" event=", 1)[1].split(" ", 1)[0] for line in formatted if " event=" in line}
    assert {
        "sink_started",
        "sink_write_failed",
        "sink_point_refused",
        "sink_backlog_full",
        "sink_stopped",
    } <= events
    assert all(" event=sink_" in line and "msg=" not in line for line in formatted), formatted


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_persist_forces_only_the_points_it_waits_for() -> None:
    """A checkpoint's persist() must not make the writer send every later point on its own: batches
    would shrink to a few points and the database would take many more requests."""
    sink = FakeSink()
    with SinkRunner(sink, batch_size=1000, flush_interval_s=2) as r:
        r.add_many(pt(i) for i in range(10))
        assert r.persist(5)
        r.add_many(pt(i) for i in range(10, 20))
        time.sleep(0.3)
        assert sink.lines == lines(10)  # the later ones wait for a full batch or the flush interval
    assert sink.lines == lines(20)
