"""Sinks against real servers: InfluxDB 1.x (v1 API), VictoriaMetrics (v2 API), outages, SQLite."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from gateway.service import Gateway
from gateway.sinks import InfluxV1Sink, InfluxV2Sink, SinkRunner, SQLiteSink
from gridgate.config import InfluxConfig, StorageConfig
from gridgate.models import Point
from tests.integration.spine_helpers import gateway_config
from tests.servers import (
    MOSQUITTO_PUB,
    Collector,
    InfluxDB1,
    Mosquitto,
    VictoriaMetrics,
    free_port,
    pub,
    wait_until,
)

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000_000_000


def telemetry(i: int, device: str = "mh-1") -> Point:
    return Point(
        "telemetry",
        {"device_type": "manhole", "device_id": device, "grid_id": "g 1,=x"},
        {"tilt": i * 0.5, "battery": 100 - i, "open": i % 2 == 0, "note": f'say "hi" \\ {i}'},
        T0 + i * 1_000_000,
    )


def test_v1_round_trip_exact(influxdb1: InfluxDB1, influx_db: str) -> None:
    sink = InfluxV1Sink(influxdb1.url, influx_db)
    points = [telemetry(i, device=f"mh-{i % 3}") for i in range(300)]
    points.append(Point("odd name,x", {"t k": "v=1"}, {"f,k": 1.25}, T0 + 7))
    with SinkRunner(sink, batch_size=100, flush_interval_s=0.2) as runner:
        assert runner.add_many(points) == len(points)
        assert runner.flush(10)
        assert runner.metrics.points_written == len(points)

    rows = influxdb1.rows('SELECT * FROM "telemetry" GROUP BY *', influx_db)
    got = sorted(
        (
            r["time"],
            r["device_type"],
            r["device_id"],
            r["grid_id"],
            r["tilt"],
            r["battery"],
            r["open"],
            r["note"],
        )
        for r in rows
    )
    want = sorted(
        (p.time_ns, *p.tags.values(), *p.fields.values()) for p in points if p.measurement == "telemetry"
    )
    assert got == want
    odd = influxdb1.rows('SELECT * FROM "odd name,x" GROUP BY *', influx_db)
    assert odd == [{"time": T0 + 7, "t k": "v=1", "f,k": 1.25}]


def test_v1_refused_point_is_isolated_and_dead_lettered(influxdb1: InfluxDB1, influx_db: str) -> None:
    """InfluxDB 1.x stores the good points of a batch and refuses a type conflict without naming it."""
    influxdb1.write(f"telemetry,device_id=old open=true {T0 - 10**9}", influx_db)  # `open`: a boolean field
    points = [telemetry(i) for i in range(60)]
    bad = Point("telemetry", {"device_id": "mh-9"}, {"open": 1.0}, T0 + 10**9)  # a float `open`: refused
    points.insert(25, bad)
    refused: list[tuple[str, str]] = []
    with SinkRunner(
        InfluxV1Sink(influxdb1.url, influx_db),
        batch_size=100,
        flush_interval_s=0.1,
        on_refused=lambda *a: refused.append(a),
    ) as runner:
        runner.add_many(points)
        assert runner.flush(10)
        assert runner.healthy
        assert runner.metrics.points_refused == 1
        assert runner.metrics.points_written == 60

    assert [line for line, _ in refused] == [InfluxV1Sink.encode(bad)]
    reason = refused[0][1]
    assert 'field type conflict: input field "open" on measurement "telemetry" is type float' in reason
    assert "already exists as type boolean" in reason
    rows = influxdb1.rows(f'SELECT "battery", "open" FROM "telemetry" WHERE time >= {T0}', influx_db)
    assert [r["time"] for r in rows] == [p.time_ns for p in points if p is not bad]


def test_v2_refused_point_is_isolated_against_victoriametrics(victoria: VictoriaMetrics) -> None:
    """VictoriaMetrics refuses a line over its -influx.maxLineSize (256 KiB), and nothing after it;
    every other point is stored exactly once (no sample written twice)."""
    now = time.time_ns() // 1_000_000 * 1_000_000
    points = [
        Point("vmrefuse", {"device_id": f"d{i}"}, {"level": float(i)}, now + i * 10**6) for i in range(40)
    ]
    bad = Point("vmrefuse", {"device_id": "huge"}, {"level": 1.0, "note": "x" * 3_000_000}, now)
    points.insert(12, bad)
    refused: list[tuple[str, str]] = []
    sink = InfluxV2Sink(victoria.url, token=None, org="gridgate", bucket="gridgate")
    with SinkRunner(
        sink, batch_size=100, flush_interval_s=0.1, on_refused=lambda *a: refused.append(a)
    ) as runner:
        runner.add_many(points)
        assert runner.flush(10)
        assert runner.metrics.points_refused == 1

    assert [line for line, _ in refused] == [InfluxV2Sink.encode(bad)]
    assert "too long line" in refused[0][1]
    selector = '{__name__="vmrefuse_level"}'
    wait_until(lambda: victoria.count_samples(selector) >= 40, 10, "40 samples in VictoriaMetrics")
    series = victoria.export(selector)
    got = sorted((x["metric"]["device_id"], v) for x in series for v in x["values"])
    assert got == sorted((f"d{i}", float(i)) for i in range(40))


@pytest.mark.parametrize("workers", [0, 2])
def test_gateway_dead_letters_a_point_the_database_refuses(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path, workers: int
) -> None:
    # tilt_deg is a boolean field now (a field's type holds per shard: a week around now)
    influxdb1.write(f"telemetry,device_id=old tilt_deg=true {time.time_ns() - 10**9}", influx_db)
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "v1", "url": influxdb1.url, "database": influx_db},
        ingest={"workers": workers},
    )
    with Collector.on(mosquitto, "gridgate/dead-letter") as dead, Gateway(cfg) as gw:
        pub(mosquitto, "gridgate/devices/manhole/MH-1/up", b'{"tilt_deg": 2.5, "battery_pct": 80}')
        pub(mosquitto, "gridgate/devices/bin/BIN-1/up", b'{"distance_cm": 30, "battery_pct": 70}')
        letter = dead.wait_count(1)[0].json()
        assert gw.flush(10)
    assert letter["reason"] == "sink_refused"
    assert letter["line"].startswith("telemetry,") and "device_id=MH-1" in letter["line"]
    assert "field type conflict" in letter["detail"] and '"tilt_deg"' in letter["detail"]
    bins = influxdb1.rows("SELECT * FROM telemetry WHERE device_id = 'BIN-1'", influx_db)
    assert len(bins) == 1  # the good point of the same moment is stored


def test_two_processes_share_the_cap_and_keep_events_while_influx_is_down(tmp_path: Path) -> None:
    storage = StorageConfig(data_dir=tmp_path / "var")
    with InfluxDB1(tmp_path) as server:
        server.create_database("gridgate")
        cfg = InfluxConfig(
            api="v1",
            url=server.url,
            batch_size=200,
            flush_interval_s=0.05,
            retry_max_s=0.5,
            buffer_max_points=1000,
        )
        server.stop()
        runners = [
            SinkRunner.from_config(
                cfg, storage, processes=2, spool_path=storage.data_dir / f"spool{i}.sqlite"
            ).start()
            for i in range(2)
        ]
        events = [
            Point("events", {"kind": "water_high"}, {"event_id": f"e{i}", "value": 1.0}, T0 + i)
            for i in range(20)
        ]
        for n, runner in enumerate(runners):
            runner.add_many(events[n * 10 : n * 10 + 10])
            for i in range(0, 3000, 100):
                runner.add_many(telemetry(j, device=f"mh-{n}") for j in range(i, i + 100))
                time.sleep(0.005)
        wait_until(lambda: all(r.points_dropped == 3010 - 500 for r in runners), 10, "the backlog cut to 500")
        assert sum(r.buffer_depth for r in runners) == 1000
        assert all(r.dropped_recently for r in runners)
        server.start()
        for runner in runners:
            assert runner.flush(15)
            runner.close()
        stored = server.rows('SELECT "event_id" FROM "events"', "gridgate")
        assert sorted(r["event_id"] for r in stored) == sorted(f"e{i}" for i in range(20))
        kept = server.rows('SELECT "battery" FROM "telemetry" GROUP BY "device_id"', "gridgate")
        assert len(kept) <= 1000 - 20
        newest = [r["time"] for r in kept if r["device_id"] == "mh-0"]
        assert newest == [
            telemetry(j).time_ns for j in range(3000 - len(newest), 3000)
        ]  # the newest, in order


def test_healthz_is_degraded_with_the_sink_state_while_points_are_dropped(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there: the database is down
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {
            "api": "v1",
            "url": f"http://admin:hunter2@127.0.0.1:{port}",
            "password": "hunter2",
            "username": "admin",
            "buffer_max_points": 1000,
            "retry_max_s": 0.5,
            "timeout_s": 1,
        },
    )
    with Gateway(cfg) as gw:
        gw.runner.add_many(telemetry(i) for i in range(1500))
        wait_until(
            lambda: gw.runner.points_dropped >= 500 and gw.runner.spooled, 10, "points dropped, spooled"
        )
        r = httpx.get(f"{gw.api_url}/healthz")
        body = r.json()
        metrics = httpx.get(f"{gw.api_url}/metrics").text
    assert r.status_code == 503 and body["status"] == "degraded"
    assert {"sink_backing_off", "sink_dropping"} <= set(body["problems"]) and body["mqtt_connected"]
    assert body["sink_state"] == "backing_off" and body["sink_failed_attempts"] >= 1
    assert body["points_dropped"] >= 500 and 0 < body["spooled"] <= 1000
    assert str(port) in body["sink_last_error"] and "hunter2" not in r.text
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("gridgate_"))
    assert float(values["gridgate_points_dropped"]) == body["points_dropped"]
    assert float(values["gridgate_sink_dropped_recently"]) == 1.0
    assert float(values["gridgate_points_refused_total"]) == 0.0


def test_v1_partial_write_counts_rejected_lines(influxdb1: InfluxDB1, influx_db: str) -> None:
    influxdb1.write("conflict value=1i 1", influx_db)  # `value` is now an integer field
    sink = InfluxV1Sink(influxdb1.url, influx_db)
    with SinkRunner(sink, batch_size=10, flush_interval_s=0.1) as runner:
        runner.add(Point("conflict", {}, {"value": 2}, 2))
        runner.add(Point("conflict", {}, {"value": 2.5}, 3))  # float into an integer field: refused
        runner.add(Point("conflict", {}, {"value": 4}, 4))
        assert runner.flush(10)
        assert runner.points_rejected == 1
        assert runner.metrics.points_written == 2
        assert "partial write" in (runner.last_error or "")
        assert influx_db in (runner.last_error or "")
    assert [r["time"] for r in influxdb1.rows('SELECT * FROM "conflict"', influx_db)] == [1, 2, 4]


def test_v1_missing_database_is_created_and_nothing_lost(influxdb1: InfluxDB1) -> None:
    db = "created_by_sink"
    influxdb1.query(f'DROP DATABASE "{db}"')
    with SinkRunner(
        InfluxV1Sink(influxdb1.url, db), batch_size=10, flush_interval_s=0.1, retry_base_s=0.05
    ) as r:
        r.add(telemetry(1))
        assert r.flush(10)
    assert len(influxdb1.rows('SELECT * FROM "telemetry"', db)) == 1


def test_v2_api_against_victoriametrics(victoria: VictoriaMetrics) -> None:
    sink = InfluxV2Sink(victoria.url, token=None, org="gridgate", bucket="gridgate")
    now = time.time_ns() // 1_000_000 * 1_000_000  # VictoriaMetrics keeps milliseconds
    points = [
        Point(
            "vmtest",
            {"device_id": f"d{i % 4}", "grid_id": "g 1,x"},
            {"level": i * 1.5, "count": i},
            now + i * 10**6,
        )
        for i in range(200)
    ]
    with SinkRunner(sink, batch_size=50, flush_interval_s=0.1) as runner:
        runner.add_many(points)
        assert runner.flush(10)
        assert runner.metrics.points_written == 200

    series = wait_until(
        lambda: (
            victoria.export('{__name__=~"vmtest_.*"}')
            if victoria.count_samples('{__name__=~"vmtest_.*"}') == 400
            else None
        ),
        10,
        "400 samples in VictoriaMetrics",
    )
    got = sorted(
        (s["metric"]["__name__"], s["metric"]["device_id"], s["metric"]["grid_id"], ts, v)
        for s in series
        for ts, v in zip(s["timestamps"], s["values"], strict=True)
    )
    want = sorted(
        (f"vmtest_{k}", p.tags["device_id"], p.tags["grid_id"], p.time_ns // 10**6, float(v))
        for p in points
        for k, v in p.fields.items()
    )
    assert got == want


def test_v2_unreachable_server_is_retryable(tmp_path: Path) -> None:
    from gateway.sinks import SinkError
    from tests.servers import free_port

    sink = InfluxV2Sink(f"http://127.0.0.1:{free_port()}", token="t", org="o", bucket="b", timeout_s=2)
    with pytest.raises(SinkError) as err:
        sink.write(["m f=1 1"])
    assert err.value.retryable
    assert "127.0.0.1" in str(err.value)
    sink.close()


def test_outage_spools_to_disk_and_nothing_is_lost(tmp_path: Path) -> None:
    storage = StorageConfig(data_dir=tmp_path / "var")
    with InfluxDB1(tmp_path) as server:
        server.create_database("gridgate")
        cfg = InfluxConfig(api="v1", url=server.url, batch_size=100, flush_interval_s=0.1, retry_max_s=0.5)
        runner = SinkRunner.from_config(cfg, storage).start()

        # the server goes away while the runner is up; it comes back; everything arrives
        for i in range(100):
            runner.add(telemetry(i))
        assert runner.flush(10)
        server.stop()
        for i in range(100, 1100):
            runner.add(telemetry(i))
        wait_until(lambda: runner.spooled == 1000, 10, "1000 points spooled")
        assert not runner.healthy
        server.start()
        assert runner.flush(15)

        # away again, and the gateway restarts meanwhile: the spool survives the restart
        server.stop()
        for i in range(1100, 1600):
            runner.add(telemetry(i))
        runner.close()
        assert storage.spool_db.exists()
        server.start()
        runner = SinkRunner.from_config(cfg, storage)
        assert runner.buffer_depth == 500
        runner.start()
        assert runner.flush(15)
        runner.close()

        times = [r["time"] for r in server.rows('SELECT "battery" FROM "telemetry"', "gridgate")]
        assert times == [telemetry(i).time_ns for i in range(1600)]


def test_sqlite_sink_round_trip(tmp_path: Path) -> None:
    storage = StorageConfig(data_dir=tmp_path)
    runner = SinkRunner.from_config(InfluxConfig(api="none", flush_interval_s=0.1), storage).start()
    points = [telemetry(i, device=f"mh-{i % 2}") for i in range(50)]
    points.append(Point("events", {"kind": "ponding"}, {"event_id": "01J", "value": 0.3}, T0))
    runner.add_many(points)
    assert runner.flush(5)
    runner.close()

    sink = SQLiteSink(storage.timeseries_db)
    assert sink.count("telemetry") == 50
    assert sink.count() == 51
    mh1 = sink.query("telemetry", {"device_id": "mh-1"})
    assert mh1 == [p for p in points if p.tags.get("device_id") == "mh-1"]
    assert sink.query("telemetry", since_ns=T0 + 48_000_000) == points[48:50]
    assert sink.query("telemetry", limit=2, newest_first=True) == [points[49], points[48]]
    assert sink.query("events") == [points[-1]]
    sink.close()


def test_mqtt_test_helpers(mosquitto: Mosquitto) -> None:
    """The broker fixture, `pub` and `Collector` that other integration tests build on."""
    with Collector.on(mosquitto, ["gridgate/devices/+/+/up", "other/#"]) as sub:
        pub(mosquitto, "gridgate/devices/manhole/mh-1/up", b'{"tilt": 1.5}')
        pub(mosquitto, "other/x", b"\x00\xff", qos=0)
        got = sub.wait_count(2)
    assert [m.topic for m in sorted(got, key=lambda m: m.topic)] == [
        "gridgate/devices/manhole/mh-1/up",
        "other/x",
    ]
    assert sub.on_topic("gridgate/#")[0].json() == {"tilt": 1.5}


@pytest.mark.slow
def test_workers_keep_the_gateway_backlog_under_the_cap_and_healthz_says_so(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """With `ingest.workers: 2` and the database down, the three processes together hold at most
    `buffer_max_points`, and /healthz reports the workers' drops and failures."""
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {
            "api": "v1",
            "url": f"http://127.0.0.1:{free_port()}",
            "buffer_max_points": 1000,
            "retry_max_s": 0.5,
        },
        ingest={"workers": 2},
    )
    now_ms = int(time.time() * 1000)
    with Gateway(cfg) as gw:
        for device, kind in (("BIN-1", "bin"), ("WG-1", "water_gauge"), ("MH-1", "manhole")):  # both workers
            body = "\n".join(f'{{"ts": {now_ms - i}, "battery_pct": 80}}' for i in range(900))
            argv = [MOSQUITTO_PUB, "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1", "-l"]
            assert MOSQUITTO_PUB
            subprocess.run(
                [*argv, "-t", f"gridgate/devices/{kind}/{device}/up"], input=body.encode(), check=True
            )
        health = wait_until(
            lambda: h if (h := httpx.get(f"{gw.api_url}/healthz").json())["points_dropped"] >= 1700 else None,
            20,
            "the workers' drops in /healthz",
        )
        depth = gw.runner.buffer_depth + gw.shard_gauge("buffer_depth")
    assert health["status"] == "degraded"
    assert {"sink_backing_off", "sink_dropping"} <= set(health["problems"])
    assert health["sink_state"] == "backing_off"
    assert depth <= 1000 and health["buffer_depth"] <= 1000 and 0 < health["spooled"] <= 1000
