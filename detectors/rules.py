"""Zone rules: illegal parking dwell, ponding, overflowing bins. Pure functions of
(state, tracked objects, frame time): no I/O, no clock, no randomness, so tests drive hours of
street life in milliseconds.

Each analysis yields `Signal`s (`raise`, `hold`, `clear`) for occurrences identified by a stable
`key`, plus `SnapshotRequest`s for evidence pictures and keys whose held pictures can be
forgotten. Turning signals into `new`/`update`/`end` messages at a sensible rate is the edge
publisher's job (edge/events.py), not the rules'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

from detectors.tracking import TrackedObject
from detectors.zones import (
    BinOverflowZone,
    Box,
    NoParkingZone,
    PondingZone,
    Zone,
    active_since,
    bottom_centre,
    box_area,
    box_distance_ratio,
    box_iou,
    coverage_ratio,
    detection_shape,
    overlap_fraction,
    point_in_polygon,
)
from gridgate.models import Severity

Action = Literal["raise", "hold", "clear"]
Measurement = float | int | str | bool

ILLEGAL_PARKING = "illegal_parking"
PONDING = "ponding"
BIN_OVERFLOW = "bin_overflow"


@dataclass(frozen=True, slots=True)
class Highlight:
    """An object to draw on an evidence picture."""

    box: Box
    label: str
    track_id: int | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    kind: str
    zone: str
    key: str  # one occurrence (one stay of one vehicle, one puddle episode): stable raise -> clear
    action: Action
    at: float
    started_at: float
    severity: Severity
    confidence: float
    measurements: dict[str, Measurement]
    significant: bool = False  # worth an `update` soon (severity or a big change), not just a heartbeat
    highlights: tuple[Highlight, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Take picture `name` for occurrence `key` from the analysed frame of time `at`."""

    key: str
    zone: str
    name: str
    at: float
    highlights: tuple[Highlight, ...] = ()


@dataclass(slots=True)
class RuleResult:
    signals: list[Signal] = field(default_factory=list)
    snapshots: list[SnapshotRequest] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)  # keys whose held pictures are no longer needed

    def extend(self, other: RuleResult) -> None:
        self.signals += other.signals
        self.snapshots += other.snapshots
        self.forget += other.forget


# -- illegal parking ----------------------------------------------------------------------------


@dataclass(slots=True)
class ParkingCandidate:
    key: str
    track_id: int
    box: Box  # last seen
    anchor: Box  # where it came to rest
    stopped_at: float
    first_seen: float
    last_seen: float
    score: float
    seen_at_start: bool
    stopped_picture: bool = False
    raised_at: float | None = None
    matched_now: bool = False
    plate: str | None = None  # the licence plate read on it, when the camera reads plates


@dataclass(slots=True)
class ParkingState:
    candidates: dict[str, ParkingCandidate] = field(default_factory=dict)
    by_track: dict[int, str] = field(default_factory=dict)
    serial: int = 0
    analyses: int = 0
    overflowed: int = 0  # vehicles ignored because max_candidates was reached


def scores(o: TrackedObject, min_score: float | None) -> bool:
    """Whether an object's smoothed score counts: a zone's own bar, else the detector's threshold
    (calibrated per label), which every detection reaching the rules has already passed."""
    return min_score is None or o.score >= min_score


def _eligible_vehicles(zone: NoParkingZone, objects: Sequence[TrackedObject]) -> list[TrackedObject]:
    out = []
    for o in objects:
        if (
            o.label not in zone.labels
            or not scores(o, zone.min_score)
            or box_area(o.box) < zone.min_area_ratio
        ):
            continue
        if point_in_polygon(bottom_centre(o.box), zone.points):
            out.append(o)
    return sorted(out, key=lambda o: o.track_id)


def _new_candidate(zone: NoParkingZone, state: ParkingState, o: TrackedObject, t: float) -> ParkingCandidate:
    state.serial += 1
    return ParkingCandidate(
        key=f"{zone.name}:{state.serial}",
        track_id=o.track_id,
        box=o.box,
        anchor=o.box,
        stopped_at=t,
        first_seen=t,
        last_seen=t,
        score=o.score,
        seen_at_start=state.analyses == 0,
    )


