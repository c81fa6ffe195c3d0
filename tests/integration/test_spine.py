"""The sensor spine end to end: mosquitto_pub -> Mosquitto -> gateway -> InfluxDB 1.x / VictoriaMetrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devices.codecs.manhole_binary import encode_manhole_binary
from tests.integration.spine_helpers import gateway_config, start_gateway
from tests.servers import Collector, InfluxDB1, Mosquitto, VictoriaMetrics, pub, wait_until

pytestmark = pytest.mark.integration

T0 = (
    int(time.time()) - 600
)  # readings from ten minutes ago, so the gauge's 10-minute clear hold fits before now


def j(obj: Any) -> str:
    return json.dumps(obj)


def frame_fields(*, msg_type: float, open: bool, rssi_dbm: float) -> dict[str, Any]:
    """What the gateway stores for the test's binary manhole frames (tilt 3.5, water 12.3, battery 64)."""
    return {
        "msg_type": msg_type,
        "open": open,
        "tamper": False,
        "water_probe_wet": False,
        "fault_code": 0.0,
        "tilt_deg": 3.5,
        "water_level_cm": 12.3,
        "battery_pct": 64.0,
        "rssi_dbm": rssi_dbm,
    }


# (topic, payload, the telemetry fields it must store or None, its time)
def good_messages() -> list[tuple[str, bytes | str, dict[str, Any] | None, str, int]]:
    binary = encode_manhole_binary(tilt_deg=3.5, water_level_cm=12.3, battery_pct=64, rssi_dbm=-97, ts=T0 + 5)
    opened = encode_manhole_binary(
        msg_type=2, open=True, tilt_deg=3.5, water_level_cm=12.3, battery_pct=64, ts=T0 + 6
    )
    return [
        # native JSON, all three types
        (
            "gridgate/devices/manhole/MH-1/up",
            j(
                {
                    "ts": T0,
                    "seq": 1,
                    "tilt_deg": 2.5,
                    "open": False,
                    "water_level_cm": 4.0,
                    "gas_ch4_lel_pct": 1.5,
                    "temperature_c": 14.0,
                    "battery_pct": 81,
                    "rssi_dbm": -91,
                    "fault_code": 0,
                }
            ),
            {
                "tilt_deg": 2.5,
                "open": False,
                "water_level_cm": 4.0,
                "gas_ch4_lel_pct": 1.5,
                "temperature_c": 14.0,
                "battery_pct": 81.0,
                "rssi_dbm": -91.0,
                "fault_code": 0.0,
            },
            "MH-1",
            T0,
        ),
        (
            "gridgate/devices/manhole/MH-1/up",
            j(
                {"ts": (T0 + 1) * 1000, "tilt_deg": 18.0, "battery_pct": 15}
            ),  # epoch ms: tilt alarm, battery fault
            {"tilt_deg": 18.0, "battery_pct": 15.0},
            "MH-1",
            T0 + 1,
        ),
        (
            "gridgate/devices/manhole/MH-1/up",
            j(
                {
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 2)),
                    "tilt_deg": 4.0,
                    "battery_pct": 15,
                }
            ),
            {"tilt_deg": 4.0, "battery_pct": 15.0},
            "MH-1",
            T0 + 2,
        ),
        (
            "gridgate/devices/bin/BIN-1/up",
            j(
                {
                    "ts": T0,
                    "fill_pct": 35.0,
                    "temperature_c": 20.5,
                    "tilt_deg": 1.0,
                    "lid_open": False,
                    "battery_pct": 90,
                }
            ),
            {
                "fill_pct": 35.0,
                "temperature_c": 20.5,
                "tilt_deg": 1.0,
                "lid_open": False,
                "battery_pct": 90.0,
            },
            "BIN-1",
            T0,
        ),
        (
            "gridgate/devices/water_gauge/WG-1/up",
            j({"ts": T0, "water_level_cm": 20.0, "battery_pct": 70}),
            {"water_level_cm": 20.0, "battery_pct": 70.0},
            "WG-1",
            T0,
        ),
        # SenML, all three types
        (
            "gridgate/devices/bin/BIN-1/up",
            j(
                [
                    {"bn": "urn:dev:BIN-1:", "bt": T0 + 10, "n": "distance_cm", "u": "cm", "v": 18.0},
                    {"n": "temperature_c", "u": "Cel", "v": 21.0},
                    {"n": "battery_pct", "u": "%EL", "v": 88},
                ]
            ),
            {"distance_cm": 18.0, "fill_pct": 85.0, "temperature_c": 21.0, "battery_pct": 88.0},
            "BIN-1",
            T0 + 10,
        ),
        (
            "gridgate/devices/water_gauge/WG-1/up",
            j([{"bn": "urn:dev:WG-1:", "bt": T0 + 60, "n": "water_level", "u": "m", "v": 0.3}]),
            {"water_level_cm": 30.0},
            "WG-1",
            T0 + 60,
        ),
        (
            "gridgate/devices/manhole/MH-1/up",
            j(
                [
                    {"bt": T0 + 3, "n": "tilt_deg", "u": "deg", "v": 1.0},
                    {"n": "temperature_c", "u": "Cel", "v": 15.0},
                    {"n": "battery_pct", "u": "%EL", "v": 15},
                ]
            ),
            {"tilt_deg": 1.0, "temperature_c": 15.0, "battery_pct": 15.0},
            "MH-1",
            T0 + 3,
        ),
        # the vendor binary frame: hex on the device topic, raw bytes on a vendor topic
        (
            "gridgate/devices/manhole/MH-B/up",
            binary.hex(),
            frame_fields(msg_type=1.0, open=False, rssi_dbm=-97.0),
            "MH-B",
            T0 + 5,
        ),
        (
            "acme/covers/MH-V/data",
            opened,
            frame_fields(msg_type=2.0, open=True, rssi_dbm=-80.0),
            "MH-V",
            T0 + 6,
        ),
        # the water recedes; below 10 cm for ten minutes clears water_high
        (
            "gridgate/devices/water_gauge/WG-1/up",
            j({"ts": T0 + 120, "water_level_cm": 5.0}),
            {"water_level_cm": 5.0},
            "WG-1",
            T0 + 120,
        ),
        (
            "gridgate/devices/water_gauge/WG-1/up",
            j({"ts": T0 + 721, "water_level_cm": 4.0}),
            {"water_level_cm": 4.0},
            "WG-1",
            T0 + 721,
        ),
        # a bin emptied clears bin_full; a closed cover clears manhole_open
        (
            "gridgate/devices/bin/BIN-1/up",
            j({"ts": T0 + 20, "fill_pct": 10.0}),
            {"fill_pct": 10.0},
            "BIN-1",
            T0 + 20,
        ),
        (
            "acme/covers/MH-V/data",
            encode_manhole_binary(tilt_deg=3.5, water_level_cm=12.3, battery_pct=64, ts=T0 + 7),
            frame_fields(msg_type=1.0, open=False, rssi_dbm=-80.0),
            "MH-V",
            T0 + 7,
        ),
        # outside every grid: the fallback grid
        (
            "gridgate/devices/water_gauge/WG-OUT/up",
            j({"ts": T0, "water_level_cm": 1.0, "battery_pct": 99}),
            {"water_level_cm": 1.0, "battery_pct": 99.0},
            "WG-OUT",
            T0,
        ),
    ]


