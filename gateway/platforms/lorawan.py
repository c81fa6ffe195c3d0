"""LoRaWAN network servers' MQTT JSON (ChirpStack v4, The Things Stack v3): envelope in, what to decode out.

Pure: no I/O, no clock. `unwrap` reads one message of a server's MQTT integration into an `Uplink`
(the FRMPayload for the device's codec, or the server's decoded object, the server's time, the
best gateway's RSSI/SNR, a key that spots a second delivery) or says why it holds no telemetry;
`readings_of` turns an `Uplink` into checked Readings through `devices.codecs.decode`.

Both servers omit fields that are zero, false or empty (the Protobuf JSON mapping; TTS "empty fields
are omitted"), so every field here has the default its absence means. Policy (docs/platforms.md,
"LoRaWAN network servers"):

| message | outcome |
| --- | --- |
| ChirpStack `up`, TTS `up` | readings (FRMPayload through the device's codec, or the server's object) |
| ChirpStack `status` | `battery_pct` from `batteryLevel`; none on external power or when unavailable |
| ChirpStack `join`, TTS `join` | the device is seen (offline cleared); nothing stored |
| ChirpStack `log` ERROR `UPLINK_CODEC` | seen, and dead-lettered as `server_codec_error` |
| ChirpStack `ack` | ignored, counted; the device is seen (the ack came in an uplink) |
| any other `log`, `txack`, `location`, `integration`, unknown events | ignored, counted |
| TTS `simulated: true` | ignored, counted (a console simulation is not the street, nor the device alive) |
| an uplink delivered again | ignored as `duplicate` (the caller keeps the keys, per device) |
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from devices.codecs import TEXT_CODECS, decode
from devices.codecs.base import loads_json
from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.fields import json_type, snippet
from devices.registry import Profile
from devices.types import Device
from gridgate.config import LimitsConfig
from gridgate.models import Reading

Envelope = Literal["chirpstack", "tts"]
SERVER_NAMES: dict[str, str] = {"chirpstack": "ChirpStack", "tts": "The Things Stack"}


class IgnoreReason(StrEnum):
    """Why a network server's message stored nothing although nothing was wrong with it."""

    duplicate = "duplicate"  # the same uplink delivered again (deduplicationId, f_cnt + session key)
    simulated = "simulated"  # a TTS console-simulated uplink
    join = "join"  # a (re)join: the device is alive, nothing was measured
    no_payload = "no_payload"  # a MAC-only uplink (no FRMPayload), a status without a battery level
    not_telemetry = "not_telemetry"  # ack, txack, location, integration, logs, events unknown here


@dataclass(frozen=True, slots=True)
class Radio:
    """The link as the best gateway (highest RSSI) heard the uplink."""

    rssi_dbm: float
    snr_db: float


@dataclass(frozen=True, slots=True)
class Uplink:
    """What one network server message asks of the pipeline.

    With `ignored` None and `error` None, exactly one of `frame` (for the device's codec) and
    `properties` (the server's decoded object, in its own names) is set.
    """

    event: str
    dedup_key: str | None = None  # the same key again is the same uplink delivered again
    time_s: float | None = None  # when the server received it; None: use the gateway's receive time
    frame: bytes | None = None
    properties: dict[str, Any] | None = None
    radio: Radio | None = None
    ignored: IgnoreReason | None = None
    error: str | None = None  # the server's own decoding failed: dead-lettered with this detail
    seen: bool = True  # the message proves the device sent something
    note: str = ""  # worth an info log line (joins, the server's logs): what the server said


class _Doc(BaseModel):
    # strict: a number sent as a string is a malformed envelope, not a number
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


# ChirpStack v4 (chirpstack_api integration events, JSON mapping: camelCase, zero values omitted)
class _CSDeviceInfo(_Doc):
    devEui: str = ""
    deviceName: str = ""


class _CSRxInfo(_Doc):
    gatewayId: str = ""
    rssi: float = 0.0
    snr: float = 0.0


class _CSEvent(_Doc):
    deduplicationId: str = ""
    time: str | None = None
    deviceInfo: _CSDeviceInfo = _CSDeviceInfo()


class _CSUp(_CSEvent):
    fCnt: int = 0
    fPort: int = 0
    data: str = ""
    object: dict[str, Any] | None = None  # only when the device profile has a codec
    rxInfo: list[_CSRxInfo] = []


class _CSStatus(_CSEvent):
    margin: int = 0
    externalPowerSource: bool = False
    batteryLevelUnavailable: bool = False
    batteryLevel: float = 0.0


class _CSJoin(_CSEvent):
    devAddr: str = ""


class _CSLog(_CSEvent):
    level: str = "INFO"  # the enum's zero value, omitted like any other
    code: str = "UNKNOWN"
    description: str = ""


# The Things Stack v3 (snake_case, empty fields omitted)
class _TTSApplicationIds(_Doc):
    application_id: str = ""


