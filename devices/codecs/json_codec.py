"""Native JSON: `{"ts": ..., "seq": 12, "tilt_deg": 3.5, "open": false, ...}`."""

from __future__ import annotations

from devices.codecs.base import loads_json, parse_ts
from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.fields import json_type, snippet
from devices.types import Device
from gridgate.models import Reading


def decode_json(payload: bytes, device: Device, now: float) -> list[Reading]:
    """One JSON object -> one Reading; `ts` (ISO 8601, epoch s or ms) and `seq` are optional.

    The values are raw here: `devices.codecs.decode` keeps the declared fields and coerces them.
    """
    obj = loads_json(payload)
    if type(obj) is not dict:
        raise DecodeError(
            RejectReason.wrong_type, f"payload: expected a JSON object of readings, got {json_type(obj)}"
        )
    ts = parse_ts(obj.pop("ts", None), now)
    seq = obj.pop("seq", None)
    if seq is not None and type(seq) is not int:
        raise DecodeError(
            RejectReason.wrong_type, f"seq: expected an integer, got {json_type(seq)} {snippet(seq)}"
        )
    return [Reading(device.id, device.type.value, ts, obj, seq)]
