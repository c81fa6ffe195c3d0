"""Codecs: native JSON, SenML, the manhole binary frame, and every reject reason."""

from __future__ import annotations

import contextlib
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.codecs import codec_names, decode, encode_manhole_binary, get_codec, register_codec
from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.senml import reading_name
from devices.types import Device
from gridgate.config import LimitsConfig
from gridgate.models import Reading

NOW = 1_800_000_000.0
LIMITS = LimitsConfig()
MH = Device(id="MH-0001", type="manhole", lat=30.27, lon=120.15)
BIN = Device(id="BIN-0001", type="bin", lat=30.27, lon=120.15)
WG = Device(id="WG-0001", type="water_gauge", lat=30.27, lon=120.15)


def dec(payload: bytes | str, device: Device = MH, codec: str = "auto", now: float = NOW) -> list[Reading]:
    raw = payload.encode() if isinstance(payload, str) else payload
    return decode(codec, raw, device, now, LIMITS)


def reason(payload: bytes | str, device: Device = MH, codec: str = "auto") -> RejectReason:
    with pytest.raises(DecodeError) as info:
        dec(payload, device, codec)
    assert info.value.detail  # always says what was wrong
    return info.value.reason


# ---- native JSON -----------------------------------------------------------------------------


def test_json_full_manhole_reading() -> None:
    payload = {
        "ts": int(NOW),
        "seq": 7,
        "tilt_deg": 3.5,
        "open": False,
        "water_level_cm": 12.0,
        "gas_ch4_lel_pct": 0.4,
        "temperature_c": 18.5,
        "battery_pct": 88,
        "rssi_dbm": -97,
        "fault_code": 0,
        "snr_db": 7.5,
        "voltage_v": 3.55,
        "fw": "1.2.3",
    }
    [r] = dec(orjson.dumps(payload))
    assert (r.device_id, r.device_type, r.ts, r.seq) == ("MH-0001", "manhole", NOW, 7)
    assert r.values["open"] is False
    assert r.values["snr_db"] == 7.5 and r.values["voltage_v"] == 3.55  # extras kept as telemetry
    assert "fw" not in r.values and "ts" not in r.values and "seq" not in r.values


@pytest.mark.parametrize(
    "ts",
    [
        NOW,
        int(NOW),
        int(NOW * 1000),
        "2027-01-15T08:00:00Z",
        "2027-01-15T08:00:00+00:00",
        "2027-01-15T08:00:00",
    ],
)
def test_json_ts_forms(ts: object) -> None:
    # NOW is 2027-01-15T08:00:00Z; a zone-less ISO time is read as UTC
    [r] = dec(orjson.dumps({"ts": ts, "water_level_cm": 1}), WG)
    assert r.ts == pytest.approx(NOW)


def test_json_without_ts_uses_receive_time() -> None:
    [r] = dec(b'  {"water_level_cm": 3.5}', WG, now=NOW + 5)
    assert r.ts == NOW + 5 and r.seq is None


def test_json_bool_readings_may_be_numbers_and_unknown_fields_are_dropped() -> None:
    [r] = dec(b'{"open": 1, "tamper": false, "custom_flag": true}')
    assert r.values == {"open": True, "tamper": False} and type(r.values["open"]) is bool
    assert r.dropped == ("custom_flag",)


def test_unknown_codec_is_a_rejection_not_a_crash() -> None:
    assert reason(b"{}", codec="morse") == RejectReason.bad_payload


def test_json_null_reading_is_no_measurement() -> None:
    [r] = dec(b'{"water_level_cm": null, "battery_pct": 80}', WG)
    assert r.values == {"battery_pct": 80}


# ---- reject reasons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("hello", RejectReason.not_json),
        ("", RejectReason.not_json),
        ('{"tilt_deg": 2.0, ', RejectReason.not_json),
        (b'{"tilt_deg": "\xff"}', RejectReason.not_json),
        ('{"water_level_cm": NaN}', RejectReason.not_finite),
        ('{"water_level_cm": Infinity}', RejectReason.not_finite),
        ('{"water_level_cm": -Infinity}', RejectReason.not_finite),
        ('{"water_level_cm": 1e999}', RejectReason.not_finite),
        ('{"battery_pct": "full"}', RejectReason.bad_field_type),
        ('{"tilt_deg": [1, 2]}', RejectReason.bad_field_type),
        ('{"open": {"x": 1}}', RejectReason.bad_field_type),
        ('{"ts": true, "tilt_deg": 1}', RejectReason.wrong_type),
        ('{"tilt_deg": true}', RejectReason.bad_field_type),
        ('{"seq": "7", "tilt_deg": 1}', RejectReason.wrong_type),
        ('{"seq": 1.5, "tilt_deg": 1}', RejectReason.wrong_type),
        ("{}", RejectReason.missing_field),
        ('{"ts": 1800000000, "seq": 1}', RejectReason.missing_field),
        ('{"fw": "1.2"}', RejectReason.missing_field),
        ('{"ts": 1800090000, "tilt_deg": 1}', RejectReason.ts_future),
        ('{"ts": 1000, "tilt_deg": 1}', RejectReason.ts_past),
        ('{"ts": -5, "tilt_deg": 1}', RejectReason.ts_past),
        ('{"ts": "yesterday", "tilt_deg": 1}', RejectReason.bad_payload),
        ('{"battery_pct": -1}', RejectReason.negative_battery),
        ("[]", RejectReason.bad_payload),
    ],
)
def test_reject_reasons(payload: str | bytes, expected: RejectReason) -> None:
    assert reason(payload) == expected


