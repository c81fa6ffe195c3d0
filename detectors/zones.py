"""Zones: regions of a camera's picture in relative 0-1 coordinates, their rule settings, and the maths.

Coordinates are fractions of the frame's width and height (x right, y down), so a zone survives a
change of stream resolution. The config models mirror `cameras.yaml` (one model per zone type,
every field described); the geometry is pure and has no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, time, timedelta
from typing import Annotated, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from shapely import Polygon as ShapelyPolygon
from shapely import box as shapely_box
from shapely import make_valid, unary_union
from shapely.geometry.base import BaseGeometry

from gridgate.models import Location, Severity

Box = tuple[float, float, float, float]  # x1, y1, x2, y2, relative 0-1
PointXY = tuple[float, float]


class DetectionLike(Protocol):
    """What rules and the tracker need from a detection (`detectors.model.Detection` has it)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> Box: ...
    @property
    def polygon(self) -> Sequence[PointXY] | None: ...


# -- geometry ----------------------------------------------------------------------------------


def box_area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def bottom_centre(b: Box) -> PointXY:
    """Where a vehicle touches the road: the middle of its box's lower edge."""
    return ((b[0] + b[2]) / 2.0, b[3])


def point_in_polygon(p: PointXY, poly: Sequence[PointXY]) -> bool:
    """Even-odd ray casting; points on an edge may fall either way (fine at pixel scale)."""
    x, y = p
    inside = False
    n = len(poly)
    j = n - 1
    for i in range(n):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def polygon_area(poly: Sequence[PointXY]) -> float:
    """Shoelace area (absolute) of a simple polygon."""
    s = 0.0
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def _shape(points: Sequence[PointXY]) -> BaseGeometry:
    shape = ShapelyPolygon(points)
    return shape if shape.is_valid else make_valid(shape)


def detection_shape(det: DetectionLike) -> BaseGeometry:
    """A detection's mask polygon when the model gave one (segmentation), else its box."""
    if det.polygon is not None and len(det.polygon) >= 3:
        return _shape(det.polygon)
    return shapely_box(*det.box)


def coverage_ratio(region: Sequence[PointXY], shapes: Iterable[BaseGeometry]) -> float:
    """Fraction (0-1) of `region` covered by the union of `shapes` (overlaps counted once)."""
    zone = _shape(region)
    area = zone.area
    parts = [s for s in shapes if not s.is_empty]
    if area <= 0 or not parts:
        return 0.0
    covered = unary_union(parts).intersection(zone).area
    return min(1.0, covered / area)


def overlap_fraction(box: Box, region: Sequence[PointXY]) -> float:
    """Fraction (0-1) of `box`'s area that lies inside `region`."""
    a = box_area(box)
    if a <= 0:
        return 0.0
    return min(1.0, shapely_box(*box).intersection(_shape(region)).area / a)