class _TTSDeviceIds(_Doc):
    device_id: str = ""
    application_ids: _TTSApplicationIds = _TTSApplicationIds()
    dev_eui: str = ""


class _TTSRxMetadata(_Doc):
    rssi: float | None = None  # some gateways give only channel_rssi
    channel_rssi: float = 0.0
    snr: float = 0.0


class _TTSUplinkMessage(_Doc):
    session_key_id: str = ""
    f_cnt: int = 0
    f_port: int = 0
    frm_payload: str = ""
    decoded_payload: dict[str, Any] | None = None  # only with a payload formatter
    rx_metadata: list[_TTSRxMetadata] = []
    received_at: str | None = None


class _TTSMessage(_Doc):
    end_device_ids: _TTSDeviceIds = _TTSDeviceIds()
    correlation_ids: list[str] = []
    received_at: str | None = None
    uplink_message: _TTSUplinkMessage | None = None
    join_accept: dict[str, Any] | None = None
    simulated: bool = False


_CS_EVENTS: dict[str, type[_CSEvent]] = {"up": _CSUp, "status": _CSStatus, "join": _CSJoin, "log": _CSLog}
_CS_ALIVE = ("ack",)  # an ack rides on an uplink; txack, location, integration come from elsewhere


def prefers_server_decoded(codec: str, profile: Profile | None) -> bool:
    """Whether an uplink is read from the server's decoded object (when it sent one) rather than
    from its FRMPayload: for devices whose codec reads JSON text, or when the profile says so."""
    return codec in TEXT_CODECS or (profile is not None and profile.server_decoded)


def unwrap(
    envelope: Envelope, event: str, payload: bytes, *, prefer_decoded: bool, topic_id: tuple[str, str]
) -> Uplink:
    """One network server message -> `Uplink`; DecodeError (and nothing else) when it is malformed.

    `event` is the topic's event name (`up`, `status`, ...); `topic_id` is how the topic named the
    device, e.g. ("dev_eui", "0102030405060708"): a body naming another device is refused.
    """
    try:
        doc = loads_json(payload)
    except DecodeError as exc:
        hint = (
            "; ChirpStack must publish JSON (`json = true` in [integration.mqtt])"
            if (envelope == "chirpstack" and exc.reason is RejectReason.not_json)
            else ""
        )
        raise DecodeError(exc.reason, f"{SERVER_NAMES[envelope]} {event}: {exc.detail}{hint}") from None
    if type(doc) is not dict:
        raise DecodeError(
            RejectReason.bad_envelope,
            f"{SERVER_NAMES[envelope]} {event}: expected a JSON object, got {json_type(doc)}",
        )
    if envelope == "chirpstack":
        return _chirpstack(event, doc, prefer_decoded, topic_id)
    return _tts(event, doc, prefer_decoded, topic_id)


_D = TypeVar("_D", bound=_Doc)


def _parse(model: type[_D], doc: dict[str, Any], where: str) -> _D:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        path = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DecodeError(
            RejectReason.bad_envelope,
            f"{where}: {path}: {first['msg']}, got {json_type(first['input'])} "
            f"{snippet(first['input'])}{more}",
        ) from None


def _time(value: str | None, where: str) -> float | None:
    """RFC 3339 (ChirpStack writes nanoseconds: kept to the microsecond) as epoch seconds."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
        return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError, OSError):  # not a date, or one at the ends of the calendar
        raise DecodeError(RejectReason.bad_envelope, f"{where}: {snippet(value)} is not RFC 3339") from None


def _frame(text: str, where: str) -> bytes | None:
    if not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(RejectReason.bad_envelope, f"{where}: {snippet(text)} is not base64") from None


def _same_device(topic_id: tuple[str, str], scheme: str, body_value: str, where: str) -> None:
    key, value = topic_id
    if key == scheme and body_value and body_value.lower() != value.lower():
        raise DecodeError(
            RejectReason.bad_envelope,
            f"{where}: names device {snippet(body_value)} but the topic names {snippet(value)}",
        )


def _content(frame: bytes | None, decoded: dict[str, Any] | None, prefer_decoded: bool) -> dict[str, Any]:
    """The Uplink fields of what to decode: the server's object or the FRMPayload."""
    if decoded is not None and (prefer_decoded or frame is None):
        return {"properties": decoded}
    if frame is not None:
        return {"frame": frame}
    return {"ignored": IgnoreReason.no_payload}