def test_not_finite_detail_names_the_field() -> None:
    with pytest.raises(DecodeError) as info:
        dec('{"battery_pct": 80, "water_level_cm": NaN}')
    assert "water_level_cm" in info.value.detail


def test_bad_field_type_detail_names_field_value_and_type() -> None:
    with pytest.raises(DecodeError) as info:
        dec('{"battery_pct": "full"}')
    assert "battery_pct" in info.value.detail and "'full'" in info.value.detail
    assert "declared float" in info.value.detail


def test_json_codec_refuses_an_array() -> None:
    assert reason("[1, 2]", codec="json") == RejectReason.wrong_type


def test_ts_window_follows_limits() -> None:
    tight = LimitsConfig(max_future_s=60, max_past_s=3600)
    with pytest.raises(DecodeError) as info:
        decode("json", b'{"ts": 1800000120, "tilt_deg": 1}', MH, NOW, tight)
    assert info.value.reason == RejectReason.ts_future
    with pytest.raises(DecodeError) as info:
        decode("json", b'{"ts": 1799990000, "tilt_deg": 1}', MH, NOW, tight)
    assert info.value.reason == RejectReason.ts_past


def test_all_reasons_are_one_enum() -> None:
    names = {r.value for r in RejectReason}
    assert {"unknown_device", "unknown_topic", "too_large", "bad_length", "not_json"} <= names


# ---- SenML -------------------------------------------------------------------------------------


def test_senml_units_names_and_base_fields() -> None:
    pack = [
        {"bn": "urn:dev:gridgate:WG-0001:", "bt": NOW, "n": "water_level", "u": "m", "v": 0.18},
        {"n": "battery", "u": "%EL", "v": 76},
        {"n": "temp", "u": "Cel", "v": 21.0},
        {"n": "snr", "u": "dB", "v": 4.5},
        {"n": "lat", "v": 30.27},
        {"n": "lon", "v": 120.15},
    ]
    [r] = dec(orjson.dumps(pack), WG)
    assert r.ts == NOW
    assert r.values == {
        "water_level_cm": pytest.approx(18.0),
        "battery_pct": 76,
        "temperature_c": 21.0,
        "snr_db": 4.5,
    }


def test_senml_different_times_give_several_readings() -> None:
    pack = [
        {"bn": "WG-0001/", "bt": NOW - 120, "n": "level", "u": "cm", "v": 5},
        {"n": "level", "u": "cm", "v": 7, "t": 60},
        {"n": "battery", "u": "%EL", "v": 80, "t": 60},
    ]
    readings = dec(orjson.dumps(pack), WG)
    assert [(r.ts, r.values) for r in readings] == [
        (NOW - 120, {"water_level_cm": 5}),
        (NOW - 60, {"water_level_cm": 7, "battery_pct": 80}),
    ]


def test_senml_relative_time_is_relative_to_now() -> None:
    pack = [{"n": "fill", "u": "%", "v": 40, "t": -30}, {"n": "lid", "vb": True}]
    readings = dec(orjson.dumps(pack), BIN)
    assert [(r.ts, r.values) for r in readings] == [(NOW - 30, {"fill_pct": 40}), (NOW, {"lid_open": True})]


def test_senml_unit_conversions() -> None:
    pack = [
        {"bn": "x:", "n": "distance", "u": "mm", "v": 550},
        {"n": "temperature", "u": "K", "v": 293.15},
        {"n": "tilt", "u": "rad", "v": math.pi / 2},
    ]
    [r] = dec(orjson.dumps(pack), BIN)
    assert r.values["distance_cm"] == pytest.approx(55)
    assert r.values["temperature_c"] == pytest.approx(20)
    assert r.values["tilt_deg"] == pytest.approx(90)
    [r] = dec(orjson.dumps([{"n": "ch4", "u": "%LEL", "v": 12}]), MH)
    assert r.values == {"gas_ch4_lel_pct": 12.0}