BAD = [
    ("gridgate/devices/bin/BIN-1/up", b"this is not json", "not_json"),
    ("gridgate/devices/bin/BIN-1/up", j({"ts": T0, "fill_pct": "full"}), "bad_field_type"),
    ("gridgate/devices/bin/BIN-1/up", j({"ts": T0}), "missing_field"),
    ("gridgate/devices/bin/NOPE-9/up", j({"fill_pct": 1}), "unknown_device"),
    ("gridgate/devices/bin", j({"fill_pct": 1}), "unknown_topic"),
    ("gridgate/devices/bin/BIN-1/up", j({"fill_pct": 1, "pad": "x" * 70_000}), "too_large"),
    ("gridgate/devices/bin/BIN-1/up", f'{{"ts": {T0}, "fill_pct": NaN}}', "not_finite"),
    ("gridgate/devices/bin/BIN-1/up", '{"fill_pct": Infinity}', "not_finite"),
    ("gridgate/devices/bin/BIN-1/up", j({"ts": T0 + 3 * 86400, "fill_pct": 1}), "ts_future"),
    ("gridgate/devices/bin/BIN-1/up", j({"ts": T0 - 400 * 86400, "fill_pct": 1}), "ts_past"),
    ("gridgate/devices/bin/BIN-1/up", j({"ts": T0, "battery_pct": -5}), "negative_battery"),
    ("gridgate/devices/manhole/MH-B/up", "0102", "bad_length"),
    ("acme/covers/MH-V/data", b"\x01\x02\x03", "bad_length"),
]