def _parking_signal(
    zone: NoParkingZone, c: ParkingCandidate, action: Action, t: float, dwell: float, reason: str = ""
) -> Signal:
    m: dict[str, Measurement] = {
        "dwell_s": round(dwell, 1),
        "dwell_limit_s": zone.dwell_s,
        "track_id": c.track_id,
        "parked_at_start": c.seen_at_start,
    }
    if reason:
        m["reason"] = reason
    return Signal(
        kind=ILLEGAL_PARKING,
        zone=zone.name,
        key=c.key,
        action=action,
        at=t,
        started_at=c.stopped_at,
        severity=zone.severity,
        confidence=round(min(1.0, max(0.0, c.score)), 3),
        measurements=m,
        highlights=(Highlight(c.box, "vehicle", c.track_id),),
    )


def parking_step(
    zone: NoParkingZone, state: ParkingState, objects: Sequence[TrackedObject], t: float, tz: ZoneInfo
) -> RuleResult:
    """One analysis of a no-parking zone at frame time `t`.

    A vehicle whose box bottom centre stands inside (drifting at most `stationary_tolerance`)
    for `dwell_s` of active hours raises one event for that stay; it is held while the vehicle
    stays and cleared when the vehicle has been gone for `absent_grace_s`, moves off, or the
    active hours end. A vehicle already there at the first analysis counts from then. The stay
    follows the vehicle, not the tracker id: a new id overlapping the last box takes the stay over.
    """
    out = RuleResult()
    window_start = active_since(zone.windows, t, tz)
    for c in state.candidates.values():
        c.matched_now = False

    eligible = _eligible_vehicles(zone, objects)
    visible = {o.track_id for o in eligible}
    for o in eligible:
        key = state.by_track.get(o.track_id)
        cand = state.candidates.get(key) if key else None
        if cand is not None and cand.matched_now:
            cand = None
        if cand is None:  # a new id: does it stand where a known vehicle stood?
            best: ParkingCandidate | None = None
            best_iou = zone.reassociate_iou
            for c in state.candidates.values():
                if c.matched_now or c.track_id in visible:
                    continue  # that vehicle is here under its own id: this is another one
                iou = box_iou(o.box, c.box)
                if iou >= best_iou:
                    best, best_iou = c, iou
            cand = best
            if cand is not None:
                state.by_track.pop(cand.track_id, None)
                cand.track_id = o.track_id
        if cand is None:
            if len(state.candidates) >= zone.max_candidates:
                state.overflowed += 1
                continue
            cand = _new_candidate(zone, state, o, t)
            state.candidates[cand.key] = cand
        state.by_track[o.track_id] = cand.key
        cand.matched_now = True
        cand.box = o.box
        cand.last_seen = t
        cand.score = o.score

        if box_distance_ratio(o.box, cand.anchor) > zone.stationary_tolerance:
            if cand.raised_at is not None:  # drove off within the zone: this stay is over
                out.signals.append(_parking_signal(zone, cand, "clear", t, t - cand.stopped_at, "moved"))
                out.snapshots.append(
                    SnapshotRequest(
                        cand.key, zone.name, "left", t, (Highlight(o.box, "vehicle", o.track_id),)
                    )
                )
                out.forget.append(cand.key)
                del state.candidates[cand.key]
                fresh = _new_candidate(zone, state, o, t)
                fresh.matched_now = True
                state.candidates[fresh.key] = fresh
                state.by_track[o.track_id] = fresh.key
            else:
                cand.anchor = o.box
                cand.stopped_at = t
                cand.stopped_picture = False
                cand.seen_at_start = False
            continue
        if not cand.stopped_picture and t > cand.stopped_at:
            # still standing one analysis later: the frame where it came to rest is the picture
            out.snapshots.append(
                SnapshotRequest(
                    cand.key,
                    zone.name,
                    "stopped",
                    cand.stopped_at,
                    (Highlight(cand.anchor, "vehicle", o.track_id),),
                )
            )
            cand.stopped_picture = True

    for c in list(state.candidates.values()):
        if c.matched_now:
            counted_from = c.stopped_at if window_start is None else max(c.stopped_at, window_start)
            dwell = t - counted_from
            if window_start is None:
                if c.raised_at is not None:
                    out.signals.append(_parking_signal(zone, c, "clear", t, t - c.stopped_at, "hours_ended"))
                    c.raised_at = None
                continue
            if c.raised_at is None and dwell >= zone.dwell_s:
                c.raised_at = t
                out.signals.append(_parking_signal(zone, c, "raise", t, dwell))
                out.snapshots.append(
                    SnapshotRequest(
                        c.key, zone.name, "exceeded", t, (Highlight(c.box, "vehicle", c.track_id),)
                    )
                )
            elif c.raised_at is not None:
                out.signals.append(_parking_signal(zone, c, "hold", t, dwell))
        elif t - c.last_seen > zone.absent_grace_s:
            if c.raised_at is not None:
                out.signals.append(_parking_signal(zone, c, "clear", t, c.last_seen - c.stopped_at, "left"))
                out.snapshots.append(
                    SnapshotRequest(c.key, zone.name, "left", t, (Highlight(c.box, "vehicle", None),))
                )
            out.forget.append(c.key)
            del state.candidates[c.key]
            if state.by_track.get(c.track_id) == c.key:
                del state.by_track[c.track_id]
    state.analyses += 1
    return out


