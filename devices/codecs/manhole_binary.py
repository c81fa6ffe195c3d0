"""The manhole-cover vendor's 12-byte binary frame (big-endian), as raw bytes or a hex string.

| bytes | field |
| --- | --- |
| 0 | message type: 1 periodic, 2 alarm |
| 1 | status bits: 0 open, 1 tamper, 2 water probe wet, 3 sensor fault (4-7 reserved) |
| 2-3 | tilt, 0.1 degree (uint16) |
| 4-5 | water level under the cover, mm (uint16) |
| 6 | battery % (uint8) |
| 7 | RSSI dBm (int8) |
| 8-11 | epoch seconds (uint32); 0 means the device has no clock yet: the receive time is used |
"""

from __future__ import annotations

import struct

from devices.codecs.errors import DecodeError, RejectReason
from devices.types import Device
from gridgate.models import Reading

FRAME = struct.Struct(">BBHHBbI")
FRAME_LEN = FRAME.size  # 12
MSG_PERIODIC = 1
MSG_ALARM = 2
_MSG_TYPES = (MSG_PERIODIC, MSG_ALARM)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_WHITESPACE = b" \t\r\n"


def frame_bytes(payload: bytes) -> bytes:
    """The 12 raw bytes of a frame sent raw or as 24 hex characters (whitespace allowed)."""
    if len(payload) == FRAME_LEN:
        return bytes(payload)
    compact = bytes(payload).translate(None, _WHITESPACE)
    is_hex = bool(compact) and _HEX.issuperset(compact)
    if len(compact) == 2 * FRAME_LEN and not is_hex:
        at, char = next((i, c) for i, c in enumerate(compact) if c not in _HEX)
        raise DecodeError(
            RejectReason.bad_hex,
            f"payload: {len(compact)} characters, the size of a hex frame, but character {at} is "
            f"{bytes([char])!r}, not a hex digit (0-9, a-f)",
        )
    if is_hex:
        if len(compact) != 2 * FRAME_LEN:
            raise DecodeError(
                RejectReason.bad_length,
                f"payload: hex string of {len(compact)} characters, "
                f"expected {2 * FRAME_LEN} ({FRAME_LEN} bytes)",
            )
        return bytes.fromhex(compact.decode("ascii"))
    raise DecodeError(
        RejectReason.bad_length,
        f"payload: {len(payload)} bytes, expected exactly {FRAME_LEN} raw or {2 * FRAME_LEN} hex characters",
    )


def decode_manhole_binary(payload: bytes, device: Device, now: float) -> list[Reading]:
    """One frame -> one Reading with msg_type, open, tamper, water_probe_wet, fault_code and measurements."""
    msg_type, status, tilt, water_mm, battery, rssi, ts = FRAME.unpack(frame_bytes(payload))
    if msg_type not in _MSG_TYPES:
        raise DecodeError(
            RejectReason.bad_payload, f"byte 0 (message type): {msg_type} is unknown, expected 1 or 2"
        )
    values = {
        "msg_type": msg_type,
        "open": bool(status & 1),
        "tamper": bool(status & 2),
        "water_probe_wet": bool(status & 4),
        "fault_code": 1 if status & 8 else 0,
        "tilt_deg": tilt / 10,
        "water_level_cm": water_mm / 10,
        "battery_pct": battery,
        "rssi_dbm": rssi,
    }
    return [Reading(device.id, device.type.value, float(ts) if ts else now, values)]


def encode_manhole_binary(
    *,
    msg_type: int = MSG_PERIODIC,
    open: bool = False,
    tamper: bool = False,
    water_probe_wet: bool = False,
    sensor_fault: bool = False,
    tilt_deg: float = 0.0,
    water_level_cm: float = 0.0,
    battery_pct: int = 100,
    rssi_dbm: int = -80,
    ts: float = 0,
) -> bytes:
    """Build a frame (for the simulator and tests); values out of the frame's range raise ValueError."""
    status = (
        (1 if open else 0) | (2 if tamper else 0) | (4 if water_probe_wet else 0) | (8 if sensor_fault else 0)
    )
    try:
        return FRAME.pack(
            msg_type,
            status,
            round(tilt_deg * 10),
            round(water_level_cm * 10),
            int(battery_pct),
            int(rssi_dbm),
            int(ts),
        )
    except struct.error as exc:
        raise ValueError(f"value out of the frame's range: {exc}") from exc
