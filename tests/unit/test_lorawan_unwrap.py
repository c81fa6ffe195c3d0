"""The LoRaWAN envelope unwrap: ChirpStack v4 and TTS v3 JSON in their documented shapes, and hostile ones."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.codecs import DecodeError, RejectReason, encode_manhole_binary
from devices.registry import Profile
from devices.types import Device
from gateway.platforms.lorawan import (
    IgnoreReason,
    Radio,
    Uplink,
    prefers_server_decoded,
    readings_of,
    unwrap,
)
from gridgate.config import LimitsConfig
from tests.lorawan_messages import chirpstack_event, chirpstack_up, dumps, tts_up

EUI = "0101010101010101"
CS_ID = ("dev_eui", EUI)
TTS_ID = ("lorawan_device_id", "cover-7")
NOW = time.time()
FRAME = encode_manhole_binary(open=True, tilt_deg=3.5, water_level_cm=12.3, battery_pct=64, ts=int(NOW) - 60)
COVER = Device(id="MH-L", type="manhole", lat=30.25, lon=120.15, codec="manhole_binary", dev_eui=EUI)
GAUGE = Device(id="WG-L", type="water_gauge", lat=30.24, lon=120.15, lorawan_device_id="cover-7")
LIMITS = LimitsConfig()


def cs(event: str, msg: dict[str, Any], prefer: bool = False) -> Uplink:
    return unwrap("chirpstack", event, dumps(msg), prefer_decoded=prefer, topic_id=CS_ID)


def tts(msg: dict[str, Any], prefer: bool = False, event: str = "up") -> Uplink:
    return unwrap("tts", event, dumps(msg), prefer_decoded=prefer, topic_id=TTS_ID)


def test_chirpstack_up_documented_shape_with_zero_fields_omitted() -> None:
    msg = chirpstack_up(EUI, NOW, frame=FRAME, rx=((-110, -3.5), (-36, 0.0)), dedup_id="3ac7e3c4")
    assert "fCnt" not in msg and "snr" not in msg["rxInfo"][1]  # what the server leaves out
    up = cs("up", msg)
    assert up.frame == FRAME and up.properties is None and up.ignored is None
    assert up.radio == Radio(-36.0, 0.0)  # the best gateway by RSSI, its omitted SNR is 0
    assert up.dedup_key == "up:3ac7e3c4"
    assert up.time_s == pytest.approx(NOW, abs=1e-6)  # nanoseconds kept to the microsecond


def test_chirpstack_object_is_used_only_when_the_codec_reads_text_or_the_profile_says_so() -> None:
    msg = chirpstack_up(EUI, NOW, frame=FRAME, obj={"level": 12.5})
    assert cs("up", msg).frame == FRAME
    assert cs("up", msg, prefer=True).properties == {"level": 12.5}
    assert prefers_server_decoded("auto", None) and not prefers_server_decoded("manhole_binary", None)
    assert prefers_server_decoded("manhole_binary", Profile(server_decoded=True))
    # no FRMPayload decoded by the device's codec without an object: the object it is
    assert cs("up", chirpstack_up(EUI, NOW, obj={"level": 1})).properties == {"level": 1}


def test_chirpstack_up_without_payload_is_ignored_but_seen() -> None:
    up = cs("up", chirpstack_up(EUI, NOW))  # a MAC-only uplink: no data, no object
    assert up.ignored is IgnoreReason.no_payload and up.seen


def test_chirpstack_status_battery_and_its_exceptions() -> None:
    assert cs("status", chirpstack_event(EUI, NOW, margin=7, batteryLevel=88.3)).properties == {
        "battery_pct": 88.3
    }
    assert cs("status", chirpstack_event(EUI, NOW, margin=7)).properties == {"battery_pct": 0.0}  # 0 omitted
    for flag in ("batteryLevelUnavailable", "externalPowerSource"):
        up = cs("status", chirpstack_event(EUI, NOW, **{flag: True}))
        assert up.ignored is IgnoreReason.no_payload and up.seen


def test_chirpstack_up_and_status_of_one_uplink_share_an_id_but_not_a_key() -> None:
    head = chirpstack_event(EUI, NOW, batteryLevel=50)
    up = chirpstack_up(EUI, NOW, frame=FRAME, dedup_id=head["deduplicationId"])
    assert cs("up", up).dedup_key != cs("status", head).dedup_key


def test_chirpstack_join_log_and_other_events() -> None:
    join = cs("join", chirpstack_event(EUI, NOW, devAddr="00189440"))
    assert join.ignored is IgnoreReason.join and join.seen and "00189440" in join.note
    codec = cs(
        "log",
        chirpstack_event(EUI, NOW, level="ERROR", code="UPLINK_CODEC", description="ReferenceError: x"),
    )
    assert codec.error is not None and "ReferenceError: x" in codec.error and codec.ignored is None
    info = cs("log", chirpstack_event(EUI, NOW, code="UPLINK_F_CNT_RESET"))  # level INFO omitted
    assert info.ignored is IgnoreReason.not_telemetry and "level='INFO'" in info.note and not info.seen
    for event in ("ack", "txack", "location", "integration", "something-new"):
        assert cs(event, chirpstack_event(EUI, NOW)).ignored is IgnoreReason.not_telemetry


@pytest.mark.parametrize(
    ("event", "msg", "reason", "words"),
    [
        ("up", {"fCnt": "7"}, RejectReason.bad_envelope, "fCnt"),
        ("up", {"data": "not base64!"}, RejectReason.bad_envelope, "data"),
        ("up", {"rxInfo": [{"rssi": "strong"}]}, RejectReason.bad_envelope, "rxInfo.0.rssi"),
        ("up", {"time": "yesterday"}, RejectReason.bad_envelope, "time"),
        ("up", {"deviceInfo": {"devEui": "ffffffffffffffff"}}, RejectReason.bad_envelope, "topic names"),
        ("status", {"batteryLevel": True}, RejectReason.bad_envelope, "batteryLevel"),
        ("up", [1, 2], RejectReason.bad_envelope, "JSON object"),
    ],
)
def test_malformed_chirpstack_envelopes_say_what_and_where(
    event: str, msg: Any, reason: RejectReason, words: str
) -> None:
    with pytest.raises(DecodeError) as err:
        unwrap("chirpstack", event, json.dumps(msg).encode(), prefer_decoded=False, topic_id=CS_ID)
    assert err.value.reason is reason and words in err.value.detail and "ChirpStack" in err.value.detail


def test_not_json_keeps_its_reason_and_names_the_server() -> None:
    with pytest.raises(DecodeError) as err:
        unwrap("tts", "up", b"\x00\x01", prefer_decoded=False, topic_id=TTS_ID)
    assert err.value.reason is RejectReason.not_json and err.value.detail.startswith("The Things Stack up")


def test_tts_up_frm_payload_decoded_payload_key_and_time() -> None:
    msg = tts_up("cover-7", "70B3D57ED0000001", NOW, frame=FRAME, decoded={"water": 3}, f_cnt=42)
    up = tts(msg)
    assert up.frame == FRAME and up.dedup_key == "up:70b3d57ed0000001:42:AXA50...Rf4A=="
    assert tts(msg, prefer=True).properties == {"water": 3}
    assert up.radio == Radio(-35.0, 5.2)
    assert up.time_s == pytest.approx(NOW, abs=1e-6)


def test_tts_zero_fields_channel_rssi_and_correlation_key() -> None:
    msg = tts_up("cover-7", "70B3D57ED0000001", NOW, frame=FRAME, session_key_id="")
    del msg["uplink_message"]["session_key_id"]
    del msg["uplink_message"]["rx_metadata"][0]["rssi"]  # only channel_rssi from this gateway
    msg["uplink_message"]["rx_metadata"][0]["snr"] = 0  # TTS would omit it; 0 either way
    up = tts(msg)
    assert up.radio == Radio(-35.0, 0.0)
    assert up.dedup_key == msg["correlation_ids"][0] and up.dedup_key.startswith("as:up:")


def test_tts_simulated_join_and_malformed() -> None:
    sim = tts(tts_up("cover-7", "70B3D57ED0000001", NOW, frame=FRAME, simulated=True))
    assert sim.ignored is IgnoreReason.simulated and not sim.seen
    join = tts(
        {"end_device_ids": {"device_id": "cover-7"}, "join_accept": {"dev_addr": "00BCB929"}}, event="join"
    )
    assert join.ignored is IgnoreReason.join and join.seen and "00BCB929" in join.note
    with pytest.raises(DecodeError, match="uplink_message is missing"):
        tts({"end_device_ids": {"device_id": "cover-7"}})
    with pytest.raises(DecodeError, match="topic names"):
        tts(tts_up("cover-8", "70B3D57ED0000001", NOW, frame=FRAME))
    with pytest.raises(DecodeError, match="f_cnt"):
        tts({"uplink_message": {"f_cnt": 1.5}})


def test_readings_take_the_radio_and_the_servers_time() -> None:
    frame = encode_manhole_binary(tilt_deg=2.0, rssi_dbm=-80)  # no clock: ts 0
    up = Uplink("up", time_s=NOW - 30, frame=frame, radio=Radio(-101.0, -7.25))
    (r,) = readings_of(up, COVER, "manhole_binary", None, NOW, LIMITS)
    assert r.ts == NOW - 30
    assert r.values["rssi_dbm"] == -101.0 and r.values["snr_db"] == -7.25  # the server measured it
    assert r.values["tilt_deg"] == 2.0


def test_readings_of_the_servers_object_go_through_the_field_map_and_the_checks() -> None:
    profile = Profile(field_map={"level_mm": {"field": "water_level_cm", "scale": 0.1}, "bat": "battery_pct"})
    up = Uplink("up", time_s=NOW, properties={"level_mm": 125, "bat": 77, "colour": "red"})
    (r,) = readings_of(up, GAUGE, "auto", profile, NOW, LIMITS)
    assert r.values == {"water_level_cm": 12.5, "battery_pct": 77.0} and r.dropped == ("colour",)
    with pytest.raises(DecodeError) as err:
        readings_of(Uplink("up", properties={"bat": "full"}), GAUGE, "auto", profile, NOW, LIMITS)
    assert err.value.reason is RejectReason.bad_field_type
    with pytest.raises(DecodeError) as err:
        readings_of(Uplink("up", properties={"colour": 1}), GAUGE, "auto", None, NOW, LIMITS)
    assert err.value.reason is RejectReason.missing_field


def test_a_server_clock_out_of_the_window_is_refused() -> None:
    for at, reason in ((NOW + 2 * 86400, RejectReason.ts_future), (NOW - 400 * 86400, RejectReason.ts_past)):
        with pytest.raises(DecodeError) as err:
            readings_of(Uplink("up", time_s=at, frame=FRAME), COVER, "manhole_binary", None, NOW, LIMITS)
        assert err.value.reason is reason and "network server" in err.value.detail


# ---- hostile envelopes ------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["qg==", "AQIDBA==", base64.b64encode(FRAME).decode(), "2026-12-01T16:00:00.123456789Z"]),
)
_keys = st.sampled_from(
    [
        "deduplicationId", "time", "deviceInfo", "devEui", "data", "object", "rxInfo", "rssi", "snr", "fCnt",
        "batteryLevel", "batteryLevelUnavailable", "externalPowerSource", "level", "code", "description",
        "end_device_ids", "device_id", "dev_eui", "uplink_message", "frm_payload", "decoded_payload",
        "rx_metadata", "channel_rssi", "session_key_id", "f_cnt", "received_at", "simulated",
        "correlation_ids", "join_accept", "ts", "water_level_cm", "battery_pct", "open", "tilt_deg",
    ]
)  # fmt: skip
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_keys | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


ODD_PROFILE = Profile(field_map={"ts": "tilt_deg", "water_level_cm": {"field": "open", "scale": 1e300}})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    envelope=st.sampled_from(["chirpstack", "tts"]),
    event=st.sampled_from(["up", "status", "join", "log", "ack", "down"]),
    doc=_json,
    prefer=st.booleans(),
    raw=st.booleans(),
    junk=st.binary(max_size=40),
)
def test_hostile_envelopes_raise_only_decode_error(
    envelope: str, event: str, doc: Any, prefer: bool, raw: bool, junk: bytes
) -> None:
    payload = junk if raw else orjson.dumps(doc)
    topic_id = CS_ID if envelope == "chirpstack" else TTS_ID
    try:
        up = unwrap(envelope, event, payload, prefer_decoded=prefer, topic_id=topic_id)  # type: ignore[arg-type]
        if up.ignored is None and up.error is None:
            assert (up.frame is None) != (up.properties is None)
            for device, codec in ((COVER, "manhole_binary"), (GAUGE, "auto")):
                try:
                    for r in readings_of(
                        up, device, codec, Profile(field_map={"ts": "tilt_deg"}), NOW, LIMITS
                    ):
                        assert r.values
                except DecodeError:
                    pass
    except DecodeError as exc:
        assert exc.detail and exc.reason in RejectReason


def _documented(kind: int) -> tuple[str, str, dict[str, Any], tuple[str, str]]:
    if kind == 0:
        return "chirpstack", "up", chirpstack_up(EUI, NOW, frame=FRAME, obj={"open": 1, "level_mm": 5}), CS_ID
    if kind == 1:
        return "chirpstack", "status", chirpstack_event(EUI, NOW, margin=3, batteryLevel=40.5), CS_ID
    if kind == 2:
        log = chirpstack_event(EUI, NOW, level="ERROR", code="UPLINK_CODEC", description="x")
        return "chirpstack", "log", log, CS_ID
    return (
        "tts",
        "up",
        tts_up("cover-7", "70B3D57ED0000001", NOW, frame=FRAME, decoded={"tilt_deg": 4}),
        TTS_ID,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.integers(0, 3), prefer=st.booleans())
def test_documented_envelopes_with_hostile_values_raise_only_decode_error(
    data: st.DataObject, kind: int, prefer: bool
) -> None:
    envelope, event, msg, topic_id = _documented(kind)
    for _ in range(data.draw(st.integers(1, 3))):  # replace a value somewhere in the tree
        node: Any = msg
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = data.draw(st.sampled_from(keys))
            if isinstance(node[key], dict | list) and data.draw(st.booleans()):
                node = node[key]
                continue
            node[key] = data.draw(_json)
            break
    try:
        up = unwrap(envelope, event, orjson.dumps(msg), prefer_decoded=prefer, topic_id=topic_id)  # type: ignore[arg-type]
        if up.ignored is None and up.error is None:
            readings_of(up, COVER, "manhole_binary", ODD_PROFILE, NOW, LIMITS)
    except DecodeError as exc:
        assert exc.detail and exc.reason in RejectReason
