"""Payload codecs: a small plugin registry and the one `decode` entry point the gateway calls.

A codec turns bytes into Readings; it must not care how the bytes arrived (MQTT, HTTP push...).
Built in: `json` (native), `senml` (RFC 8428), `manhole_binary` (vendor frame) and `auto`
(json for `{`, senml for `[`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from devices.codecs.base import strip_bom
from devices.codecs.errors import DecodeError, RejectReason, describe_exception
from devices.codecs.fields import conform
from devices.codecs.json_codec import decode_json
from devices.codecs.manhole_binary import decode_manhole_binary, encode_manhole_binary
from devices.codecs.senml import decode_senml
from devices.types import DEVICE_FIELDS, Device
from gridgate.config import LimitsConfig
from gridgate.models import Reading

__all__ = [
    "TEXT_CODECS",
    "Codec",
    "CodecFn",
    "DecodeError",
    "RejectReason",
    "codec_names",
    "decode",
    "encode_manhole_binary",
    "get_codec",
    "register_codec",
]

CodecFn = Callable[[bytes, Device, float], list[Reading]]


@dataclass(frozen=True, slots=True)
class Codec:
    """A named decoder: bytes to Readings with raw values, which `decode` then checks."""

    name: str
    decode: CodecFn


_CODECS: dict[str, Codec] = {}


def register_codec(name: str, fn: CodecFn, *, replace: bool = False) -> Codec:
    """Add a codec under `name` (devices.yaml `codec:`); raises ValueError if the name is taken."""
    if name in _CODECS and not replace:
        raise ValueError(f"codec {name!r} is already registered")
    codec = Codec(name, fn)
    _CODECS[name] = codec
    return codec


def get_codec(name: str) -> Codec:
    """The codec registered as `name`; KeyError naming the known ones otherwise."""
    try:
        return _CODECS[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(sorted(_CODECS))}") from None


def codec_names() -> list[str]:
    return sorted(_CODECS)


_WS = b" \t\r\n"


def decode_auto(payload: bytes, device: Device, now: float) -> list[Reading]:
    """Native JSON for an object, SenML for an array; anything else is `not_json`."""
    head = strip_bom(payload).lstrip(_WS)[:1]
    if head == b"{":
        return decode_json(payload, device, now)
    if head == b"[":
        return decode_senml(payload, device, now)
    if not head:
        raise DecodeError(RejectReason.not_json, "payload is empty")
    raise DecodeError(
        RejectReason.not_json, f"payload starts with {head!r}: expected a JSON object or a SenML array"
    )


# the built-in codecs that read JSON text; any other reads a device's own bytes (a LoRaWAN device
# with one of these is read from its network server's decoded object, docs/platforms.md)
TEXT_CODECS = frozenset({"json", "senml", "auto"})

register_codec("json", decode_json)
register_codec("senml", decode_senml)
register_codec("auto", decode_auto)
register_codec("manhole_binary", decode_manhole_binary)


def decode(
    codec_name: str, payload: bytes, device: Device, now: float, limits: LimitsConfig
) -> list[Reading]:
    """Codec, then the checks every codec shares: declared fields and their types, time window,
    battery >= 0.

    Raises DecodeError with a stable reason, never anything else, for any payload: an exception a
    codec did not mean (a bug, an input nobody foresaw) is `decoder_error` with its type and place.
    """
    codec = _CODECS.get(codec_name)
    if codec is None:
        # a configuration slip (vendor topic or devices.yaml) must not crash the ingest loop
        raise DecodeError(
            RejectReason.bad_payload,
            f"unknown codec {codec_name!r} configured for {device.id}; "
            f"use one of: {', '.join(codec_names())}",
        )
    try:
        return _checked(codec, payload, device, now, limits)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(
            RejectReason.decoder_error, f"{codec.name} codec: {describe_exception(exc)}"
        ) from exc


def _checked(codec: Codec, payload: bytes, device: Device, now: float, limits: LimitsConfig) -> list[Reading]:
    declared = DEVICE_FIELDS[device.type]
    latest = now + limits.max_future_s
    earliest = now - limits.max_past_s
    kept: list[Reading] = []
    dropped: list[str] = []
    for r in codec.decode(payload, device, now):
        r.values, unknown = conform(r.values, declared)
        dropped += unknown
        if not r.values:
            continue  # nothing declared at this time (a SenML pack may hold such a record)
        ts = r.ts
        if ts > latest:
            raise DecodeError(
                RejectReason.ts_future,
                f"ts: {ts:.0f} is {ts - now:.0f} s ahead of the receive time "
                f"(limit {limits.max_future_s:.0f} s)",
            )
        if not ts >= earliest:
            raise DecodeError(
                RejectReason.ts_past,
                f"ts: {ts:.0f} is {now - ts:.0f} s before the receive time (limit {limits.max_past_s:.0f} s)",
            )
        battery = r.values.get("battery_pct")
        if battery is not None and battery < 0:
            raise DecodeError(RejectReason.negative_battery, f"battery_pct: {battery} is negative")
        kept.append(r)
    if not kept:
        ignored = f" (not declared for a {device.type.value}: {', '.join(dropped[:5])})" if dropped else ""
        raise DecodeError(
            RejectReason.missing_field,
            f"payload has no readings{ignored}: expected at least one of "
            f"{', '.join(DEVICE_FIELDS[device.type])}",
        )
    if dropped:
        kept[0].dropped = tuple(dropped)
    return kept
