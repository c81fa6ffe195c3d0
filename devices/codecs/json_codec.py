"""Native JSON: `{"ts": ..., "seq": 12, "tilt_deg": 3.5, "open": false, ...}`."""

from __future__ import annotations

from devices.codecs.base import clean_values, loads_json, parse_ts, type_name
from devices.codecs.errors import DecodeError, RejectReason
from devices.types import TYPE_READINGS, Device
from gridgate.models import Reading


def decode_json(payload: bytes, device: Device, now: float) -> list[Reading]:
    """One JSON object -> one Reading; `ts` (ISO 8601, epoch s or ms) and `seq` are optional."""
    obj = loads_json(payload)
    if type(obj) is not dict:
        raise DecodeError(
            RejectReason.wrong_type, f"payload: expected a JSON object of readings, got {type_name(obj)}"
        )
    ts = parse_ts(obj.pop("ts", None), now)
    seq = obj.pop("seq", None)
    if seq is not None and type(seq) is not int:
        raise DecodeError(RejectReason.wrong_type, f"seq: expected an integer, got {type_name(seq)} {seq!r}")
    values = clean_values(obj)
    if not values:
        raise DecodeError(
            RejectReason.missing_field,
            f"payload has no readings: expected at least one number or boolean such as "
            f"{', '.join(_example_fields(device))}",
        )
    return [Reading(device.id, device.type.value, ts, values, seq)]


def _example_fields(device: Device) -> list[str]:
    return list(TYPE_READINGS[device.type][:3])
