"""`hygiene:` in gateway.yaml: which causes mute which symptoms, and maintenance windows.

The models only: the logic is in gateway/hygiene/ (docs/alert-hygiene.md).
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

# device faults that make the device's own readings untrustworthy
DEVICE_CAUSES = ["device_offline", "tamper", "sensor_fault", "stuck_sensor"]
# value alarms: a reading crossing a threshold. Life-safety alarms (gas_high, bin_fire) and an
# opened cover (manhole_open: a tampered cover is itself the alarm) are never muted by a fault.
VALUE_ALARMS = ["water_high", "bin_full", "manhole_tilt", "bin_fallen"]
# a camera that cannot see its zones (edge/camera_health.py; camera_blurred still sees, less sharply)
CAMERA_CAUSES = ["camera_lost", "camera_frozen", "camera_obscured", "camera_moved"]
VIDEO_EVENTS = ["illegal_parking", "ponding", "bin_overflow"]

# what `device_types` may name: the device types of devices.yaml, and the video sources
SOURCE_TYPES = ("manhole", "bin", "water_gauge", "camera", "edge")

SourceId = Annotated[str, Field(min_length=1, max_length=128)]

_HHMM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


WEEKDAYS: tuple[Weekday, ...] = tuple(Weekday)


class InhibitRule(BaseModel):
    """While an event of a `causes` kind is active (and `hygiene.recovery_s` after it clears), events
    of a `symptoms` kind in the same scope are stored as suppressed by it and open no ticket."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="shown in logs and docs")
    causes: list[str] = Field(min_length=1, description="event kinds that mute, e.g. device_offline")
    symptoms: list[str] = Field(min_length=1, description="event kinds that are muted, e.g. water_high")
    scope: Literal["source", "behind"] = Field(
        "source",
        description="`source`: the symptom comes from the cause's own source (device:<id>, camera:<id>); "
        "`behind`: the symptom's device has `behind: <id>` naming the cause's edge box or device",
    )


DEFAULT_INHIBIT: tuple[InhibitRule, ...] = (
    InhibitRule(name="faulty_device_mutes_its_values", causes=DEVICE_CAUSES, symptoms=VALUE_ALARMS),
    InhibitRule(
        name="offline_uplink_mutes_devices_behind",
        causes=["device_offline"],
        symptoms=["device_offline"],
        scope="behind",
    ),
    InhibitRule(name="blind_camera_mutes_its_video", causes=CAMERA_CAUSES, symptoms=VIDEO_EVENTS),
)


def parse_hhmm(text: str) -> time | None:
    """`HH:MM` as a time; `24:00` (the end of a day) as None."""
    return None if text == "24:00" else time(int(text[:2]), int(text[3:]))


class WindowSpec(BaseModel):
    """What a maintenance window covers and when: the body of `POST /api/v1/maintenance-windows`.

    Scope: the fields given must all match (a device in `devices`, of a type in `device_types`, in a
    grid in `grids`...); at least one is needed. Time: `starts_at` + `ends_at` (one-off), or
    `weekdays` + `start` + `end` (weekly, in the gateway's `timezone`; `end` before `start` runs
    past midnight), optionally bounded by `starts_at` / `ends_at`.
    """

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="why, shown on the dashboard and in audit")
    devices: list[SourceId] = Field(
        default_factory=list, max_length=1000, description="source ids: device, camera or edge box ids"
    )
    device_types: list[str] = Field(
        default_factory=list,
        max_length=len(SOURCE_TYPES),
        description="manhole, bin, water_gauge; `camera` and `edge` for those sources",
    )
    grids: list[SourceId] = Field(default_factory=list, max_length=1000, description="grid ids")
    micro_grids: list[SourceId] = Field(default_factory=list, max_length=1000, description="micro-grid ids")
    starts_at: AwareDatetime | None = Field(None, description="ISO 8601 with an offset; a one-off's start")
    ends_at: AwareDatetime | None = Field(
        None, description="ISO 8601 with an offset; the window expires then"
    )
    weekdays: list[Weekday] = Field(
        default_factory=list,
        max_length=7,
        description="weekly: mon..sun on which the window opens at `start`",
    )
    start: str | None = Field(None, description="weekly: local opening time `HH:MM`")
    end: str | None = Field(None, description="weekly: local closing time `HH:MM` (`24:00`: midnight)")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None and not _HHMM.fullmatch(v):
            raise ValueError(f"{v!r} is not a time of day: write HH:MM, 00:00 to 23:59 (or 24:00 for an end)")
        return v

    @field_validator("device_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in SOURCE_TYPES]
        if unknown:
            raise ValueError(f"unknown type {', '.join(map(repr, unknown))}: use {', '.join(SOURCE_TYPES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> WindowSpec:
        if not (self.devices or self.device_types or self.grids or self.micro_grids):
            raise ValueError("name what the window covers: devices, device_types, grids or micro_grids")
        weekly = bool(self.weekdays) or self.start is not None or self.end is not None
        if weekly:
            if not self.weekdays or self.start is None or self.end is None:
                raise ValueError("a weekly window needs all of weekdays, start and end (HH:MM)")
            if self.start == "24:00":
                raise ValueError("start 24:00 is not a time of day: use 00:00 of the next weekday")
            if self.start == self.end:
                raise ValueError(f"start and end are both {self.start}: give a window of some length")
        elif self.starts_at is None or self.ends_at is None:
            raise ValueError(
                "a one-off window needs starts_at and ends_at; a weekly one weekdays, start, end"
            )
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError(
                f"ends_at {self.ends_at.isoformat()} is not after starts_at {self.starts_at.isoformat()}"
            )
        return self


class ConfiguredWindow(WindowSpec):
    """A maintenance window written in gateway.yaml (listed by the API, ended only by editing the file)."""

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="unique among configured windows")
    created_by: str = Field("config", min_length=1, max_length=64, description="who asked for it")


class HygieneConfig(BaseModel):
    """`hygiene:`: a cause mutes its symptoms (inhibition), maintenance windows mute what they cover."""

    model_config = ConfigDict(extra="forbid")

    inhibit: list[InhibitRule] = Field(
        default_factory=lambda: list(DEFAULT_INHIBIT),
        description="which cause mutes which symptoms; replaces the defaults (docs/alert-hygiene.md)",
    )
    recovery_s: float = Field(
        120.0,
        ge=0,
        description="a cause keeps muting this long after it clears (a device back online flushes "
        "readings it buffered); a muted symptom still active then becomes live and gets its ticket",
    )
    maintenance_windows: list[ConfiguredWindow] = Field(
        default_factory=list, description="windows from the file, beside those created over the API"
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> HygieneConfig:
        ids = [w.id for w in self.maintenance_windows]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"maintenance_windows: id {', '.join(twice)} used more than once")
        names = [r.name for r in self.inhibit]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"inhibit: rule name {', '.join(twice)} used more than once")
        return self
