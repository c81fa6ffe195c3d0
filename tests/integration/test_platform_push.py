"""CTWing and OneNET HTTP push into the real gateway: real HTTP posts to its uvicorn API, a real
Mosquitto, the embedded SQLite sink. Every documented envelope shape must store exactly the points,
events and tickets the same readings make when sent natively over MQTT."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.codecs.manhole_binary import encode_manhole_binary
from gateway.platforms.onenet import signature
from gateway.service import Gateway
from gateway.sinks.sqlite import SQLiteSink
from gridgate.config import GatewayConfig, IngestConfig
from tests.integration.push_storm import STORM_SECRET, storm, storm_devices
from tests.integration.spine_helpers import gateway_config
from tests.servers import Collector, Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration

CT_SECRET = "ct-path-secret-0123456789"
ON_SECRET = "on-path-secret-0123456789"
TOKEN = "onenet-instance-token"
AES_KEY = b"0123456789abcdef"
IMEI = "862592051651472"
CT_MH = "40edca19b0124480864366de4621de99"
CT_WG = "d01308047f864601a821e02dc328eab4"
T0 = int(time.time()) - 600  # ten minutes ago: every reading fits the time window
DEVICES: dict[str, Any] = {
    "profiles": {
        "nb_gauge": {
            "field_map": {
                "liquid_level": {"field": "water_level_cm", "scale": 0.5},
                "Battery_Level": "battery_pct",
            }
        }
    },
    "devices": [
        {
            "id": "MH-B",
            "type": "manhole",
            "lat": 30.25,
            "lon": 120.16,
            "codec": "manhole_binary",
            "imei": IMEI,
            "ctwing_device_id": CT_MH,
        },
        {
            "id": "WG-C",
            "type": "water_gauge",
            "lat": 30.24,
            "lon": 120.15,
            "profile": "nb_gauge",
            "ctwing_device_id": CT_WG,
        },
        {
            "id": "WG-O",
            "type": "water_gauge",
            "lat": 30.24,
            "lon": 120.16,
            "profile": "nb_gauge",
            "onenet_device": "test01",
        },
        {
            "id": "WG-D",
            "type": "water_gauge",
            "lat": 30.23,
            "lon": 120.16,
            "profile": "nb_gauge",
            "onenet_device": "1343760",
        },
    ],
}


def push_config(tmp: Path, broker: Mosquitto, **platforms: Any) -> GatewayConfig:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = gateway_config(
        tmp,
        broker,
        {"api": "none"},
        platforms={
            "ctwing": {"enabled": True, "secret": CT_SECRET},
            "onenet": {"enabled": True, "secret": ON_SECRET, "token": TOKEN, "aes_key": AES_KEY.decode()},
        }
        | platforms,
    )
    (tmp / "devices.yaml").write_text(yaml.safe_dump(DEVICES))  # gateway_config wrote its own there
    return cfg


# the envelopes, byte for byte in the documented shapes -------------------------------------------
def ctwing(message_type: str, device_id: str, ts_ms: int, **fields: Any) -> bytes:
    body = {
        "timestamp": ts_ms,
        "tenantId": "2000033629",
        "protocol": "lwm2m",
        "productId": "15114816",
        "messageType": message_type,
        "deviceId": device_id,
    }
    return json.dumps(body | fields).encode()


def ct_transparent(frame: bytes, ts_ms: int) -> bytes:
    return ctwing(
        "dataReport",
        CT_MH,
        ts_ms,
        upPacketSN=-1,
        upDataSN=-1,
        topic="v1/up/ad",
        serviceId="",
        payload={"APPdata": base64.b64encode(frame).decode()},
        deviceType="",
        assocAssetId="",
        IMSI="undefined",
        IMEI=IMEI,
    )


def openssl_encrypt(text: str) -> str:
    """AES-128-CBC with IV = key, PKCS7, base64, by the openssl command (not by the gateway's code)."""
    key = AES_KEY.hex()
    argv = ["openssl", "enc", "-aes-128-cbc", "-K", key, "-iv", key, "-base64", "-A"]
    return subprocess.run(argv, input=text.encode(), capture_output=True, check=True).stdout.decode().strip()


def onenet_new(msg: dict[str, Any], msg_id: str) -> bytes:
    """Secure mode: msg encrypted, signed over the ciphertext."""
    enc = openssl_encrypt(json.dumps(msg))
    sig = signature(TOKEN, "abcdefgh", enc)
    return json.dumps(
        {"msg": enc, "nonce": "abcdefgh", "signature": sig, "time": T0 * 1000, "id": msg_id}
    ).encode()


def onenet_old(item: dict[str, Any]) -> bytes:
    text = json.dumps(item)
    sig = signature(TOKEN, "n0nce123", text)
    return ('{"msg": ' + text + ', "msg_signature": "' + sig + '", "nonce": "n0nce123"}').encode()


def ms(s: int) -> int:
    return (T0 + s) * 1000


def up(device: str, obj: dict[str, Any]) -> tuple[str, bytes]:
    return f"gridgate/devices/water_gauge/{device}/up", json.dumps(obj).encode()


def status(device: str, text: bytes) -> tuple[str, bytes]:
    return f"gridgate/devices/water_gauge/{device}/status", text


def on_property(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "productId": "C6z4Zk012B",
        "deviceId": 1343759,
        "deviceName": "test01",
        "messageType": "notify",
        "notifyType": "property",
        "data": {"id": "1", "version": "1.0", "params": params},
    }


def on_life(state: str, s: int) -> dict[str, Any]:
    return {
        "productId": "C6z4Zk012B",
        "deviceId": 1343760,
        "deviceName": "gauge-d",
        "messageType": "lifeCycle",
        "data": {"status": state, "time": ms(s)},
    }


def on_event(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "deviceName": "test01",
        "messageType": "notify",
        "notifyType": "event",
        "data": {"params": params},
    }


def scenario() -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """(route, push body, the same reading as native MQTT messages), in order."""
    opened = encode_manhole_binary(
        msg_type=2, open=True, tilt_deg=3.5, water_level_cm=12.3, battery_pct=64, ts=T0 + 1
    )
    closed = encode_manhole_binary(tilt_deg=2.0, water_level_cm=1.0, battery_pct=63, rssi_dbm=-90, ts=T0 + 2)
    manhole = "gridgate/devices/manhole/MH-B/up"
    service = {"serviceId": "notification", "serviceData": {"liquid_level": 42, "Battery_Level": 90}}
    command = {"resultDetail": "", "resultCode": "DELIVERED"}
    level = {"liquid_level": {"time": ms(10), "value": 50}, "Battery_Level": {"time": ms(10), "value": 15}}
    overflow = {"overflow": {"eventType": "warning", "time": ms(13), "value": {"liquid_level": 60}}}
    point = {
        "at": ms(14),
        "type": 1,
        "value": 8,
        "dev_id": 1343760,
        "ds_id": "liquid_level",
        "imei": "861111111111111",
    }
    offline = {"at": ms(15), "type": 2, "status": 0, "dev_id": 1343760, "login_type": 10}
    return [
        ("ctwing", ct_transparent(opened, ms(1)), [(manhole, opened)]),
        ("ctwing", ct_transparent(closed, ms(2)), [(manhole, closed)]),
        (
            "ctwing",
            ctwing("dataReport", CT_WG, ms(3), serviceId=1, topic="v1/up/ad19", payload={"liquid_level": 40}),
            [up("WG-C", {"ts": T0 + 3, "water_level_cm": 20.0})],
        ),
        (
            "ctwing",
            ctwing("dataReport", CT_WG, ms(4), serviceId="", payload=service),
            [up("WG-C", {"ts": T0 + 4, "water_level_cm": 21.0, "battery_pct": 90})],
        ),
        (
            "ctwing",
            ctwing(
                "eventReport", CT_WG, ms(5), eventType=2, serviceId=1002, eventContent={"liquid_level": 44}
            ),
            [up("WG-C", {"ts": T0 + 5, "water_level_cm": 22.0})],
        ),
        (
            "ctwing",
            ctwing("deviceOnlineOfflineReport", CT_WG, ms(6), eventType=0),
            [status("WG-C", b"offline")],
        ),
        (
            "ctwing",
            ctwing("deviceOnlineOfflineReport", CT_WG, ms(7), eventType=1),
            [status("WG-C", b"online")],
        ),
        ("ctwing", ctwing("commandResponse", CT_WG, ms(8), taskId=1, result=command), []),
        (
            "onenet",
            onenet_new(on_property(level), "m-1"),
            [up("WG-O", {"ts": T0 + 10, "water_level_cm": 25.0, "battery_pct": 15})],
        ),
        ("onenet", onenet_new(on_life("offline", 11), "m-2"), [status("WG-D", b"offline")]),
        ("onenet", onenet_new(on_life("online", 12), "m-3"), [status("WG-D", b"online")]),
        (
            "onenet",
            onenet_new(on_event(overflow), "m-4"),
            [up("WG-O", {"ts": T0 + 13, "water_level_cm": 30.0})],
        ),
        ("onenet", onenet_old(point), [up("WG-D", {"ts": T0 + 14, "water_level_cm": 4.0})]),
        ("onenet", onenet_old(offline), [status("WG-D", b"offline")]),
    ]


def post(gw: Gateway, route: str, body: bytes, secret: str | None = None) -> httpx.Response:
    secret = secret or (CT_SECRET if route == "ctwing" else ON_SECRET)
    return httpx.post(
        f"{gw.api_url}/ingest/{route}/{secret}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def stored(cfg: GatewayConfig) -> tuple[list[Any], Counter[Any]]:
    """Telemetry points exactly; event points without their ids (ULIDs) and times of status changes."""
    sink = SQLiteSink(cfg.storage.timeseries_db)
    try:
        telemetry = [(p.tags, p.fields, p.time_ns) for p in sink.query("telemetry", limit=None)]
        events = Counter(
            (
                tuple(sorted(p.tags.items())),
                tuple(sorted((k, v) for k, v in p.fields.items() if k != "event_id")),
            )
            for p in sink.query("events", limit=None)
        )
    finally:
        sink.close()
    return sorted(telemetry, key=lambda t: (t[2], t[0]["device_id"])), events


def tickets(gw: Gateway) -> Counter[tuple[str, str, tuple[str, ...]]]:
    rows = httpx.get(f"{gw.api_url}/api/v1/tickets", params={"limit": 100}, timeout=10).json()
    return Counter((t["category"], t["grid_id"], tuple(t["sources"])) for t in rows)


def test_every_envelope_stores_what_the_same_reading_stores_over_mqtt(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    steps = scenario()
    push_cfg = push_config(tmp_path / "push", mosquitto)
    with Gateway(push_cfg) as gw:
        # OneNET's URL check: the msg echoed once the signature holds
        check = {
            "msg": "ping-123",
            "nonce": "abcdefgh",
            "signature": signature(TOKEN, "abcdefgh", "ping-123"),
        }
        got = httpx.get(f"{gw.api_url}/ingest/onenet/{ON_SECRET}", params=check, timeout=10)
        assert (got.status_code, got.text, got.headers["content-type"].split(";")[0]) == (
            200,
            "ping-123",
            "text/plain",
        )
        bad = httpx.get(
            f"{gw.api_url}/ingest/onenet/{ON_SECRET}", params=check | {"signature": "AAAA"}, timeout=10
        )
        assert bad.status_code == 403 and "signature" in bad.json()["detail"]
        for route, body, _ in steps:
            answer = post(gw, route, body)
            assert answer.status_code == 200, (route, answer.text)
            assert answer.json()["dead_lettered"] == 0, answer.text
        assert gw.flush(20)
        wait_until(lambda: len(tickets(gw)) >= 2, timeout=15)
        push_tickets = tickets(gw)
        metrics = httpx.get(f"{gw.api_url}/metrics", timeout=10).text
        assert 'gridgate_push_noted_total{platform="ctwing",what="commandResponse"} 1.0' in metrics
        assert 'gridgate_push_auth_failures_total{platform="onenet",reason="signature"} 1.0' in metrics
        assert 'gridgate_push_requests_total{code="200",platform="ctwing"} 8.0' in metrics
    mqtt_cfg = push_config(tmp_path / "mqtt", mosquitto)
    with Gateway(mqtt_cfg) as gw:
        n = 0
        for _, _, natives in steps:
            for topic, payload in natives:
                pub(mosquitto, topic, payload)
                n += 1
        wait_until(lambda: gw.metrics.messages_in >= n, timeout=20)
        assert gw.flush(20)
        wait_until(lambda: tickets(gw) == push_tickets, timeout=15)
    push_points, push_events = stored(push_cfg)
    mqtt_points, mqtt_events = stored(mqtt_cfg)
    assert len(push_points) == 8 and push_points == mqtt_points
    assert push_events == mqtt_events and sum(push_events.values()) >= 4
    assert {c for c, _, _ in push_tickets} >= {"manhole_open", "water_high"}


@pytest.mark.parametrize("workers", [0, 1])
def test_retries_are_stored_once_even_after_a_restart(
    mosquitto: Mosquitto, tmp_path: Path, workers: int
) -> None:
    cfg = push_config(tmp_path, mosquitto).model_copy(update={"ingest": IngestConfig(workers=workers)})
    frame = encode_manhole_binary(tilt_deg=4.0, ts=T0 + 30)
    body = ct_transparent(frame, (T0 + 30) * 1000)
    old = onenet_old(
        {"at": (T0 + 31) * 1000, "type": 1, "value": 8, "dev_id": 1343760, "ds_id": "liquid_level"}
    )
    with Gateway(cfg) as gw:
        answers = [post(gw, "ctwing", body).json() for _ in range(4)] + [
            post(gw, "onenet", old).json() for _ in range(3)
        ]
        assert [a["duplicate"] for a in answers] == [False, True, True, True, False, True, True]
        assert gw.flush(20)
    with Gateway(cfg) as gw:  # a retry after a restart (CTWing's 4th, OneNET's 17th) is known too
        assert post(gw, "ctwing", body).json()["duplicate"] is True
        assert post(gw, "onenet", old).json()["duplicate"] is True
        metrics = httpx.get(f"{gw.api_url}/metrics", timeout=10).text
        assert 'gridgate_push_duplicates_total{platform="ctwing"} 1.0' in metrics
        assert gw.flush(20)
    points, _ = stored(cfg)
    assert Counter(p[0]["device_id"] for p in points) == {"MH-B": 1, "WG-D": 1}


def test_a_push_answered_but_not_yet_handled_is_replayed_at_the_next_start(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg = push_config(tmp_path, mosquitto)
    with Gateway(cfg) as gw:
        gw.push_queue.stop()  # the pipeline is busy: the push waits in the journal
        body = ctwing("dataReport", CT_WG, (T0 + 40) * 1000, payload={"liquid_level": 8})
        assert post(gw, "ctwing", body).status_code == 200
        assert gw.checkpoint()  # a checkpoint never claims a queued push
    with Gateway(cfg) as gw:
        assert gw.replayed == 1
        assert gw.flush(20)
    points, _ = stored(cfg)
    assert [(p[0]["device_id"], p[1]) for p in points] == [("WG-C", {"water_level_cm": 4.0})]


def test_wrong_secrets_bad_signatures_and_bad_bodies(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = push_config(tmp_path, mosquitto)
    with Gateway(cfg) as gw, Collector.on(mosquitto, "gridgate/dead-letter") as dead:
        good = ctwing("dataReport", CT_WG, (T0 + 50) * 1000, payload={"liquid_level": 8})
        refused = post(gw, "ctwing", good, secret="not-the-secret")
        assert refused.status_code == 401 and "secret" in refused.json()["detail"]
        assert CT_SECRET not in refused.text
        unsigned = json.dumps({"msg": "{}", "nonce": "abcdefgh", "signature": "bogus", "id": "9"}).encode()
        assert post(gw, "onenet", unsigned).status_code == 403
        assert post(gw, "ctwing", b"x" * (cfg.platforms.max_body_bytes + 1)).status_code == 413
        # permanently bad bodies: 200 (a retry would not help), dead-lettered with the reason
        unknown = ctwing(
            "dataReport",
            "no-such-device",
            (T0 + 51) * 1000,
            payload={"APPdata": "AQ=="},
            IMEI="869999999999999",
        )
        for body in (
            unknown,
            b"{not json",
            ctwing("dataReport", CT_WG, (T0 + 52) * 1000, payload={"APPdata": 5}),
        ):
            answer = post(gw, "ctwing", body)
            assert answer.status_code == 200 and answer.json()["dead_lettered"] == 1
        letters = dead.wait_count(3)
        first = letters[0].json()
        assert first["reason"] == "unknown_device" and "`imei: 869999999999999`" in first["detail"]
        assert first["topic"] == "push/ctwing"
        assert {m.json()["reason"] for m in letters} == {"unknown_device", "not_json", "wrong_type"}
        assert post(gw, "ctwing", good).json()["accepted"] == 1  # the next message is undisturbed
        metrics = httpx.get(f"{gw.api_url}/metrics", timeout=10).text
        assert 'gridgate_push_auth_failures_total{platform="ctwing",reason="secret"} 1.0' in metrics
        assert 'gridgate_messages_rejected_total{reason="unknown_device"} 1.0' in metrics
        assert gw.flush(20)


def test_a_source_over_its_rate_gets_429(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = push_config(
        tmp_path,
        mosquitto,
        ctwing={"enabled": True, "secret": CT_SECRET, "rate_limit_per_s": 0.01, "rate_burst": 3},
    )
    with Gateway(cfg) as gw:
        codes = [post(gw, "ctwing", ctwing("commandResponse", CT_WG, i)).status_code for i in range(4)]
        assert codes == [200, 200, 200, 429]


HOSTILE_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["msg", "messageType", "deviceId", "payload", "APPdata", "IMEI", "data", "params", "id", "x"]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=15,
)


def test_hostile_bodies_never_get_a_500_nor_stop_the_gateway(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = push_config(tmp_path, mosquitto, onenet={"enabled": True, "secret": ON_SECRET})
    with Gateway(cfg) as gw, httpx.Client(base_url=gw.api_url, timeout=10) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            body=st.one_of(st.binary(max_size=300), HOSTILE_JSON.map(lambda v: json.dumps(v).encode())),
            route=st.sampled_from(["ctwing", "onenet"]),
        )
        def hostile(body: bytes, route: str) -> None:
            secret = CT_SECRET if route == "ctwing" else ON_SECRET
            answer = client.post(f"/ingest/{route}/{secret}", content=body)
            assert answer.status_code == 200, answer.text

        hostile()
        good = ctwing("dataReport", CT_WG, (T0 + 60) * 1000, payload={"liquid_level": 8})
        assert client.post(f"/ingest/ctwing/{CT_SECRET}", content=good).json()["accepted"] == 1
        assert gw.flush(20)
        assert gw.health().status in ("ok", "degraded") and gw.push_queue.handed_over >= 1


@pytest.mark.slow
def test_a_push_storm_is_answered_200_and_every_message_stored_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The correctness half of bench/push_storm.py (which measures 20,000 pushes' latency)."""
    n, devices = 2000, 200
    cfg = push_config(
        tmp_path,
        mosquitto,
        ctwing={"enabled": True, "secret": STORM_SECRET, "rate_limit_per_s": 1e6, "rate_burst": 10**6},
    )
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump({"devices": storm_devices(devices)}))
    with Gateway(cfg) as gw:
        url = f"{gw.api_url}/ingest/ctwing/{STORM_SECRET}"
        result = storm(url, n, devices, T0 * 1000, repeat_first=100, connections=32)
        assert result.codes == {200: n + 100}, result.summary()
        assert gw.flush(30)
    points, _ = stored(cfg)
    assert len(points) == n
    assert len({(p[0]["device_id"], p[2]) for p in points}) == n  # every message once, none twice
