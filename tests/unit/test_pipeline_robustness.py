"""The pipeline's promise for any message: decoded or rejected, counted once, never raised; exact times."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from devices.codecs import register_codec
from devices.types import Device
from gateway.pipeline import event_point
from gridgate.models import Event, Reading, ns_from_datetime, ns_from_s
from tests.unit.test_pipeline import make

UP = "gridgate/devices/bin/BIN-1/up"
T_ISO = "2026-11-22T08:30:00.491Z"
T_NS = 1_795_336_200_491_000_000


def balanced(p: object) -> bool:
    m = p.metrics  # type: ignore[attr-defined]
    return m.messages_in == m.messages_decoded + sum(m.rejected.values())


def dead_letters(out: object) -> list[dict[str, object]]:
    return [orjson.loads(b) for t, b in out.sent if t == "gridgate/dead-letter"]  # type: ignore[attr-defined]


def test_every_message_is_decoded_or_rejected_status_included() -> None:
    p, out, _, _ = make()
    now = time.time()
    deep = b"[" * 1000 + b"]" * 1000
    for topic, payload in [
        ("gridgate/devices/bin/BIN-1/status", b"online"),
        ("gridgate/devices/bin/BIN-1/status", b'{"status": "offline"}'),
        ("gridgate/devices/bin/BIN-1/status", b"maybe"),
        ("gridgate/devices/bin/BIN-1/status", b'{"status": ' + deep + b"}"),
        (UP, b'{"fill_pct": ' + deep + b"}"),
        (UP, deep),
        (UP, b'{"fill_pct": 1, "a,b": 2}'),
        (UP, b'{"fill_pct": 1}'),
        ("gridgate/devices/bin", b"{}"),
    ]:
        p.handle(topic, payload, now)
        assert balanced(p), (topic, payload[:40], p.metrics.rejected)
    assert p.metrics.messages_decoded == 3
    reasons = [d["reason"] for d in dead_letters(out)]
    assert reasons[0] == "bad_payload" and reasons[2:] == [
        "too_deep",
        "too_deep",
        "bad_field_name",
        "unknown_topic",
    ]
    assert reasons[1] in ("bad_payload", "handler_error")  # a status nested without end: refused, counted


def test_a_codec_that_raises_anything_is_a_decoder_error_and_the_next_message_works() -> None:
    def recursing(payload: bytes, device: Device, now: float) -> list[Reading]:
        return recursing(payload, device, now)

    register_codec("test_recursing", recursing, replace=True)
    p, out, sink, _ = make(vendor_topics=[{"pattern": "acme/{device_id}/raw", "codec": "test_recursing"}])
    p.handle("acme/BIN-1/raw", b"x", time.time())
    p.handle(UP, b'{"fill_pct": 10}', time.time())
    [dead] = dead_letters(out)
    assert dead["reason"] == "decoder_error" and dead["device_id"] == "BIN-1"
    assert "test_recursing codec: RecursionError" in str(dead["detail"])
    assert p.metrics.rejected == {"decoder_error": 1} and p.metrics.messages_decoded == 1 and balanced(p)
    assert [pt.fields for pt in sink.points] == [{"fill_pct": 10.0}]


def test_an_exception_in_the_rules_is_a_handler_error_not_a_lost_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p, out, _, _ = make()

    def broken(*_: object) -> None:
        raise KeyError("fill_pct")

    monkeypatch.setattr(p.engine, "on_reading", broken)
    p.handle(UP, b'{"fill_pct": 10}', time.time())
    [dead] = dead_letters(out)
    assert dead["reason"] == "handler_error" and dead["device_id"] == "BIN-1"
    assert str(dead["detail"]).startswith("KeyError: 'fill_pct' (at test_pipeline_robustness.py:")
    assert balanced(p) and p.metrics.messages_decoded == 0


def test_unknown_fields_are_counted_and_never_stored() -> None:
    p, _, sink, _ = make()
    p.handle(UP, b'{"fill_pct": 10, "fw": "1.2", "open": true, "x": 3}', time.time())
    [point] = sink.points
    assert point.fields == {"fill_pct": 10.0}
    assert p.metrics.fields_dropped == 3 and balanced(p)


@pytest.mark.parametrize(
    ("ts", "ns"),
    [
        (T_ISO, T_NS),
        ("2026-11-22T08:30:00.123456+00:00", 1_795_336_200_123_456_000),
        (1_795_336_200_491, T_NS),  # epoch milliseconds
        (1_795_336_200, 1_795_336_200 * 10**9),
        (1_795_336_200.25, 1_795_336_200_250_000_000),
    ],
)
def test_stored_times_are_exact_integer_nanoseconds(ts: object, ns: int) -> None:
    p, _, sink, _ = make()
    p.handle(UP, orjson.dumps({"ts": ts, "fill_pct": 10}), 1_795_336_201.0)
    assert sink.points[0].time_ns == ns


def test_receive_time_and_event_times_are_exact() -> None:
    p, _, sink, _ = make()
    p.handle(UP, b'{"fill_pct": 95}', 1_795_336_200.491)
    telemetry, events = sink.points
    assert telemetry.time_ns == T_NS and events.time_ns == T_NS
    at = datetime(2026, 11, 22, 8, 30, 0, 491_000, tzinfo=UTC)
    ev = Event(kind="bin_full", source="device:BIN-1", started_at=at, updated_at=at)
    assert event_point(ev).time_ns == T_NS == ns_from_datetime(at.replace(tzinfo=None))
    assert ns_from_s(1_795_336_200.491) == T_NS and int(1_795_336_200.491 * 1e9) != T_NS