def _chirpstack(event: str, doc: dict[str, Any], prefer_decoded: bool, topic_id: tuple[str, str]) -> Uplink:
    model = _CS_EVENTS.get(event)
    if model is None:
        return Uplink(event, ignored=IgnoreReason.not_telemetry, seen=event in _CS_ALIVE)
    where = f"ChirpStack {event}"
    msg = _parse(model, doc, where)
    _same_device(topic_id, "dev_eui", msg.deviceInfo.devEui, f"{where}: deviceInfo.devEui")
    key = f"{event}:{msg.deduplicationId}" if msg.deduplicationId else None  # up and status share one id
    at = _time(msg.time, f"{where}: time")
    if isinstance(msg, _CSUp):
        best = max(msg.rxInfo, key=lambda rx: rx.rssi, default=None)
        radio = Radio(best.rssi, best.snr) if best is not None else None
        content = _content(_frame(msg.data, f"{where}: data"), msg.object, prefer_decoded)
        return Uplink(event, key, at, radio=radio, **content)
    if isinstance(msg, _CSStatus):
        if msg.batteryLevelUnavailable or msg.externalPowerSource:
            return Uplink(event, key, at, ignored=IgnoreReason.no_payload)
        return Uplink(event, key, at, properties={"battery_pct": msg.batteryLevel})
    if isinstance(msg, _CSJoin):
        return Uplink(event, key, at, ignored=IgnoreReason.join, note=f"dev_addr={msg.devAddr or '-'}")
    assert isinstance(msg, _CSLog)
    said = f"level={snippet(msg.level)} code={snippet(msg.code)} description={snippet(msg.description, 120)}"
    if msg.level == "ERROR" and msg.code == "UPLINK_CODEC":
        return Uplink(
            event,
            key,
            at,
            error=f"ChirpStack's device-profile codec failed on an uplink: {snippet(msg.description, 200)}; "
            "fix the codec in ChirpStack or set the device's codec in devices.yaml",
        )
    return Uplink(event, key, at, ignored=IgnoreReason.not_telemetry, seen=False, note=said)


def _tts(event: str, doc: dict[str, Any], prefer_decoded: bool, topic_id: tuple[str, str]) -> Uplink:
    where = f"The Things Stack {event}"
    if event not in ("up", "join"):
        return Uplink(event, ignored=IgnoreReason.not_telemetry, seen=False)
    msg = _parse(_TTSMessage, doc, where)
    ids = msg.end_device_ids
    _same_device(topic_id, "lorawan_device_id", ids.device_id, f"{where}: end_device_ids.device_id")
    _same_device(topic_id, "dev_eui", ids.dev_eui, f"{where}: end_device_ids.dev_eui")
    if event == "join":
        dev_addr = (msg.join_accept or {}).get("dev_addr") or "-"
        at = _time(msg.received_at, f"{where}: received_at")
        return Uplink(event, time_s=at, ignored=IgnoreReason.join, note=f"dev_addr={snippet(dev_addr)}")
    up = msg.uplink_message
    if up is None:
        raise DecodeError(RejectReason.bad_envelope, f"{where}: uplink_message is missing")
    if msg.simulated:
        return Uplink(event, ignored=IgnoreReason.simulated, seen=False)
    if up.session_key_id:
        key: str | None = f"up:{ids.dev_eui.lower()}:{up.f_cnt}:{up.session_key_id}"
    else:
        key = next((c for c in msg.correlation_ids if c.startswith("as:up:")), None)
    at = _time(msg.received_at, f"{where}: received_at")
    if at is None:
        at = _time(up.received_at, f"{where}: uplink_message.received_at")
    rx = [(m.rssi if m.rssi is not None else m.channel_rssi, m.snr) for m in up.rx_metadata]
    best = max(rx, default=None)
    frame = _frame(up.frm_payload, f"{where}: uplink_message.frm_payload")
    content = _content(frame, up.decoded_payload, prefer_decoded)
    return Uplink(event, key, at, radio=Radio(*best) if best is not None else None, **content)


def checked_time(at: float, now: float, limits: LimitsConfig) -> float:
    """The server's receive time, refused like a reading's own time when outside the window."""
    if at > now + limits.max_future_s:
        raise DecodeError(
            RejectReason.ts_future,
            f"the network server's time is {at - now:.0f} s ahead of the gateway's clock "
            f"(limit {limits.max_future_s:.0f} s): check the server's clock",
        )
    if not at >= now - limits.max_past_s:
        raise DecodeError(
            RejectReason.ts_past,
            f"the network server's time is {now - at:.0f} s behind the gateway's clock "
            f"(limit {limits.max_past_s:.0f} s)",
        )
    return at


def readings_of(
    up: Uplink, device: Device, codec: str, profile: Profile | None, now: float, limits: LimitsConfig
) -> list[Reading]:
    """The checked Readings of an uplink with content; the best gateway's RSSI/SNR are added to each.

    The server's receive time stands in for a reading without a time of its own (a frame from a
    device without a clock, an object without `ts`). The radio values replace any in the payload:
    the server measured this very uplink.
    """
    at = now if up.time_s is None else checked_time(up.time_s, now, limits)
    if up.frame is not None:
        readings = decode(codec, up.frame, device, at, limits)
    else:
        assert up.properties is not None
        native = profile.to_native(up.properties) if profile is not None else up.properties
        readings = decode("json", orjson.dumps(native), device, at, limits)
    if up.radio is not None:
        for r in readings:
            r.values["rssi_dbm"] = up.radio.rssi_dbm
            r.values["snr_db"] = up.radio.snr_db
    return readings
