"""Declared fields: one type per field name, coerced or rejected in every codec, names validated."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.codecs import decode, encode_manhole_binary
from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.fields import coerce, conform, name_problem
from devices.codecs.senml import ALIASES
from devices.types import DEVICE_FIELDS, FIELD_TYPES, Device, DeviceType, FieldType
from gridgate.config import LimitsConfig
from gridgate.models import Reading

NOW = 1_800_000_000.0
LIMITS = LimitsConfig()
DEVICES = {
    DeviceType.manhole: Device(id="MH-1", type="manhole", lat=30.2, lon=120.1),
    DeviceType.bin: Device(id="BIN-1", type="bin", lat=30.2, lon=120.1),
    DeviceType.water_gauge: Device(id="WG-1", type="water_gauge", lat=30.2, lon=120.1),
}
MH = DEVICES[DeviceType.manhole]
PY_TYPE = {FieldType.bool: bool, FieldType.float: float, FieldType.int: int, FieldType.string: str}
README = Path(__file__).resolve().parents[2] / "README.md"


def dec(payload: bytes | str, device: Device = MH, codec: str = "auto") -> list[Reading]:
    return decode(codec, payload.encode() if isinstance(payload, str) else payload, device, NOW, LIMITS)


def rejected(payload: bytes | str, device: Device = MH, codec: str = "auto") -> DecodeError:
    with pytest.raises(DecodeError) as info:
        dec(payload, device, codec)
    return info.value


def assert_declared(readings: list[Reading], device: Device) -> None:
    """Every value has exactly its declared Python type (a bool is never an int here)."""
    declared = DEVICE_FIELDS[device.type]
    for r in readings:
        assert r.values, "a reading without values must not be returned"
        for name, value in r.values.items():
            assert name in declared, name
            assert type(value) is PY_TYPE[declared[name]], (name, value)
            assert type(value) is not float or math.isfinite(value)


# ---- the catalogue -------------------------------------------------------------------------------


def test_every_declared_field_has_one_type_and_a_valid_name() -> None:
    for dtype, fields in DEVICE_FIELDS.items():
        for name, ftype in fields.items():
            assert FIELD_TYPES[name] is ftype, (dtype, name)
    assert all(name_problem(name) is None for name in FIELD_TYPES)
    assert set(DEVICE_FIELDS) == set(DeviceType)


def test_readme_declares_the_same_fields_and_types() -> None:
    text = README.read_text()
    section = text[text.index("**Declared fields**") :]
    rows = re.findall(r"^\| `(\w+)` \| (bool|float|int|string) \| ([^|]+) \|", section, re.MULTILINE)
    assert {name: FieldType(t) for name, t, _ in rows} == FIELD_TYPES
    for name, _, types in rows:
        listed = set(re.findall(r"`(\w+)`", types)) if "all" not in types else {t.value for t in DeviceType}
        assert listed == {t.value for t, f in DEVICE_FIELDS.items() if name in f}, name


# ---- the coercion table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ftype", "value", "stored"),
    [
        (FieldType.bool, True, True),
        (FieldType.bool, False, False),
        (FieldType.bool, 0, False),
        (FieldType.bool, 1, True),
        (FieldType.bool, 1.0, True),
        (FieldType.bool, "true", True),
        (FieldType.bool, "FALSE", False),
        (FieldType.float, 3, 3.0),
        (FieldType.float, -2.5, -2.5),
        (FieldType.float, 2**63, float(2**63)),
        (FieldType.int, 7, 7),
        (FieldType.int, 7.0, 7),
        (FieldType.int, -(2**63), -(2**63)),
        (FieldType.string, "1.2.3", "1.2.3"),
    ],
)
def test_coercions(ftype: FieldType, value: Any, stored: Any) -> None:
    out = coerce("f", value, ftype)
    assert out == stored and type(out) is type(stored)


@pytest.mark.parametrize(
    ("ftype", "value", "reason"),
    [
        (FieldType.bool, 2, RejectReason.bad_field_type),
        (FieldType.bool, 0.5, RejectReason.bad_field_type),
        (FieldType.bool, "yes", RejectReason.bad_field_type),
        (FieldType.bool, "1", RejectReason.bad_field_type),
        (FieldType.bool, [True], RejectReason.bad_field_type),
        (FieldType.float, True, RejectReason.bad_field_type),  # Python's True is an int: not here
        (FieldType.float, "3.5", RejectReason.bad_field_type),
        (FieldType.float, {"v": 1}, RejectReason.bad_field_type),
        (FieldType.float, math.nan, RejectReason.not_finite),
        (FieldType.float, -math.inf, RejectReason.not_finite),
        (FieldType.float, 10**400, RejectReason.not_finite),
        (FieldType.int, True, RejectReason.bad_field_type),
        (FieldType.int, 1.5, RejectReason.bad_field_type),
        (FieldType.int, 2**63, RejectReason.bad_field_type),
        (FieldType.int, math.inf, RejectReason.not_finite),
        (FieldType.int, "7", RejectReason.bad_field_type),
        (FieldType.string, 7, RejectReason.bad_field_type),
        (FieldType.string, False, RejectReason.bad_field_type),
        (FieldType.string, "x" * 257, RejectReason.bad_field_type),
        (FieldType.string, "a\nb", RejectReason.bad_field_type),
    ],
)
def test_refusals_name_field_value_and_type(ftype: FieldType, value: Any, reason: RejectReason) -> None:
    with pytest.raises(DecodeError) as info:
        coerce("level", value, ftype, "[3].v ")
    assert info.value.reason is reason
    assert info.value.detail.startswith("[3].v level: ")
    if reason is RejectReason.bad_field_type:
        assert f"declared {ftype.value}" in info.value.detail


def test_conform_keeps_declared_drops_unknown_and_nulls() -> None:
    declared = {"a": FieldType.int, "b": FieldType.string, "c": FieldType.bool}
    values, dropped = conform({"a": 3.0, "b": "x", "c": 0, "d": 1, "e": None, "a_": "?"}, declared)
    assert values == {"a": 3, "b": "x", "c": False} and type(values["a"]) is int
    assert dropped == ["d", "e", "a_"]
    assert conform({"a": None}, declared) == ({}, [])


# ---- the cases, through the codecs ------------------------------------------------------------


def test_a_flag_sent_as_a_number_is_stored_as_a_flag_in_either_order() -> None:
    for first, second in (
        (b'{"open": 0, "tilt_deg": 1}', b'{"open": true}'),
        (b'{"open": true}', b'{"open": 1}'),
    ):
        readings = dec(first) + dec(second)
        assert [type(r.values["open"]) for r in readings] == [bool, bool]
        assert_declared(readings, MH)
    [r] = dec(b'{"tilt_deg": 1, "battery_pct": 80, "fault_code": 0}')
    assert all(type(v) is float for v in r.values.values())
    assert rejected(b'{"open": 2}').reason is RejectReason.bad_field_type


def test_senml_and_binary_values_pass_the_same_gate() -> None:
    [r] = dec(b'[{"n": "open", "v": 1}, {"n": "tilt", "u": "deg", "v": 3}, {"n": "tamper", "vs": "false"}]')
    assert r.values == {"open": True, "tilt_deg": 3.0, "tamper": False}
    assert_declared([r], MH)
    err = rejected(b'[{"n": "tilt", "vb": true}]')
    assert err.reason is RejectReason.bad_field_type and "tilt_deg" in err.detail
    frame = encode_manhole_binary(msg_type=2, open=True, battery_pct=50, rssi_dbm=-90, ts=int(NOW))
    readings = dec(frame, codec="manhole_binary")
    assert_declared(readings, MH)
    assert readings[0].values["msg_type"] == 2.0 and readings[0].values["open"] is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "a,b",
        "tilt_deg ",
        " tilt_deg",
        "a b",
        "a=b",
        'a"b',
        "a'b",
        "a\\b",
        "x\x00",
        "x\x1f",
        "x\x7f",
        "x\u200b",
        "x" * 65,
    ],
)
def test_names_that_cannot_be_fields_are_rejected(name: str) -> None:
    err = rejected(orjson.dumps({"tilt_deg": 1.0, name: 1}))
    assert err.reason is RejectReason.bad_field_name and "field name" in err.detail
    senml = orjson.dumps([{"n": name, "v": 1}, {"n": "tilt", "v": 1}])
    assert rejected(senml).reason in (RejectReason.bad_field_name, RejectReason.missing_field)


def test_unknown_fields_are_dropped_and_reported_on_the_reading() -> None:
    [r] = dec(b'{"tilt_deg": 1, "fw": "1.2", "gps": {"lat": 1}, "fill_pct": 3, "Tilt": 2}')
    assert r.values == {"tilt_deg": 1.0}
    assert r.dropped == ("fw", "gps", "fill_pct", "Tilt")  # fill_pct is a bin's, not a manhole's
    err = rejected(b'{"fw": "1.2", "imei": 3}')
    assert err.reason is RejectReason.missing_field and "fw, imei" in err.detail


# ---- nesting, BOM, hex ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"tilt_deg": 1, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"battery_pct": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b"[" * 1000 + b"]" * 1000,
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b'{"battery_pct": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"tilt_deg": 1, "x": ' + b"[" * 17 + b"]" * 17 + b"}",
    ],
)
def test_deep_nesting_is_too_deep_in_json_and_senml(payload: bytes) -> None:
    for codec in ("auto", "json", "senml"):
        err = rejected(payload, codec=codec)
        assert err.reason is RejectReason.too_deep, (codec, err)
        assert "limit is 16" in err.detail


def test_nesting_within_the_limit_is_fine() -> None:
    [r] = dec(b'{"tilt_deg": 1, "meta": ' + b"[" * 15 + b"]" * 15 + b"}")
    assert r.values == {"tilt_deg": 1.0}
    pack = [{"n": "tilt", "v": i} if i == 0 else {"n": "battery", "v": 50} for i in range(40)]
    assert dec(orjson.dumps(pack))[0].values == {"tilt_deg": 0.0, "battery_pct": 50.0}


def test_a_leading_bom_is_accepted_in_json_and_senml() -> None:
    bom = b"\xef\xbb\xbf"
    for codec in ("auto", "json"):
        assert dec(bom + b'{"tilt_deg": 2}', codec=codec)[0].values == {"tilt_deg": 2.0}
    for codec in ("auto", "senml"):
        assert dec(bom + b' [{"n": "tilt", "v": 2}]', codec=codec)[0].values == {"tilt_deg": 2.0}
    assert rejected(bom).reason is RejectReason.not_json


def test_24_characters_that_are_not_hex_are_bad_hex() -> None:
    err = rejected(b"0100 0023 007b 40 9f 6a18a5zz", codec="manhole_binary")
    assert err.reason is RejectReason.bad_hex and "character 22" in err.detail
    assert rejected(b"g" * 24, codec="manhole_binary").reason is RejectReason.bad_hex
    assert rejected(b"ab" * 11, codec="manhole_binary").reason is RejectReason.bad_length


# ---- properties: for any input, declared types exactly, or a DecodeError that is not a bug ------------

_names = st.sampled_from(sorted({*FIELD_TYPES, *ALIASES, "ts", "seq", "fw", "", "a,b", "open ", "x\x01"}))
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, 0.0, 1.0, "true", "false", "TRUE", "1", "", 1e308, -1e308, 2**63])
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
_record = st.dictionaries(
    st.sampled_from(["bn", "bt", "bu", "bv", "n", "u", "v", "vb", "vs", "vd", "s", "t"]),
    _json | _names | st.sampled_from(["m", "Cel", "K", "%EL", "%", "deg", "rad", "mV", "dBm"]),
    max_size=6,
)


def _outcome(payload: bytes, device: Device, codec: str) -> None:
    try:
        readings = decode(codec, payload, device, NOW, LIMITS)
    except DecodeError as exc:
        assert exc.reason is not RejectReason.decoder_error, exc.detail  # a built-in codec never slips
        return
    assert_declared(readings, device)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=st.dictionaries(_names | st.text(max_size=6), _json, max_size=8),
    dtype=st.sampled_from(list(DeviceType)),
    codec=st.sampled_from(["auto", "json"]),
)
def test_any_json_object_decodes_to_declared_types_or_a_decode_error(
    doc: dict[str, Any], dtype: DeviceType, codec: str
) -> None:
    _outcome(json.dumps(doc).encode(), DEVICES[dtype], codec)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    pack=st.lists(_record, max_size=5),
    dtype=st.sampled_from(list(DeviceType)),
    codec=st.sampled_from(["auto", "senml"]),
)
def test_any_senml_pack_decodes_to_declared_types_or_a_decode_error(
    pack: list[dict[str, Any]], dtype: DeviceType, codec: str
) -> None:
    _outcome(json.dumps(pack).encode(), DEVICES[dtype], codec)


@settings(max_examples=300)
@given(
    payload=st.binary(max_size=40) | st.binary(min_size=12, max_size=12),
    dtype=st.sampled_from(list(DeviceType)),
    codec=st.sampled_from(["auto", "json", "senml", "manhole_binary"]),
)
def test_any_bytes_decode_to_declared_types_or_a_decode_error(
    payload: bytes, dtype: DeviceType, codec: str
) -> None:
    _outcome(payload, DEVICES[dtype], codec)


@settings(max_examples=300)
@given(frame=st.binary(min_size=12, max_size=12), as_hex=st.booleans())
def test_any_binary_frame_decodes_to_declared_types(frame: bytes, as_hex: bool) -> None:
    frame = bytes([1 + frame[0] % 2]) + frame[1:8] + int(NOW).to_bytes(4, "big")
    readings = dec(frame.hex().encode() if as_hex else frame, codec="manhole_binary")
    assert_declared(readings, MH)
