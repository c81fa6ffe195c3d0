"""LoRaWAN network server topics through the pipeline without a broker: routing, dedup, counters, presets."""

from __future__ import annotations

import time

import orjson
import pytest
from pydantic import ValidationError

from devices.codecs import encode_manhole_binary
from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry
from devices.types import Device
from gateway.broker_acl import plan_users
from gateway.grids import GridIndex
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gridgate.config import GatewayConfig, VendorTopic
from gridgate.models import Event
from tests.lorawan_messages import chirpstack_event, chirpstack_topic, chirpstack_up, dumps, tts_topic, tts_up
from tests.unit.test_pipeline import Outbox, Sink

EUI = "A84041000181C7F1"
LORAWAN = {"chirpstack": {"enabled": True}, "tts": {"enabled": True}}


def make() -> tuple[Pipeline, Outbox, Sink, list[Event]]:
    registry = DeviceRegistry.from_devices(
        [
            Device(id="MH-L", type="manhole", lat=30.0, lon=120.0, codec="manhole_binary", dev_eui=EUI),
            Device(id="WG-L", type="water_gauge", lat=30.0, lon=120.0, lorawan_device_id="gauge-3"),
            Device(id="BIN-L", type="bin", lat=30.0, lon=120.0),
        ]
    )
    seen: list[Event] = []
    out, sink = Outbox(), Sink()
    engine = DeviceEngine(registry, started_at=time.time())
    metrics = GatewayMetrics()
    p = Pipeline(
        GatewayConfig(lorawan=LORAWAN), registry, engine, GridIndex("fb"), sink, out, seen.extend, metrics
    )
    return p, out, sink, seen


def dead_letters(out: Outbox) -> list[dict[str, object]]:
    return [orjson.loads(body) for topic, body in out.sent if topic == "gridgate/dead-letter"]


def balanced(p: Pipeline) -> bool:
    m = p.metrics
    return m.messages_in == m.messages_decoded + sum(m.rejected.values()) + sum(m.ignored.values())


def test_presets_subscribe_to_the_servers_filters() -> None:
    cfg = GatewayConfig(lorawan=LORAWAN)
    assert [vt.subscription for vt in cfg.all_vendor_topics()] == [
        "application/+/device/+/event/+",
        "v3/+/devices/+/up",
    ]
    assert GatewayConfig().all_vendor_topics() == []


def test_vendor_topic_patterns_are_checked() -> None:
    with pytest.raises(ValidationError, match="envelope"):
        VendorTopic(pattern="lora/{dev_eui}/{event}")
    with pytest.raises(ValidationError, match="exactly one whole segment"):
        VendorTopic(pattern="lora/{dev_eui}/{device_id}", envelope="chirpstack")
    with pytest.raises(ValidationError, match=r"lorawan\.tts\n.*exactly one whole segment"):
        GatewayConfig(lorawan={"tts": {"enabled": True, "pattern": "v3/+/devices/+/{event}"}})
    vt = VendorTopic(pattern="bridge/cs/application/+/device/{dev_eui}/event/{event}", envelope="chirpstack")
    m = vt.compile().match("bridge/cs/application/x/device/00aa/event/up")
    assert m is not None and m.group("dev_eui") == "00aa" and m.group("event") == "up"


def test_topics_route_by_the_platform_id_and_fall_back_to_the_gridgate_id() -> None:
    p, *_ = make()
    route = p.route(chirpstack_topic(EUI.lower(), "status"))  # ChirpStack writes DevEUIs lower-case
    assert route is not None and (route.device_id, route.envelope, route.event) == (
        "MH-L",
        "chirpstack",
        "status",
    )
    route = p.route(tts_topic("gauge-3"))
    assert route is not None and route.device_id == "WG-L" and route.envelope == "tts"
    route = p.route(tts_topic("BIN-L"))  # a TTS device named with its gridgate id
    assert route is not None and route.device_id == "BIN-L"
    assert p.route(tts_topic("gauge-3", "down/sent")) is None


def test_an_unknown_dev_eui_is_dead_lettered_with_the_fix() -> None:
    p, out, sink, _ = make()
    p.handle(chirpstack_topic("0000000000000001"), dumps(chirpstack_up("0000000000000001", time.time())), 1.0)
    (dl,) = dead_letters(out)
    assert dl["reason"] == "unknown_device" and "dev_eui '0000000000000001'" in str(dl["detail"])
    assert not sink.points and balanced(p)