def test_reading_name_mapping() -> None:
    assert reading_name("urn:dev:x:battery", "%EL")[0] == "battery_pct"
    assert reading_name("urn:dev:x:cell", "%EL")[0] == "battery_pct"
    assert reading_name("urn:dev:x:noise", "dB")[0] == "noise_db"
    assert reading_name("water_level_cm", None)[0] == "water_level_cm"
    assert reading_name("mystery", None)[0] == "mystery"


@pytest.mark.parametrize(
    ("pack", "expected"),
    [
        ("[]", RejectReason.bad_payload),
        ('{"n": "x", "v": 1}', RejectReason.wrong_type),  # a record, not a pack, via the senml codec
        ("[1]", RejectReason.wrong_type),
        ('[{"n": "level", "u": "cm"}]', RejectReason.missing_field),
        ('[{"v": 3}]', RejectReason.missing_field),
        ('[{"n": "level", "v": "high"}]', RejectReason.wrong_type),
        ('[{"n": "level", "vs": "high"}]', RejectReason.bad_field_type),
        ('[{"n": "open", "vb": 1}]', RejectReason.wrong_type),
        ('[{"n": 5, "v": 1}]', RejectReason.wrong_type),
        ('[{"bt": "now", "n": "level", "v": 1}]', RejectReason.wrong_type),
        ('[{"n": "level", "v": NaN}]', RejectReason.not_finite),
        ('[{"n": "battery", "u": "%EL", "v": -3}]', RejectReason.negative_battery),
        ('[{"bt": 1900000000, "n": "level", "v": 1}]', RejectReason.ts_future),
        ('[{"n": "fw", "vs": "1.0"}]', RejectReason.missing_field),
    ],
)
def test_senml_rejects(pack: str, expected: RejectReason) -> None:
    assert reason(pack, WG, codec="senml") == expected


def test_senml_base_only_record_is_allowed() -> None:
    [r] = dec(orjson.dumps([{"bn": "WG-0001:", "bt": NOW}, {"n": "level", "u": "cm", "v": 2}]), WG)
    assert r.values == {"water_level_cm": 2}


# ---- manhole binary ----------------------------------------------------------------------------


def test_binary_frame_layout() -> None:
    frame = bytes.fromhex("020b00d204b057a5") + int(NOW).to_bytes(4, "big")
    [r] = dec(frame, codec="manhole_binary")
    assert r.ts == NOW
    assert r.values == {
        "msg_type": 2,
        "open": True,
        "tamper": True,
        "water_probe_wet": False,
        "fault_code": 1,
        "tilt_deg": 21.0,
        "water_level_cm": 120.0,
        "battery_pct": 87,
        "rssi_dbm": -91,
    }


def test_binary_hex_string_with_whitespace() -> None:
    frame = encode_manhole_binary(tilt_deg=3.4, battery_pct=50, ts=int(NOW))
    spaced = " ".join(frame.hex()[i : i + 2] for i in range(0, 24, 2)).upper() + "\n"
    [r] = dec(spaced, codec="manhole_binary")
    assert r.values["tilt_deg"] == 3.4 and r.values["battery_pct"] == 50


def test_binary_zero_clock_uses_receive_time() -> None:
    [r] = dec(encode_manhole_binary(ts=0), codec="manhole_binary")
    assert r.ts == NOW


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bytes(11), RejectReason.bad_length),
        (bytes(13), RejectReason.bad_length),
        (b"", RejectReason.bad_length),
        (b"01020304", RejectReason.bad_length),
        (b"0" * 26, RejectReason.bad_length),
        (b"zz" * 12, RejectReason.bad_hex),
        (b"0100 0023 007b 40 9f 6a18a5zz", RejectReason.bad_hex),
        (bytes([3]) + bytes(11), RejectReason.bad_payload),
        (encode_manhole_binary(battery_pct=50, ts=int(NOW) + 200_000), RejectReason.ts_future),
        (encode_manhole_binary(battery_pct=50, ts=1), RejectReason.ts_past),
    ],
)
def test_binary_rejects(payload: bytes, expected: RejectReason) -> None:
    assert reason(payload, codec="manhole_binary") == expected


def test_encode_out_of_range_raises_value_error() -> None:
    with pytest.raises(ValueError):
        encode_manhole_binary(battery_pct=300)
    with pytest.raises(ValueError):
        encode_manhole_binary(tilt_deg=-1)