def publish_all(broker: Mosquitto, messages: list[tuple[str, bytes | str]]) -> None:
    for topic, payload in messages:
        pub(broker, topic, payload)


def exercise(
    broker: Mosquitto, tmp_path: Path, influx: dict[str, Any], workers: int = 0
) -> tuple[Collector, Any]:
    cfg = gateway_config(tmp_path, broker, influx, ingest={"workers": workers})
    gw = start_gateway(cfg)
    collector = Collector.on(broker, ["gridgate/alerts/#", "gridgate/maintenance/#", "gridgate/dead-letter"])
    collector.__enter__()
    publish_all(broker, [(t, p) for t, p, *_ in good_messages()])
    publish_all(broker, [(t, p) for t, p, _ in BAD])
    # the last good message and every bad one have been handled once the counters say so
    wait_until(lambda: gw.metrics.messages_in >= len(good_messages()) + len(BAD), 20, "all messages handled")
    assert gw.flush(20)
    return collector, gw


def check_alerts_and_dead_letters(collector: Collector, gw: Any) -> None:
    def changes(kind: str) -> list[tuple[str, str]]:
        return [
            (m.json()["state"], m.json()["severity"]) for m in collector.on_topic(f"gridgate/alerts/+/{kind}")
        ]

    collector.wait_for(lambda ms: len([m for m in ms if m.topic == "gridgate/dead-letter"]) >= len(BAD), 10)
    collector.wait_for(
        lambda ms: any(m.topic.endswith("/water_high") and m.json()["state"] == "cleared" for m in ms)
    )
    assert changes("manhole_tilt") == [("active", "major"), ("cleared", "major")]
    assert changes("manhole_open") == [("active", "critical"), ("cleared", "critical")]
    assert changes("bin_full") == [("active", "minor"), ("cleared", "minor")]
    assert changes("water_high") == [("active", "major"), ("active", "critical"), ("cleared", "critical")]
    assert all(m.topic.startswith("gridgate/alerts/G1/") for m in collector.on_topic("gridgate/alerts/#"))
    water = [m.json() for m in collector.on_topic("gridgate/alerts/+/water_high")]
    assert len({w["id"] for w in water}) == 1 and water[0]["source"] == "device:WG-1"
    assert water[0]["location"] == {"lat": 30.24, "lon": 120.15}
    # device faults go to maintenance, to the device's own team when it has one
    faults = collector.on_topic("gridgate/maintenance/covers/faults")
    assert [(m.json()["kind"], m.json()["state"]) for m in faults] == [("battery_low", "active")]
    # every bad input is on the dead-letter topic with its reason and the first bytes
    # (with worker processes only each device's own order is kept, so compare without order)
    dead = {d["reason"]: d for d in (m.json() for m in collector.on_topic("gridgate/dead-letter"))}
    assert sorted(m.json()["reason"] for m in collector.on_topic("gridgate/dead-letter")) == sorted(
        reason for *_, reason in BAD
    )
    assert dead["not_json"]["payload_head"] == "this is not json" and dead["not_json"]["topic"] == BAD[0][0]
    assert dead["too_large"]["payload_size"] > 65536 and len(dead["too_large"]["payload_head"]) == 256
    assert dead["unknown_device"]["device_id"] == "NOPE-9"
    metrics = httpx.get(f"{gw.api_url}/metrics").text
    assert 'gridgate_messages_rejected_total{reason="not_finite"} 2.0' in metrics
    assert 'gridgate_messages_rejected_total{reason="bad_length"} 2.0' in metrics