def parking_plate(state: ParkingState, key: str, plate: str) -> str:
    """Stay `key`'s vehicle carries `plate`; returns the key the stay lives on from now.

    Another stay of the zone whose vehicle bore the same plate and is not in view under its own id
    is the same vehicle, its track id switched while it stood: `key` folds into that stay (which
    keeps its start, its dwell and its event), so it raises no second event."""
    cand = state.candidates.get(key)
    if cand is None:
        return key
    for other in state.candidates.values():
        if other.key == key or other.plate != plate or other.matched_now:
            continue
        state.by_track.pop(other.track_id, None)
        other.track_id, other.box, other.anchor = cand.track_id, cand.box, cand.anchor
        other.last_seen, other.score, other.matched_now = cand.last_seen, cand.score, cand.matched_now
        state.by_track[cand.track_id] = other.key
        del state.candidates[key]
        return other.key
    cand.plate = plate
    return key


def parking_evict(state: ParkingState, track_ids: Sequence[int]) -> None:
    """The tracker dropped these ids: forget the id links (the stays themselves live on by overlap)."""
    for tid in track_ids:
        state.by_track.pop(tid, None)


# -- debounced area rules (ponding, bins) -------------------------------------------------------


@dataclass(slots=True)
class Debounced:
    """K consecutive agreeing analyses and a minimum duration before the state flips."""

    active: bool = False
    streak: int = 0
    streak_since: float | None = None
    key: str | None = None
    started_at: float = 0.0
    serial: int = 0
    reported: float = 0.0  # the value of the last significant report
    reported_severity: Severity | None = None

    def observe(self, towards_other_state: bool, t: float, k: int, hold_s: float) -> bool:
        """Count one analysis; True when the state should flip now."""
        if not towards_other_state:
            self.streak, self.streak_since = 0, None
            return False
        self.streak += 1
        if self.streak_since is None:
            self.streak_since = t
        return self.streak >= k and t - self.streak_since >= hold_s

    def flip(self, zone: str, t: float) -> None:
        since = self.streak_since if self.streak_since is not None else t
        self.active = not self.active
        self.streak, self.streak_since = 0, None
        if self.active:
            self.serial += 1
            self.key = f"{zone}:{self.serial}"
            self.started_at = since


def ponding_step(
    zone: PondingZone, state: Debounced, objects: Sequence[TrackedObject], t: float
) -> RuleResult:
    """Fraction of the road region covered by water (mask union, else box union)."""
    out = RuleResult()
    water = [o for o in objects if o.label in zone.labels and scores(o, zone.debounce.min_score)]
    ratio = coverage_ratio(zone.points, (detection_shape(o) for o in water))
    confidence = round(max((o.score for o in water), default=0.0), 3)
    highlights = tuple(Highlight(o.box, o.label, o.track_id) for o in water)
    m: dict[str, Measurement] = {"water_ratio": round(ratio, 3), "water_objects": len(water)}
    k = zone.debounce.consecutive
    if not state.active:
        if state.observe(ratio >= zone.start_ratio, t, k, zone.persist_s):
            state.flip(zone.name, t)
            sev = zone.severity_for(ratio)
            state.reported, state.reported_severity = ratio, sev
            assert state.key is not None
            out.signals.append(
                Signal(
                    PONDING,
                    zone.name,
                    state.key,
                    "raise",
                    t,
                    state.started_at,
                    sev,
                    confidence,
                    m,
                    True,
                    highlights,
                )
            )
            out.snapshots.append(SnapshotRequest(state.key, zone.name, "raised", t, highlights))
        return out
    assert state.key is not None
    sev = zone.severity_for(ratio)
    if state.observe(ratio < zone.stop_ratio, t, k, zone.clear_s):
        key = state.key
        state.flip(zone.name, t)
        out.signals.append(
            Signal(
                PONDING, zone.name, key, "clear", t, state.started_at, sev, confidence, m, True, highlights
            )
        )
        out.snapshots.append(SnapshotRequest(key, zone.name, "cleared", t, highlights))
        out.forget.append(key)
        return out
    significant = sev != state.reported_severity or abs(ratio - state.reported) >= zone.significant_change
    if significant:
        state.reported, state.reported_severity = ratio, sev
    out.signals.append(
        Signal(
            PONDING,
            zone.name,
            state.key,
            "hold",
            t,
            state.started_at,
            sev,
            confidence,
            m,
            significant,
            highlights,
        )
    )
    return out


