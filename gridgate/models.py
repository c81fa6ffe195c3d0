"""Shared kernel models: readings from devices, events, and time-series points.

Readings and points sit on the per-message hot path, so they are slotted dataclasses; events
cross process boundaries (MQTT, API, storage) and are pydantic models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ulid import ULID

ReadingValue = float | int | bool | str  # the field types of devices.types.FieldType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Reading:
    """One decoded uplink from one device: named values at one instant (epoch seconds).

    `dropped`: the payload's fields its device type does not declare (not stored, counted).
    """

    device_id: str
    device_type: str
    ts: float
    values: dict[str, ReadingValue]
    seq: int | None = None
    dropped: tuple[str, ...] = ()


def ns_from_s(ts: float) -> int:
    """Epoch seconds as integer nanoseconds at microsecond resolution, without float noise.

    A float time carries about 0.2 us of error (an ISO string or epoch milliseconds divided by
    1000), so `int(ts * 1e9)` would store `...491000064`; rounding to the microsecond, the finest
    resolution a timestamp gets here (ISO 8601 in Python, the receive clock), stores what was sent.
    """
    return round(ts * 1e6) * 1000


def ns_from_datetime(at: datetime) -> int:
    """A datetime as exact integer epoch nanoseconds (datetimes hold whole microseconds); a naive
    one is UTC."""
    delta = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)) - _EPOCH
    return ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000


@dataclass(slots=True)
class Point:
    """One time-series point, sink-neutral (line protocol, SQLite...)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, ReadingValue]
    time_ns: int


class Severity(StrEnum):
    info = "info"
    minor = "minor"
    major = "major"
    critical = "critical"


class EventState(StrEnum):
    active = "active"
    cleared = "cleared"


class EventClass(StrEnum):
    """Alarms are problems in the street; faults are problems with the device itself."""

    alarm = "alarm"
    fault = "fault"


class Location(BaseModel):
    model_config = ConfigDict(frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


def new_event_id() -> str:
    return str(ULID())


def event_id_for(source: str, kind: str, t: float) -> str:
    """The ULID of the event `kind` raised by `source` at `t`: the same every time it is raised.

    A gateway that crashed replays its journal from the last checkpoint; an alarm raised again by
    that replay keeps the id it was first published and ticketed with, so nobody sees it twice.
    """
    ms = round(t * 1000)
    rand = hashlib.blake2b(f"{source}|{kind}|{ms}".encode(), digest_size=10).digest()
    return str(ULID.from_bytes(max(ms, 0).to_bytes(6, "big") + rand))


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class Event(BaseModel):
    """One problem seen in the street or on a device; the same model for video and sensors."""

    id: str = Field(default_factory=new_event_id)
    kind: str
    event_class: EventClass = EventClass.alarm
    source: str = Field(description="`camera:<id>` or `device:<id>`")
    location: Location | None = None
    grid_id: str | None = None
    micro_grid_id: str | None = None
    severity: Severity = Severity.major
    state: EventState = EventState.active
    started_at: datetime
    ended_at: datetime | None = None
    updated_at: datetime | None = None
    confidence: float = 1.0
    value: float | None = Field(default=None, description="the reading that raised or cleared it")
    measurements: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)
    dedup_key: str = ""
    message: str = ""
    suppressed_by: str | None = Field(
        None,
        description="muted, no ticket: the id of the cause event (an offline device, a lost camera) or "
        "`maintenance:<window id>`; None: live (docs/alert-hygiene.md)",
    )

    def model_post_init(self, __context: Any) -> None:
        if not self.dedup_key:
            self.dedup_key = f"{self.kind}:{self.source}"

    @property
    def source_type(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def source_id(self) -> str:
        return self.source.split(":", 1)[-1]


@dataclass(slots=True)
class Rejection:
    """A payload the gateway refused: counted by `reason`, sent to the dead-letter topic."""

    topic: str
    reason: str
    detail: str
    payload: bytes = field(repr=False, default=b"")
    device_id: str | None = None


class EdgePhase(StrEnum):
    new = "new"
    update = "update"
    end = "end"


class EvidenceRef(BaseModel):
    """One snapshot of an edge event; the JPEG goes on `{p}/edge/{edge_id}/evidence/{event_id}/{name}`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="e.g. `stopped.jpg`, `exceeded.jpg`")
    taken_at: datetime
    bytes: int = Field(ge=0)


# camera health faults an edge box raises (edge/camera_health.py): maintenance faults, not alarms
CAMERA_FAULTS = frozenset(
    {"camera_lost", "camera_frozen", "camera_obscured", "camera_blurred", "camera_moved"}
)
CAMERA_ZONE = "camera"  # the `zone` of a camera fault: the whole picture


class EdgeEventMessage(BaseModel):
    """`{p}/edge/{edge_id}/events`: one video event's `new`, `update` or `end`, published at QoS 1."""

    model_config = ConfigDict(extra="forbid")

    edge_id: str = Field(min_length=1, max_length=64)
    camera_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0, description="per edge box, increasing: replayed messages keep their order")
    phase: EdgePhase
    event_id: str = Field(min_length=1, max_length=64, description="stable from new to end")
    kind: str = Field(
        description="illegal_parking, ponding, bin_overflow, or a camera fault (camera_lost ...)"
    )
    zone: str
    location: Location
    severity: Severity = Severity.major
    confidence: float = Field(ge=0, le=1)
    started_at: datetime
    ended_at: datetime | None = None
    at: datetime = Field(description="frame time of this message")
    measurements: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="dwell_s, water_ratio, track_id, ..."
    )
    evidence: list[EvidenceRef] = []