def expected_points() -> dict[tuple[str, int], dict[str, Any]]:
    return {(dev, ts): fields for _t, _p, fields, dev, ts in good_messages() if fields}


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "two-workers"])
def test_spine_v1_influxdb(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path, workers: int
) -> None:
    influx = {"api": "v1", "url": influxdb1.url, "database": influx_db}
    collector, gw = exercise(mosquitto, tmp_path, influx, workers)
    try:
        check_alerts_and_dead_letters(collector, gw)
        rows = influxdb1.rows("SELECT * FROM telemetry GROUP BY *", influx_db)
        got: dict[tuple[str, int], dict[str, Any]] = {}
        for r in rows:
            key = (r.pop("device_id"), r.pop("time") // 1_000_000_000)
            tags = (r.pop("device_type"), r.pop("grid_id"))
            assert tags[1] == ("outside" if key[0] == "WG-OUT" else "G1")
            assert tags[0] == {"MH": "manhole", "BI": "bin", "WG": "water_gauge"}[key[0][:2]]
            got[key] = {k: v for k, v in r.items() if v is not None}
        expected = expected_points()
        assert got.keys() == expected.keys()
        for key, fields in expected.items():
            assert got[key] == pytest.approx(fields), (key, got[key])
        events = influxdb1.rows("SELECT * FROM events GROUP BY *", influx_db)
        seen = sorted((e["kind"], e["state"], e["severity"]) for e in events if e["kind"] == "water_high")
        assert seen == [
            ("water_high", "active", "critical"),
            ("water_high", "active", "major"),
            ("water_high", "cleared", "critical"),
        ]
        assert all(e["grid_id"] == "G1" and e["source_type"] == "device" and e["event_id"] for e in events)
        # the API shows the devices, their state and the events
        devices = {d["id"]: d for d in httpx.get(f"{gw.api_url}/api/v1/devices").json()}
        assert [e["kind"] for e in devices["MH-1"]["active_faults"]] == ["battery_low"]
        assert devices["WG-1"]["active_alarms"] == [] and devices["WG-OUT"]["grid_id"] == "outside"

        def water_events() -> list[str]:
            return [
                e["state"]
                for e in httpx.get(f"{gw.api_url}/api/v1/events", params={"kind": "water_high"}).json()
            ]

        assert wait_until(water_events, 5, "events stored") == ["cleared"]
        assert httpx.get(f"{gw.api_url}/healthz").json()["mqtt_connected"] is True
    finally:
        collector.__exit__(None, None, None)
        gw.stop()


def test_spine_v2_victoriametrics(mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path) -> None:
    collector, gw = exercise(
        mosquitto, tmp_path, {"api": "v2", "url": victoria.url, "token": "t", "bucket": "b"}
    )
    try:
        check_alerts_and_dead_letters(collector, gw)
        victoria.force_flush()
        got: dict[tuple[str, int], dict[str, Any]] = {}
        for series in victoria.export('{__name__=~"telemetry_.*"}'):
            labels = series["metric"]
            field = labels["__name__"].removeprefix("telemetry_")
            for value, ts_ms in zip(series["values"], series["timestamps"], strict=True):
                got.setdefault((labels["device_id"], ts_ms // 1000), {})[field] = value
        expected = expected_points()
        assert got.keys() == expected.keys()
        for key, fields in expected.items():
            assert got[key] == pytest.approx({k: float(v) for k, v in fields.items()}), key
    finally:
        collector.__exit__(None, None, None)
        gw.stop()
