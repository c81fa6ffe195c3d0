"""The platform push parsers (CTWing, OneNET), their signature and AES helpers, dedup and rate limits."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.manhole_binary import encode_manhole_binary
from devices.registry import DeviceRegistry
from devices.types import Device
from gateway.platforms.ctwing import parse_ctwing
from gateway.platforms.dedup import PushDedup
from gateway.platforms.onenet import SignatureError, check_signature, decrypt, parse_onenet, signature
from gateway.platforms.ratelimit import SourceBuckets
from gateway.platforms.receiver import PushReceiver
from gridgate.clock import SystemClock
from gridgate.config import ConfigError, GatewayConfig, PlatformsConfig
from gridgate.topics import Topics

IMEI = "862592051651472"
CT_ID = "40edca19b0124480864366de4621de99"
TOPICS = Topics()
REGISTRY = DeviceRegistry.from_devices(
    [
        Device(id="MH-B", type="manhole", lat=30.2, lon=120.1, codec="manhole_binary", imei=IMEI),
        Device(id="WG-1", type="water_gauge", lat=30.2, lon=120.1, profile="gauge", ctwing_device_id=CT_ID),
        Device(id="WG-2", type="water_gauge", lat=30.2, lon=120.1, profile="gauge", onenet_device="test01"),
        Device(id="WG-3", type="water_gauge", lat=30.2, lon=120.1, profile="gauge", onenet_device="1343760"),
    ],
    {
        "gauge": {
            "field_map": {
                "liquid_level": {"field": "water_level_cm", "scale": 0.1},
                "Battery_Level": "battery_pct",
            }
        }
    },
)


def ct(**fields: Any) -> bytes:
    base = {
        "timestamp": 1650554828842,
        "tenantId": "2000033629",
        "protocol": "lwm2m",
        "productId": "15114816",
    }
    return json.dumps(base | fields).encode()


def native(payload: bytes) -> dict[str, Any]:
    return json.loads(payload)


# CTWing ------------------------------------------------------------------------------------------
def test_ctwing_transparent_data_report_carries_the_devices_own_bytes() -> None:
    frame = encode_manhole_binary(tilt_deg=3.5, water_level_cm=12.3, battery_pct=64)
    body = ct(
        messageType="dataReport",
        topic="v1/up/ad",
        serviceId="",
        payload={"APPdata": base64.b64encode(frame).decode()},
        deviceType="",
        deviceId="ffff0000ffff0000ffff0000ffff0000",
        IMSI="undefined",
        IMEI=IMEI,
        upPacketSN=-1,
    )
    parsed = parse_ctwing(body, REGISTRY, TOPICS)
    assert [(m.topic, m.payload) for m in parsed.messages] == [("gridgate/devices/manhole/MH-B/up", frame)]
    assert not parsed.problems and parsed.key


@pytest.mark.parametrize(
    "payload",
    [
        {"liquid_level": 402},
        {"serviceId": "notification", "serviceData": {"liquid_level": 402, "Battery_Level": 90}},
    ],
    ids=["flat", "serviceData"],
)
def test_ctwing_object_model_goes_through_the_field_map_with_the_platform_time(
    payload: dict[str, Any],
) -> None:
    body = ct(messageType="dataReport", serviceId=1, topic="v1/up/ad19", payload=payload, deviceId=CT_ID)
    [msg] = parse_ctwing(body, REGISTRY, TOPICS).messages
    assert msg.topic == "gridgate/devices/water_gauge/WG-1/up"
    got = native(msg.payload)
    assert got["water_level_cm"] == pytest.approx(40.2) and got["ts"] == 1650554828.842
    assert got.get("battery_pct", 90) == 90


def test_ctwing_event_report_is_a_reading_and_its_type_is_noted() -> None:
    body = ct(
        messageType="eventReport",
        eventType=2,
        eventContent={"liquid_level": 300},
        deviceId=CT_ID,
        serviceId=1002,
    )
    parsed = parse_ctwing(body, REGISTRY, TOPICS)
    assert native(parsed.messages[0].payload) == {"water_level_cm": 30.0, "ts": 1650554828.842}
    assert [n.what for n in parsed.noted] == ["eventReport/warning"]


@pytest.mark.parametrize(("event_type", "status"), [(1, b"online"), (0, b"offline")])
def test_ctwing_online_offline_is_a_status_message(event_type: int, status: bytes) -> None:
    body = ct(
        messageType="deviceOnlineOfflineReport", iccid="undefined", eventType=event_type, deviceId=CT_ID
    )
    [msg] = parse_ctwing(body, REGISTRY, TOPICS).messages
    assert (msg.topic, msg.payload) == ("gridgate/devices/water_gauge/WG-1/status", status)


def test_ctwing_command_response_is_noted_not_an_error() -> None:
    body = ct(
        messageType="commandResponse",
        taskId=1,
        result={"resultDetail": "", "resultCode": "DELIVERED"},
        deviceId=CT_ID,
    )
    parsed = parse_ctwing(body, REGISTRY, TOPICS)
    assert (
        [n.what for n in parsed.noted] == ["commandResponse"] and not parsed.messages and not parsed.problems
    )
    assert "task_id=1 result=DELIVERED" in parsed.noted[0].detail


def test_ctwing_unknown_device_names_the_ids_and_the_fix() -> None:
    body = ct(messageType="dataReport", payload={"APPdata": "AA=="}, deviceId="nope", IMEI="111111111111111")
    [problem] = parse_ctwing(body, REGISTRY, TOPICS).problems
    assert problem.reason is RejectReason.unknown_device
    assert "`imei: 111111111111111`" in problem.detail and "`ctwing_device_id: nope`" in problem.detail


def test_ctwing_bad_base64_and_bad_envelopes_are_problems_with_reasons() -> None:
    bad_b64 = parse_ctwing(
        ct(messageType="dataReport", payload={"APPdata": "!!"}, IMEI=IMEI, deviceId="x"), REGISTRY, TOPICS
    )
    assert bad_b64.problems[0].reason is RejectReason.bad_payload and "APPdata" in bad_b64.problems[0].detail
    assert bad_b64.problems[0].device_id == "MH-B"
    assert parse_ctwing(b"not json", REGISTRY, TOPICS).problems[0].reason is RejectReason.not_json
    assert parse_ctwing(b"[1]", REGISTRY, TOPICS).problems[0].reason is RejectReason.wrong_type
    missing = parse_ctwing(b'{"messageType": "dataReport"}', REGISTRY, TOPICS).problems[0]
    assert missing.reason is RejectReason.bad_payload and "deviceId" in missing.detail
    odd = parse_ctwing(
        ct(messageType="deviceOnlineOfflineReport", eventType=7, deviceId=CT_ID), REGISTRY, TOPICS
    )
    assert "eventType" in odd.problems[0].detail


def test_ctwing_retry_key_is_the_same_for_a_retry_and_differs_for_another_message() -> None:
    one = ct(messageType="dataReport", payload={"liquid_level": 1}, deviceId=CT_ID, upPacketSN=-1)
    again = json.dumps(dict(reversed(list(json.loads(one).items())))).encode()  # same fields, other order
    later = ct(messageType="dataReport", payload={"liquid_level": 1}, deviceId=CT_ID, timestamp=1650554828843)
    other = ct(messageType="dataReport", payload={"liquid_level": 2}, deviceId=CT_ID)
    keys = [parse_ctwing(b, REGISTRY, TOPICS).key for b in (one, again, later, other)]
    assert keys[0] == keys[1] and len(set(keys)) == 3


# OneNET ------------------------------------------------------------------------------------------
TOKEN = "gridgate-test-token"


def test_signature_is_base64_of_the_md5_of_token_nonce_msg() -> None:
    expected = base64.b64encode(hashlib.md5(b"gridgate-test-tokenabcdefghhello").digest()).decode()
    assert signature(TOKEN, "abcdefgh", "hello") == expected
    check_signature(TOKEN, "abcdefgh", "hello", expected)
    check_signature(TOKEN, "abcdefgh", "hello", expected.replace("+", " "))  # '+' unescaped in a query
    for nonce, msg, sent in [
        ("abcdefgh", "hellO", expected),
        ("abcdefgi", "hello", expected),
        ("abcdefgh", "hello", None),
    ]:
        with pytest.raises(SignatureError):
            check_signature(TOKEN, nonce, msg, sent)


def openssl_encrypt(key: bytes, text: str) -> str:
    """AES-128-CBC, IV = key, PKCS7, base64: computed by the openssl command, not by our code."""
    hexkey = key.hex()
    out = subprocess.run(
        ["openssl", "enc", "-aes-128-cbc", "-K", hexkey, "-iv", hexkey, "-base64", "-A"],
        input=text.encode(),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
AES_KEY = b"0123456789abcdef"


@needs_openssl
def test_decrypt_reads_what_openssl_encrypted_with_the_key_as_iv() -> None:
    text = json.dumps({"messageType": "lifeCycle", "note": "雨水井 " * 10})
    assert decrypt(AES_KEY, openssl_encrypt(AES_KEY, text)) == text
    with pytest.raises(DecodeError, match="aes_key"):
        decrypt(b"fedcba9876543210", openssl_encrypt(AES_KEY, text))
    with pytest.raises(DecodeError, match="aes_key"):
        decrypt(AES_KEY, "not base64!")


def new_body(msg: dict[str, Any] | str, *, token: str | None = None, msg_id: str = "3799902") -> bytes:
    text = msg if isinstance(msg, str) else json.dumps(msg)
    nonce = "abcdefgh"
    sig = signature(token, nonce, text) if token else "unsigned"
    return json.dumps(
        {"msg": text, "nonce": nonce, "signature": sig, "time": 1631522002600, "id": msg_id}
    ).encode()


PROPERTY = {
    "productId": "C6z4Zk012B",
    "deviceId": 1343759,
    "deviceName": "test01",
    "messageType": "notify",
    "notifyType": "property",
    "data": {
        "id": "1631522002438",
        "version": "1.0",
        "params": {"liquid_level": {"time": 1631522002543, "value": 120}},
    },
}


def test_onenet_property_notify_becomes_a_reading_at_its_time() -> None:
    parsed = parse_onenet(new_body(PROPERTY), REGISTRY, TOPICS, None, None)
    [msg] = parsed.messages
    assert msg.topic == "gridgate/devices/water_gauge/WG-2/up"
    assert native(msg.payload) == {"water_level_cm": 12.0, "ts": 1631522002.543}


def test_onenet_signed_push_is_checked_and_a_wrong_signature_refused() -> None:
    assert parse_onenet(new_body(PROPERTY, token=TOKEN), REGISTRY, TOPICS, TOKEN, None).messages
    with pytest.raises(SignatureError):
        parse_onenet(new_body(PROPERTY, token="another-token-entirely"), REGISTRY, TOPICS, TOKEN, None)
    with pytest.raises(SignatureError):
        parse_onenet(new_body(PROPERTY), REGISTRY, TOPICS, TOKEN, None)


@needs_openssl
def test_onenet_secure_mode_is_decrypted_after_the_signature_over_the_ciphertext() -> None:
    enc = openssl_encrypt(AES_KEY, json.dumps(PROPERTY))
    parsed = parse_onenet(new_body(enc, token=TOKEN), REGISTRY, TOPICS, TOKEN, AES_KEY)
    assert native(parsed.messages[0].payload)["water_level_cm"] == 12.0
    wrong_key = parse_onenet(new_body(enc), REGISTRY, TOPICS, None, b"fedcba9876543210")
    assert wrong_key.problems[0].reason is RejectReason.bad_payload and wrong_key.key is not None


@pytest.mark.parametrize(("status", "payload"), [("online", b"online"), ("offline", b"offline")])
def test_onenet_life_cycle_is_a_status_message(status: str, payload: bytes) -> None:
    msg = {
        "productId": "C6z4Zk012B",
        "deviceId": 1343760,
        "deviceName": "x",
        "messageType": "lifeCycle",
        "data": {"status": status, "time": 1631521919234},
    }
    [out] = parse_onenet(new_body(msg), REGISTRY, TOPICS, None, None).messages
    assert (out.topic, out.payload) == ("gridgate/devices/water_gauge/WG-3/status", payload)


def test_onenet_event_is_a_reading_and_reply_is_noted() -> None:
    event = {
        "deviceName": "test01",
        "messageType": "notify",
        "notifyType": "event",
        "data": {
            "params": {
                "overflow": {"eventType": "alarm", "time": 1631522002543, "value": {"liquid_level": 250}}
            }
        },
    }
    parsed = parse_onenet(new_body(event), REGISTRY, TOPICS, None, None)
    assert native(parsed.messages[0].payload) == {"water_level_cm": 25.0, "ts": 1631522002.543}
    assert [n.what for n in parsed.noted] == ["event"] and "alarm" in parsed.noted[0].detail
    reply = {"deviceName": "test01", "messageType": "reply", "callType": "sync", "response": {"code": 200}}
    assert [n.what for n in parse_onenet(new_body(reply), REGISTRY, TOPICS, None, None).noted] == ["reply"]
    odd = reply | {"messageType": "x" * 500}  # a metric label never carries the platform's free text
    assert [n.what for n in parse_onenet(new_body(odd), REGISTRY, TOPICS, None, None).noted] == ["other"]


def test_onenet_old_datastream_format_and_its_signature_over_the_msg_text_as_sent() -> None:
    msg_text = '{"at": 1631522002543, "type": 1, "value": 95, "dev_id": 1343760, "ds_id": "liquid_level"}'
    sig = signature(TOKEN, "n0nce123", msg_text)
    body = ('{"msg": ' + msg_text + ', "msg_signature": "' + sig + '", "nonce": "n0nce123"}').encode()
    [msg] = parse_onenet(body, REGISTRY, TOPICS, TOKEN, None).messages
    assert native(msg.payload) == {"water_level_cm": 9.5, "ts": 1631522002.543}
    status = {"msg": {"at": 1, "type": 2, "status": 0, "dev_id": 1343760}, "msg_signature": "x", "nonce": "n"}
    [off] = parse_onenet(json.dumps(status).encode(), REGISTRY, TOPICS, None, None).messages
    assert off.payload == b"offline"
    with pytest.raises(SignatureError):
        parse_onenet(body.replace(b"95", b"96"), REGISTRY, TOPICS, TOKEN, None)


def test_onenet_retry_keys_are_the_id_or_the_data_points() -> None:
    assert (
        parse_onenet(new_body(PROPERTY), REGISTRY, TOPICS, None, None).key
        == parse_onenet(new_body(PROPERTY | {"extra": 1}), REGISTRY, TOPICS, None, None).key
    )  # the same id
    assert (
        parse_onenet(new_body(PROPERTY, msg_id="1"), REGISTRY, TOPICS, None, None).key
        != parse_onenet(new_body(PROPERTY, msg_id="2"), REGISTRY, TOPICS, None, None).key
    )
    old = {"msg": {"at": 5, "type": 1, "value": 1, "dev_id": 9, "ds_id": "a"}, "nonce": "n"}
    other = {"msg": {"at": 6, "type": 1, "value": 1, "dev_id": 9, "ds_id": "a"}, "nonce": "n"}
    assert (
        parse_onenet(orjson.dumps(old), REGISTRY, TOPICS, None, None).key
        != parse_onenet(orjson.dumps(other), REGISTRY, TOPICS, None, None).key
    )


# hostile input -----------------------------------------------------------------------------------
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
KEYS = [
    "messageType",
    "deviceId",
    "IMEI",
    "timestamp",
    "payload",
    "eventType",
    "eventContent",
    "msg",
    "nonce",
    "signature",
    "id",
    "data",
    "params",
    "APPdata",
    "serviceData",
]
ENVELOPE = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=200), JSON.map(orjson.dumps), ENVELOPE.map(orjson.dumps)))
def test_parsers_never_raise_on_hostile_bodies(body: bytes) -> None:
    for parsed in (parse_ctwing(body, REGISTRY, TOPICS), parse_onenet(body, REGISTRY, TOPICS, None, AES_KEY)):
        assert all(isinstance(p.reason, RejectReason) and p.detail for p in parsed.problems)
    with pytest.raises(SignatureError) if _signed_shape(body) else _nothing():
        parse_onenet(body, REGISTRY, TOPICS, TOKEN, None)


def _signed_shape(body: bytes) -> bool:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and type(doc.get("msg", doc.get("enc_msg"))) in (str, dict, list)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


# dedup and rate limits ---------------------------------------------------------------------------
def test_dedup_keys_survive_a_reopen_and_expire_after_the_ttl(tmp_path: Path) -> None:
    path = tmp_path / "push_dedup.sqlite"
    dedup = PushDedup(path, ttl_s=100, max_keys=1000, now=0)
    dedup.add("a", now=10)
    assert dedup.seen("a", now=50) and not dedup.seen("b", now=50)
    dedup.close()
    again = PushDedup(path, ttl_s=100, max_keys=1000, now=60)
    assert again.seen("a", now=60) and not again.seen("a", now=111)
    again.close()
    assert len(PushDedup(path, ttl_s=100, max_keys=1000, now=200)) == 0


def test_dedup_forgets_the_oldest_beyond_its_bound(tmp_path: Path) -> None:
    dedup = PushDedup(tmp_path / "d.sqlite", ttl_s=1000, max_keys=1000, now=0)
    for i in range(1500):
        dedup.add(f"k{i}", now=i / 100)
    assert len(dedup) <= 1000 and dedup.seen("k1499", now=15) and not dedup.seen("k0", now=15)


def test_source_buckets_allow_a_burst_then_the_rate() -> None:
    buckets = SourceBuckets(rate_per_s=10, burst=5)
    assert [buckets.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert buckets.allow("b", 0.0)  # each source its own bucket
    assert buckets.allow("a", 0.1) and not buckets.allow("a", 0.1)


# configuration -----------------------------------------------------------------------------------
def receiver(tmp_path: Path, **platforms: Any) -> PushReceiver:
    return PushReceiver(
        PlatformsConfig.model_validate(platforms),
        registry=REGISTRY,
        topics=TOPICS,
        data_dir=tmp_path,
        clock=SystemClock(),
        journal=lambda messages: None,
        reject=lambda rejection, now: None,
    )


def test_an_enabled_platform_needs_its_path_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="secret"):
        GatewayConfig(platforms={"ctwing": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"platforms\.ctwing\.secret: missing or shorter than 16"):
        receiver(tmp_path, ctwing={"enabled": True, "secret": "short"})
    with pytest.raises(ConfigError, match=r"platforms\.ctwing\.secret"):
        receiver(tmp_path, ctwing={"enabled": True, "secret_env": "GRIDGATE_TEST_UNSET_SECRET"})
    monkeypatch.setenv("GRIDGATE_TEST_CT_SECRET", "from-the-environment-123")
    push = receiver(tmp_path, ctwing={"enabled": True, "secret_env": "GRIDGATE_TEST_CT_SECRET"})
    assert push.platforms == ["ctwing"]
    assert push.admit("ctwing", "from-the-environment-123", "10.0.0.1") is None
    refused = push.admit("ctwing", "from-the-environment-124", "10.0.0.1")
    assert refused is not None and refused.status == 401 and "from-the" not in (refused.detail or "")
    push.close()


def test_the_onenet_aes_key_must_be_an_aes_key(tmp_path: Path) -> None:
    on = {"enabled": True, "secret": "a-long-enough-secret", "aes_key": "12345"}
    with pytest.raises(ConfigError, match=r"platforms\.onenet\.aes_key: 5 bytes, expected 16"):
        receiver(tmp_path, onenet=on)
    push = receiver(tmp_path, onenet=on | {"aes_key": AES_KEY.decode(), "token": TOKEN})
    assert push.onenet_aes_key == AES_KEY and push.onenet_token == TOKEN
    assert push.verify_onenet("hi", "abcdefgh", signature(TOKEN, "abcdefgh", "hi")).text == "hi"
    assert push.verify_onenet("hi", "abcdefgh", "bogus").status == 403
    assert push.verify_onenet(None, None, None).status == 400
    push.close()
