"""What a platform push becomes: native messages on the device's own topics, or problems to dead-letter."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, ValidationError

from devices.codecs.errors import RejectReason
from devices.registry import DeviceRegistry, Profile
from devices.types import Device
from gridgate.topics import Topics

_IDENTITY = Profile()  # a device without a profile: platform names pass as they are


def _number_as_text(value: Any) -> Any:
    return str(value) if type(value) is int else value


IdText = Annotated[str, BeforeValidator(_number_as_text)]  # platforms send ids as strings or numbers


@dataclass(frozen=True, slots=True)
class NativeMessage:
    """One message as the device would have published it over MQTT."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class PushProblem:
    """A part of a push that cannot become a message: counted by reason and dead-lettered."""

    reason: RejectReason
    detail: str
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class Note:
    """Something logged and counted but not stored: a command reply, an event's type."""

    what: str  # a metric label: from a fixed set, never the platform's free text
    detail: str = ""  # for the log line


@dataclass(slots=True)
class ParsedPush:
    """A push body, parsed: its retry key, the native messages, the problems, what was only noted."""

    key: str | None = None  # the same for every retry of this body; None: not deduplicated
    messages: list[NativeMessage] = field(default_factory=list)
    problems: list[PushProblem] = field(default_factory=list)
    noted: list[Note] = field(default_factory=list)


def dedup_key(platform: str, *parts: Any) -> str:
    """A short stable key for a push: the platform and the parts that name one message."""
    return hashlib.sha256(orjson.dumps([platform, *parts], option=orjson.OPT_NON_STR_KEYS)).hexdigest()


def payload_digest(value: Any) -> str:
    """SHA-256 of a JSON value in a canonical form (sorted keys): the same payload, the same digest."""
    return hashlib.sha256(
        orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    ).hexdigest()


def find_device(registry: DeviceRegistry, ids: Sequence[tuple[str, str | None]]) -> Device | None:
    """The first device the registry knows under one of the (scheme, value) ids, tried in order."""
    for scheme, value in ids:
        if value:
            device = registry.lookup(scheme, value)
            if device is not None:
                return device
    return None


def unknown_device(platform: str, ids: Sequence[tuple[str, str | None]]) -> PushProblem:
    """`unknown_device`, naming the ids the platform sent and the devices.yaml line that would match."""
    given = [(scheme, value) for scheme, value in ids if value]
    if not given:
        return PushProblem(RejectReason.unknown_device, f"{platform} push names no device (no id field)")
    named = ", ".join(f"{scheme} {value!r}" for scheme, value in given)
    fixes = " or ".join(f"`{scheme}: {value}`" for scheme, value in given)
    return PushProblem(
        RejectReason.unknown_device,
        f"{platform} device with {named} is in no entry of devices.yaml: add {fixes} to its device",
    )


def reading(
    topics: Topics, registry: DeviceRegistry, device: Device, properties: Mapping[str, Any], ts_ms: int | None
) -> NativeMessage:
    """Platform-decoded properties as a native JSON uplink: the profile's field map, the platform's time."""
    native = (registry.profile_of(device) or _IDENTITY).to_native(properties)
    if ts_ms is not None:
        native["ts"] = ts_ms / 1000
    return NativeMessage(topics.device_up(device.type.value, device.id), orjson.dumps(native))


def raw_uplink(topics: Topics, device: Device, data: bytes) -> NativeMessage:
    """The device's own bytes (transparent mode), for the codec named in devices.yaml."""
    return NativeMessage(topics.device_up(device.type.value, device.id), data)


def status(topics: Topics, device: Device, online: bool) -> NativeMessage:
    return NativeMessage(
        topics.device_status(device.type.value, device.id), b"online" if online else b"offline"
    )


def invalid(platform: str, exc: ValidationError, where: str = "") -> PushProblem:
    """`bad_payload` naming each invalid field of an envelope (at most three)."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{where}{loc}: {err['msg']}")
    return PushProblem(RejectReason.bad_payload, f"{platform} push: " + "; ".join(parts))