def bin_step(
    zone: BinOverflowZone, state: Debounced, objects: Sequence[TrackedObject], t: float
) -> RuleResult:
    """Garbage lying on the bin region, or the model's own overflowing-bin class there."""
    out = RuleResult()
    hits = [
        o
        for o in objects
        if (o.label in zone.garbage_labels or o.label in zone.overflow_labels)
        and scores(o, zone.debounce.min_score)
        and overlap_fraction(o.box, zone.points) >= zone.min_overlap
    ]
    overflowing = bool(hits)
    confidence = round(max((o.score for o in hits), default=0.0), 3)
    highlights = tuple(Highlight(o.box, o.label, o.track_id) for o in hits)
    m: dict[str, Measurement] = {
        "garbage_objects": sum(o.label in zone.garbage_labels for o in hits),
        "overflow_class": any(o.label in zone.overflow_labels for o in hits),
    }
    k = zone.debounce.consecutive
    if not state.active:
        if state.observe(overflowing, t, k, zone.persist_s):
            state.flip(zone.name, t)
            assert state.key is not None
            out.signals.append(
                Signal(
                    BIN_OVERFLOW,
                    zone.name,
                    state.key,
                    "raise",
                    t,
                    state.started_at,
                    zone.severity,
                    confidence,
                    m,
                    True,
                    highlights,
                )
            )
            out.snapshots.append(SnapshotRequest(state.key, zone.name, "raised", t, highlights))
        return out
    assert state.key is not None
    if state.observe(not overflowing, t, k, zone.clear_s):
        key = state.key
        state.flip(zone.name, t)
        out.signals.append(
            Signal(
                BIN_OVERFLOW,
                zone.name,
                key,
                "clear",
                t,
                state.started_at,
                zone.severity,
                confidence,
                m,
                True,
                highlights,
            )
        )
        out.snapshots.append(SnapshotRequest(key, zone.name, "cleared", t, highlights))
        out.forget.append(key)
        return out
    out.signals.append(
        Signal(
            BIN_OVERFLOW,
            zone.name,
            state.key,
            "hold",
            t,
            state.started_at,
            zone.severity,
            confidence,
            m,
            False,
            highlights,
        )
    )
    return out


# -- one camera's rules -------------------------------------------------------------------------


class CameraRules:
    """Every zone of one camera, each with its own state."""

    def __init__(self, zones: Sequence[Zone], tz: ZoneInfo) -> None:
        self.zones = list(zones)
        self.tz = tz
        self.parking: dict[str, ParkingState] = {
            z.name: ParkingState() for z in zones if isinstance(z, NoParkingZone)
        }
        self.debounced: dict[str, Debounced] = {
            z.name: Debounced() for z in zones if not isinstance(z, NoParkingZone)
        }

    def step(self, objects: Sequence[TrackedObject], t: float) -> RuleResult:
        out = RuleResult()
        for z in self.zones:
            if isinstance(z, NoParkingZone):
                out.extend(parking_step(z, self.parking[z.name], objects, t, self.tz))
            elif isinstance(z, PondingZone):
                out.extend(ponding_step(z, self.debounced[z.name], objects, t))
            elif isinstance(z, BinOverflowZone):
                out.extend(bin_step(z, self.debounced[z.name], objects, t))
        return out

    def plate_read(self, zone: str, key: str, plate: str) -> str:
        """A plate was read on stay `key` of no_parking `zone`: the key the stay lives on (parking_plate)."""
        st = self.parking.get(zone)
        return key if st is None else parking_plate(st, key, plate)

    def evict_tracks(self, track_ids: Sequence[int]) -> None:
        for st in self.parking.values():
            parking_evict(st, track_ids)

    def sizes(self) -> dict[str, int]:
        """Sizes of every per-track / per-stay map, for soak reports."""
        return {
            "parking_candidates": sum(len(s.candidates) for s in self.parking.values()),
            "parking_track_links": sum(len(s.by_track) for s in self.parking.values()),
        }