def test_a_redelivered_uplink_is_stored_once_and_counted_as_a_duplicate() -> None:
    p, _, sink, _ = make()
    now = time.time()
    msg = dumps(chirpstack_up(EUI, now, frame=encode_manhole_binary(tilt_deg=2.0), dedup_id="d-1"))
    for _ in range(3):
        p.handle(chirpstack_topic(EUI), msg, now)
    assert len(sink.points) == 1 and p.metrics.ignored == {"duplicate": 2} and balanced(p)
    # the keys are the device's state: a restarted engine still knows the uplink
    snap = p.engine.snapshot("MH-L")
    p2, _, sink2, _ = make()
    p2.engine.restore("MH-L", snap)
    p2.handle(chirpstack_topic(EUI), msg, now)
    assert not sink2.points and p2.metrics.ignored == {"duplicate": 1}


def test_a_malformed_envelope_is_dead_lettered_and_the_next_one_stored() -> None:
    p, out, sink, _ = make()
    now = time.time()
    p.handle(chirpstack_topic(EUI), b'{"deduplicationId": 7}', now)
    p.handle(chirpstack_topic(EUI), dumps(chirpstack_up(EUI, now, frame=encode_manhole_binary())), now)
    (dl,) = dead_letters(out)
    assert (
        dl["reason"] == "bad_envelope"
        and "deduplicationId" in str(dl["detail"])
        and dl["device_id"] == "MH-L"
    )
    assert [pt.measurement for pt in sink.points] == ["telemetry"] and balanced(p)


def test_join_and_codec_errors_prove_the_device_alive() -> None:
    p, out, sink, _ = make()
    now = time.time()
    p.handle(chirpstack_topic(EUI, "join"), dumps(chirpstack_event(EUI, now, devAddr="01ab")), now)
    assert p.engine.last_seen("MH-L") == now and p.metrics.ignored == {"join": 1}
    log = chirpstack_event(EUI, now + 1, level="ERROR", code="UPLINK_CODEC", description="TypeError")
    p.handle(chirpstack_topic(EUI, "log"), dumps(log), now + 1)
    assert p.engine.last_seen("MH-L") == now + 1
    (dl,) = dead_letters(out)
    assert dl["reason"] == "server_codec_error" and "TypeError" in str(dl["detail"])
    p.handle(chirpstack_topic(EUI, "ack"), dumps(chirpstack_event(EUI, now + 2, acknowledged=True)), now + 2)
    assert p.engine.last_seen("MH-L") == now + 2  # the ack came in an uplink
    p.handle(chirpstack_topic(EUI, "txack"), dumps(chirpstack_event(EUI, now + 3, downlinkId=9)), now + 3)
    assert p.engine.last_seen("MH-L") == now + 2 and p.metrics.ignored["not_telemetry"] == 2
    assert not sink.points and balanced(p)


def test_tts_simulated_uplinks_are_ignored() -> None:
    p, out, sink, _ = make()
    now = time.time()
    sim = tts_up("gauge-3", "70B3D57ED0000003", now, decoded={"water_level_cm": 30}, simulated=True)
    p.handle(tts_topic("gauge-3"), dumps(sim), now)
    assert not sink.points and not out.sent and p.metrics.ignored == {"simulated": 1}
    p.handle(
        tts_topic("gauge-3"),
        dumps(tts_up("gauge-3", "70B3D57ED0000003", now, decoded={"water_level_cm": 3})),
        now,
    )
    (pt,) = sink.points
    assert pt.fields == {"water_level_cm": 3.0, "rssi_dbm": -35.0, "snr_db": 5.2} and balanced(p)


def test_the_broker_acl_lets_the_gateway_read_the_servers_topics_and_no_device_write_them() -> None:
    cfg = GatewayConfig(
        lorawan=LORAWAN, vendor_topics=[{"pattern": "lns/{dev_eui}/{event}", "envelope": "chirpstack"}]
    )
    p, *_ = make()
    users = {u.username: u for u in plan_users(cfg, p.registry, [], "gw")}
    assert {"application/+/device/+/event/+", "v3/+/devices/+/up", "lns/+/+"} <= set(users["gw"].read)
    assert users["MH-L"].write == ["gridgate/devices/manhole/MH-L/up", "gridgate/devices/manhole/MH-L/status"]