@settings(max_examples=300)
@given(
    msg_type=st.sampled_from([1, 2]),
    is_open=st.booleans(),
    tamper=st.booleans(),
    wet=st.booleans(),
    fault=st.booleans(),
    tilt_tenths=st.integers(0, 65535),
    water_mm=st.integers(0, 65535),
    battery=st.integers(0, 255),
    rssi=st.integers(-128, 127),
    ts=st.integers(1, 2**32 - 1),
    as_hex=st.booleans(),
)
def test_binary_round_trip(
    msg_type: int,
    is_open: bool,
    tamper: bool,
    wet: bool,
    fault: bool,
    tilt_tenths: int,
    water_mm: int,
    battery: int,
    rssi: int,
    ts: int,
    as_hex: bool,
) -> None:
    frame = encode_manhole_binary(
        msg_type=msg_type,
        open=is_open,
        tamper=tamper,
        water_probe_wet=wet,
        sensor_fault=fault,
        tilt_deg=tilt_tenths / 10,
        water_level_cm=water_mm / 10,
        battery_pct=battery,
        rssi_dbm=rssi,
        ts=ts,
    )
    assert len(frame) == 12
    [r] = get_codec("manhole_binary").decode(frame.hex().encode() if as_hex else frame, MH, NOW)
    assert r.ts == ts
    assert r.values == {
        "msg_type": msg_type,
        "open": is_open,
        "tamper": tamper,
        "water_probe_wet": wet,
        "fault_code": 1 if fault else 0,
        "tilt_deg": pytest.approx(tilt_tenths / 10),
        "water_level_cm": pytest.approx(water_mm / 10),
        "battery_pct": battery,
        "rssi_dbm": rssi,
    }
    # and the values encode back to the same bytes
    again = encode_manhole_binary(
        msg_type=msg_type,
        open=is_open,
        tamper=tamper,
        water_probe_wet=wet,
        sensor_fault=fault,
        tilt_deg=r.values["tilt_deg"],
        water_level_cm=r.values["water_level_cm"],
        battery_pct=battery,
        rssi_dbm=rssi,
        ts=ts,
    )
    assert again == frame


# ---- robustness ---------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_reading_names = st.sampled_from(
    [
        "ts",
        "seq",
        "tilt_deg",
        "open",
        "battery_pct",
        "fill_pct",
        "n",
        "v",
        "vb",
        "vs",
        "bn",
        "bt",
        "t",
        "u",
        "x",
    ]
)


@settings(max_examples=400)
@given(payload=st.binary(max_size=64), codec=st.sampled_from(["auto", "json", "senml", "manhole_binary"]))
def test_arbitrary_bytes_only_raise_decode_error(payload: bytes, codec: str) -> None:
    with contextlib.suppress(DecodeError):
        decode(codec, payload, MH, NOW, LIMITS)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=st.dictionaries(_reading_names, _json_values, max_size=6)
    | st.lists(st.dictionaries(_reading_names, _json_values, max_size=5), max_size=4),
    codec=st.sampled_from(["auto", "json", "senml"]),
)
def test_arbitrary_json_only_raises_decode_error(doc: object, codec: str) -> None:
    try:
        readings = decode(codec, orjson.dumps(doc), BIN, NOW, LIMITS)
    except DecodeError:
        return
    for r in readings:
        for v in r.values.values():
            assert type(v) in (int, float, bool)
            assert not isinstance(v, float) or math.isfinite(v)


def test_hex_frame_bytes_arbitrary_hex_is_safe() -> None:
    for payload in (b"zz" * 12, b"0" * 24, b"ff" * 12):
        try:
            dec(payload, codec="manhole_binary")
        except DecodeError as exc:
            assert exc.reason in (RejectReason.bad_hex, RejectReason.bad_payload)


# ---- the plugin registry -------------------------------------------------------------------------


def test_codec_registry() -> None:
    assert {"auto", "json", "senml", "manhole_binary"} <= set(codec_names())
    with pytest.raises(KeyError, match="known"):
        get_codec("nope")
    with pytest.raises(ValueError):
        register_codec("json", lambda p, d, n: [])


def test_plugin_codec_values_are_checked() -> None:
    def bad(payload: bytes, device: Device, now: float) -> list[Reading]:
        return [Reading(device.id, device.type.value, now, {"tilt_deg": "x"})]

    def broken(payload: bytes, device: Device, now: float) -> list[Reading]:
        raise ValueError("boom")

    register_codec("test_bad", bad, replace=True)
    register_codec("test_broken", broken, replace=True)
    assert reason(b"", codec="test_bad") == RejectReason.bad_field_type
    assert reason(b"", codec="test_broken") == RejectReason.decoder_error