def box_distance_ratio(a: Box, b: Box) -> float:
    """How far box `a`'s bottom centre moved from box `b`'s, in units of `b`'s larger side."""
    ax, ay = bottom_centre(a)
    bx, by = bottom_centre(b)
    size = max(b[2] - b[0], b[3] - b[1], 1e-6)
    return float(((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 / size)


# -- active hours -------------------------------------------------------------------------------

_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class HoursWindow(BaseModel):
    """One daily window `HH:MM-HH:MM` in local time; an end before the start runs past midnight."""

    model_config = ConfigDict(frozen=True)
    start: time
    end_minutes: int  # minutes after midnight, 1440 for 24:00

    @classmethod
    def parse(cls, text: str) -> HoursWindow:
        m = _HOURS.match(text.strip())
        if not m:
            raise ValueError(f"active hours {text!r} must look like `07:00-22:00` (24-hour, local time)")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        end = h2 * 60 + m2
        if end > 1440:
            raise ValueError(f"active hours {text!r}: the end is after 24:00")
        if h1 * 60 + m1 == end % 1440:
            raise ValueError(
                f"active hours {text!r}: start and end are equal; leave the list empty for always"
            )
        return cls(start=time(h1, m1), end_minutes=end)

    def started_at(self, local: datetime) -> datetime | None:
        """The start of the occurrence of this window containing `local`, or None if outside."""
        start_min = self.start.hour * 60 + self.start.minute
        length = (self.end_minutes - start_min) % 1440 or 1440
        for day_offset in (0, -1):
            day = (local + timedelta(days=day_offset)).date()
            begin = datetime(day.year, day.month, day.day, tzinfo=local.tzinfo) + timedelta(minutes=start_min)
            if begin <= local < begin + timedelta(minutes=length):
                return begin
        return None


def active_since(hours: Sequence[HoursWindow], ts: float, tz: ZoneInfo) -> float | None:
    """Epoch start of the active window containing `ts`, None when outside every window, and
    -inf when there are no windows (always active)."""
    if not hours:
        return float("-inf")
    local = datetime.fromtimestamp(ts, tz)
    starts = [s for w in hours if (s := w.started_at(local)) is not None]
    return min(starts).timestamp() if starts else None


# -- zone config (mirrors cameras.yaml) ---------------------------------------------------------


class _ZoneBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        title="Zone name",
        description="unique within the camera; appears in events as `zone`",
    )
    points: list[tuple[float, float]] = Field(
        min_length=3,
        title="Polygon",
        description="corners as [x, y] fractions of the frame width and height (0-1, origin top left)",
    )
    location: Location | None = Field(
        None, description="where the zone is on the map; defaults to the camera's location"
    )

    @field_validator("points")
    @classmethod
    def _relative(cls, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for i, (x, y) in enumerate(pts):
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(
                    f"point {i} [{x}, {y}] is outside 0-1: zones are fractions of the frame, "
                    "not pixels (divide by the width and height)"
                )
        if polygon_area(pts) <= 1e-6:
            raise ValueError("the polygon has no area (points in a line or repeated)")
        return pts


class DebounceConfig(BaseModel):
    """One bad frame never opens a ticket: K consecutive agreeing analyses above a score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consecutive: int = Field(
        3, ge=1, le=100, description="analyses in a row that must agree before the state changes"
    )
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="smoothed (median) detection score an object needs to count; default: the "
        "model's calibrated threshold for its label (`<weights>.thresholds.json`), which the "
        "detector already applied",
    )


def _parse_hours(v: list[str] | list[HoursWindow]) -> list[HoursWindow]:
    return [w if isinstance(w, HoursWindow) else HoursWindow.parse(w) for w in v]


class NoParkingZone(_ZoneBase):
    """`type: no_parking`: a vehicle standing inside longer than `dwell_s` is illegal parking."""

    type: Literal["no_parking"] = "no_parking"
    read_plates: bool = Field(
        True, description="read the plates of vehicles parked here (when the camera's `plates` are on)"
    )
    labels: list[str] = Field(["vehicle"], min_length=1, description="detector labels that count as vehicles")
    dwell_s: float = Field(
        180.0, gt=0, le=86_400, description="seconds a vehicle may stand inside before it is an event"
    )
    stationary_tolerance: float = Field(
        0.25,
        gt=0,
        le=2,
        description="how far the box bottom centre may drift and still count as standing, "
        "in units of the box's larger side (absorbs detector jitter and a car creeping forward)",
    )
    active_hours: list[str] = Field(
        [],
        description="local-time windows when parking is forbidden, e.g. [`07:00-22:00`]; "
        "empty: always (time zone: the camera's `timezone`)",
    )
    min_area_ratio: float = Field(
        0.002, ge=0, le=1, description="smallest vehicle box counted, as a fraction of the frame area"
    )
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="smoothed detection score a vehicle needs; default: the model's calibrated "
        "vehicle threshold",
    )
    absent_grace_s: float = Field(
        30.0,
        ge=0,
        description="a vehicle not seen for this long has left (covers occlusion by passing traffic "
        "and missed detections)",
    )
    reassociate_iou: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a newly tracked vehicle overlapping a standing one's last box this much takes over its "
        "timer (survives tracker id switches)",
    )
    max_candidates: int = Field(64, ge=1, le=10_000, description="standing vehicles followed at once")
    severity: Severity = Severity.major

    @field_validator("active_hours")
    @classmethod
    def _hours(cls, v: list[str]) -> list[str]:
        _parse_hours(v)
        return v

    @property
    def windows(self) -> list[HoursWindow]:
        return _parse_hours(self.active_hours)


class SeverityStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min_ratio: float = Field(ge=0, le=1, description="from this covered fraction up")
    severity: Severity


class PondingZone(_ZoneBase):
    """`type: ponding`: a road region; standing water covering enough of it for long enough."""

    type: Literal["ponding"] = "ponding"
    labels: list[str] = Field(["water"], min_length=1, description="detector labels that are water")
    start_ratio: float = Field(0.15, gt=0, le=1, description="covered fraction that raises ponding")
    stop_ratio: float = Field(
        0.05, ge=0, le=1, description="covered fraction below which ponding clears (hysteresis)"
    )
    persist_s: float = Field(60.0, ge=0, description="seconds at or above `start_ratio` before raising")
    clear_s: float = Field(120.0, ge=0, description="seconds below `stop_ratio` before clearing")
    severity_steps: list[SeverityStep] = Field(
        [
            SeverityStep(min_ratio=0.0, severity=Severity.minor),
            SeverityStep(min_ratio=0.3, severity=Severity.major),
            SeverityStep(min_ratio=0.6, severity=Severity.critical),
        ],
        description="severity by covered fraction: the highest step at or below the ratio",
    )
    significant_change: float = Field(
        0.1, gt=0, le=1, description="a change of covered fraction this big is worth an `update`"
    )
    debounce: DebounceConfig = DebounceConfig()

    @model_validator(mode="after")
    def _hysteresis(self) -> PondingZone:
        if self.stop_ratio > self.start_ratio:
            raise ValueError(f"stop_ratio {self.stop_ratio} must not exceed start_ratio {self.start_ratio}")
        return self

    def severity_for(self, ratio: float) -> Severity:
        chosen = Severity.minor
        for step in sorted(self.severity_steps, key=lambda s: s.min_ratio):
            if ratio >= step.min_ratio:
                chosen = step.severity
        return chosen


class BinOverflowZone(_ZoneBase):
    """`type: bin_overflow`: a bin's region; garbage on or around it (or an overflowing-bin class)."""

    type: Literal["bin_overflow"] = "bin_overflow"
    garbage_labels: list[str] = Field(["garbage"], description="detector labels that are loose garbage")
    overflow_labels: list[str] = Field(
        ["bin_overflow"], description="labels of a model that knows overflowing bins as a class of its own"
    )
    min_overlap: float = Field(
        0.3, gt=0, le=1, description="fraction of a garbage box that must lie in the region to count"
    )
    persist_s: float = Field(30.0, ge=0, description="seconds of overflow before raising")
    clear_s: float = Field(30.0, ge=0, description="seconds without overflow before clearing")
    debounce: DebounceConfig = DebounceConfig()
    severity: Severity = Severity.minor


Zone = Annotated[NoParkingZone | PondingZone | BinOverflowZone, Field(discriminator="type")]

__all__ = [
    "BinOverflowZone",
    "Box",
    "DebounceConfig",
    "DetectionLike",
    "HoursWindow",
    "NoParkingZone",
    "PondingZone",
    "SeverityStep",
    "Zone",
    "active_since",
    "bottom_centre",
    "box_area",
    "box_distance_ratio",
    "box_iou",
    "coverage_ratio",
    "detection_shape",
    "overlap_fraction",
    "point_in_polygon",
    "polygon_area",
]
