"""Sinks against real servers: InfluxDB 1.x (v1 API), VictoriaMetrics (v2 API), outages, SQLite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.sinks import InfluxV1Sink, InfluxV2Sink, SinkRunner, SQLiteSink
from gridgate.config import InfluxConfig, StorageConfig
from gridgate.models import Point
from tests.servers import Collector, InfluxDB1, Mosquitto, VictoriaMetrics, pub, wait_until

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
