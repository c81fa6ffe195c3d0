"""The pipeline without a broker: routing, dead letters, points and events for one message at a time."""

from __future__ import annotations

import json
import time

import orjson

from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry
from devices.types import Device
from gateway.grids import GridIndex
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gridgate.config import GatewayConfig
from gridgate.models import Event, Point


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.sent.append((topic, payload))


class Sink:
    def __init__(self) -> None:
        self.points: list[Point] = []

    def add(self, point: Point) -> None:
        self.points.append(point)


def make(**cfg: object) -> tuple[Pipeline, Outbox, Sink, list[Event]]:
    devices = [
        Device(id="BIN-1", type="bin", lat=30.0, lon=120.0),
        Device(id="MH-9", type="manhole", lat=30.0, lon=120.0, codec="manhole_binary"),
    ]
    registry = DeviceRegistry.from_devices(devices)
    seen: list[Event] = []
    out, sink = Outbox(), Sink()

    def on_events(events: list[Event]) -> None:  # as the gateway does, with no event muted
        seen.extend(events)
        p.publish(events)

    p = Pipeline(
        GatewayConfig(**cfg),
        registry,
        DeviceEngine(registry, started_at=time.time()),
        GridIndex(fallback_grid="fb"),
        sink,
        out,
        on_events,
        GatewayMetrics(),
    )
    return p, out, sink, seen


def test_a_reading_becomes_a_point_with_float_fields() -> None:
    p, _, sink, _ = make()
    p.handle(
        "gridgate/devices/bin/BIN-1/up",
        json.dumps({"ts": 1_790_000_000, "fill_pct": 40}).encode(),
        1_790_000_001,
    )
    [point] = sink.points
    assert point.measurement == "telemetry"
    assert point.tags == {"device_type": "bin", "device_id": "BIN-1", "grid_id": "fb"}
    assert point.fields == {"fill_pct": 40.0} and type(point.fields["fill_pct"]) is float
    assert point.time_ns == 1_790_000_000 * 10**9


def test_alarm_goes_to_alerts_with_grid_and_to_the_events_measurement() -> None:
    p, out, sink, seen = make()
    p.handle("gridgate/devices/bin/BIN-1/up", b'{"fill_pct": 95}', time.time())
    [event] = seen
    assert (event.kind, event.grid_id) == ("bin_full", "fb")
    assert [t for t, _ in out.sent] == ["gridgate/alerts/fb/bin_full"]
    assert orjson.loads(out.sent[0][1])["id"] == event.id
    assert [pt.measurement for pt in sink.points] == ["telemetry", "events"]


def test_bad_input_is_rejected_and_the_next_message_still_works() -> None:
    p, out, sink, _ = make()
    now = time.time()
    p.handle("gridgate/devices/manhole/BIN-1/up", b'{"tilt_deg": 1}', now)  # registry says bin
    p.handle("gridgate/devices/manhole/MH-9/up", b"\x01\x02", now)
    p.handle("elsewhere/x", b"{}", now)
    p.handle("gridgate/devices/bin/BIN-1/up", b'{"fill_pct": 10}', now)
    dead = [orjson.loads(b) for t, b in out.sent if t == "gridgate/dead-letter"]
    assert [d["reason"] for d in dead] == ["unknown_device", "bad_length", "unknown_topic"]
    assert "devices.yaml has 'BIN-1' as 'bin'" in dead[0]["detail"]
    assert dead[1]["payload_head_encoding"] == "hex" and dead[1]["payload_head"] == "0102"
    assert p.metrics.rejected == {"unknown_device": 1, "bad_length": 1, "unknown_topic": 1}
    assert len(sink.points) == 1


def test_vendor_topic_maps_to_device_and_codec() -> None:
    from devices.codecs.manhole_binary import encode_manhole_binary

    p, _, sink, _ = make(vendor_topics=[{"pattern": "acme/{device_id}/data", "codec": "manhole_binary"}])
    frame = encode_manhole_binary(tilt_deg=2.0, battery_pct=90, ts=int(time.time()))
    p.handle("acme/MH-9/data", frame, time.time())
    assert sink.points[0].tags["device_id"] == "MH-9" and sink.points[0].fields["tilt_deg"] == 2.0
