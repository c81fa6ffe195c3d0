"""Zone maths, the tracker and the three rules, driven by hand-made detections and frame times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from detectors.rules import (
    CameraRules,
    Debounced,
    ParkingState,
    RuleResult,
    bin_step,
    parking_evict,
    parking_step,
    ponding_step,
)
from detectors.tracking import TrackedObject, Tracker, TrackerConfig
from detectors.zones import (
    BinOverflowZone,
    Box,
    HoursWindow,
    NoParkingZone,
    PondingZone,
    active_since,
    bottom_centre,
    box_iou,
    coverage_ratio,
    overlap_fraction,
    point_in_polygon,
    polygon_area,
)
from gridgate.models import Severity

UTC = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 UTC
SQUARE = [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)]  # lower-left quarter of the frame


@dataclass(frozen=True)
class Det:
    label: str
    score: float
    box: Box
    polygon: Sequence[tuple[float, float]] | None = None
    class_name: str = ""


def obj(track_id: int, box: Box, label: str = "vehicle", score: float = 0.9) -> TrackedObject:
    return TrackedObject(track_id, label, score, score, box, None, label, 0.0, 0.0)


CAR = (0.1, 0.6, 0.3, 0.8)  # bottom centre (0.2, 0.8): inside SQUARE
CAR_OUTSIDE = (0.6, 0.6, 0.8, 0.8)


# -- zone maths ------------------------------------------------------------------------------------


def test_geometry_basics() -> None:
    assert polygon_area(SQUARE) == pytest.approx(0.25)
    assert point_in_polygon((0.2, 0.8), SQUARE)
    assert not point_in_polygon((0.7, 0.8), SQUARE)
    assert bottom_centre((0.1, 0.2, 0.3, 0.6)) == pytest.approx((0.2, 0.6))
    assert box_iou(CAR, CAR) == pytest.approx(1.0)
    assert box_iou(CAR, CAR_OUTSIDE) == 0.0
    assert box_iou((0, 0, 0.2, 0.2), (0.1, 0, 0.3, 0.2)) == pytest.approx(1 / 3)
    assert overlap_fraction((0.4, 0.5, 0.6, 0.6), SQUARE) == pytest.approx(0.5)


def test_coverage_counts_overlaps_once_and_uses_masks() -> None:
    from shapely import Polygon, box

    assert coverage_ratio(SQUARE, [box(0, 0.5, 0.25, 1.0)]) == pytest.approx(0.5)
    # two overlapping boxes: union, not sum
    assert coverage_ratio(SQUARE, [box(0, 0.5, 0.25, 1.0), box(0, 0.5, 0.25, 1.0)]) == pytest.approx(0.5)
    # a triangle mask covers half of its bounding box
    tri = Polygon([(0, 0.5), (0.5, 0.5), (0, 1.0)])
    assert coverage_ratio(SQUARE, [tri]) == pytest.approx(0.5)
    assert coverage_ratio(SQUARE, []) == 0.0


def test_zone_rejects_pixels_and_degenerate_polygons() -> None:
    with pytest.raises(ValidationError, match="outside 0-1"):
        NoParkingZone(name="a", points=[(0, 0), (640, 0), (640, 360)])
    with pytest.raises(ValidationError, match="no area"):
        NoParkingZone(name="a", points=[(0, 0), (0.5, 0.5), (1, 1)])
    with pytest.raises(ValidationError, match="07:00-22:00"):
        NoParkingZone(name="a", points=SQUARE, active_hours=["7am-10pm"])
    with pytest.raises(ValidationError, match="stop_ratio"):
        PondingZone(name="p", points=SQUARE, start_ratio=0.1, stop_ratio=0.2)


def test_active_hours_windows_and_midnight() -> None:
    day = [HoursWindow.parse("07:00-22:00")]
    at = datetime(2026, 5, 4, 8, 30, tzinfo=SHANGHAI).timestamp()
    assert active_since(day, at, SHANGHAI) == datetime(2026, 5, 4, 7, 0, tzinfo=SHANGHAI).timestamp()
    assert active_since(day, datetime(2026, 5, 4, 23, 0, tzinfo=SHANGHAI).timestamp(), SHANGHAI) is None
    night = [HoursWindow.parse("22:00-06:00")]
    late = datetime(2026, 5, 5, 1, 0, tzinfo=SHANGHAI).timestamp()
    assert active_since(night, late, SHANGHAI) == datetime(2026, 5, 4, 22, 0, tzinfo=SHANGHAI).timestamp()
    assert active_since([], at, SHANGHAI) == float("-inf")


# -- tracker ---------------------------------------------------------------------------------------


def test_tracker_keeps_ids_and_reports_removed() -> None:
    tr = Tracker(TrackerConfig(lost_ttl_s=1.0, min_missed=2, stationary_after_s=100))
    a = tr.update([Det("vehicle", 0.9, CAR)], T0).objects
    b = tr.update([Det("vehicle", 0.9, (0.11, 0.6, 0.31, 0.8))], T0 + 0.5).objects
    assert a[0].track_id == b[0].track_id
    tid = a[0].track_id
    assert tr.update([], T0 + 1.0).removed == []  # one miss is never enough
    assert tr.update([], T0 + 3.0).removed == [tid]
    assert len(tr) == 0


def test_tracker_low_score_only_extends() -> None:
    tr = Tracker()
    first = tr.update([Det("vehicle", 0.9, CAR)], T0).objects[0]
    weak = tr.update([Det("vehicle", 0.3, CAR)], T0 + 0.5).objects
    assert [o.track_id for o in weak] == [first.track_id]
    assert tr.update([Det("vehicle", 0.3, CAR_OUTSIDE)], T0 + 1).objects == []  # no new track from weak


def test_stationary_track_survives_occlusion_and_partial_box() -> None:
    tr = Tracker(TrackerConfig(stationary_after_s=5, stationary_hold_s=60, lost_ttl_s=1))
    tid = None
    for i in range(20):  # 10 s standing
        tid = tr.update([Det("vehicle", 0.9, CAR)], T0 + i * 0.5).objects[0].track_id
    for i in range(40):  # 20 s hidden behind a bus
        tr.update([], T0 + 10 + i * 0.5)
    # reappears partly hidden: a smaller box, still overlapping its last one
    back = tr.update([Det("vehicle", 0.9, (0.15, 0.62, 0.3, 0.8))], T0 + 31).objects
    assert back[0].track_id == tid


def test_tracker_is_bounded() -> None:
    tr = Tracker(TrackerConfig(max_tracks=5))
    dets = [Det("vehicle", 0.9, (i * 0.09, 0.1, i * 0.09 + 0.05, 0.2)) for i in range(10)]
    upd = tr.update(dets, T0)
    assert len(tr) == 5
    assert len(upd.removed) == 5


def test_scores_smoothed_by_median() -> None:
    tr = Tracker(TrackerConfig(score_window=3))
    for s in (0.9, 0.9, 0.2):
        o = tr.update([Det("water", s, CAR)], T0).objects[0]
    assert o.score == pytest.approx(0.9)  # one bad score does not drag the track down


# -- illegal parking -------------------------------------------------------------------------------


def run_parking(
    zone: NoParkingZone, frames: list[tuple[float, list[TrackedObject]]], tz: ZoneInfo = UTC
) -> tuple[ParkingState, RuleResult]:
    st = ParkingState()
    out = RuleResult()
    for t, objs in frames:
        out.extend(parking_step(zone, st, objs, t, tz))
    return st, out


def actions(res: RuleResult) -> list[str]:
    return [s.action for s in res.signals if s.action != "hold"]


def test_parking_none_before_dwell_one_after() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=180)
    frames = [(T0 + i * 10.0, [obj(1, CAR)]) for i in range(18)]  # 170 s
    _, res = run_parking(zone, frames)
    assert actions(res) == []
    frames += [(T0 + i * 10.0, [obj(1, CAR)]) for i in range(18, 40)]  # to 390 s
    _, res = run_parking(zone, frames)
    raises = [s for s in res.signals if s.action == "raise"]
    assert len(raises) == 1
    assert raises[0].at == T0 + 180
    assert raises[0].measurements["dwell_s"] == pytest.approx(180)
    assert raises[0].started_at == T0
    holds = [s for s in res.signals if s.action == "hold"]
    assert holds and holds[-1].measurements["dwell_s"] == pytest.approx(390)
    names = [(s.name, s.at) for s in res.snapshots]
    assert ("stopped", T0) in names and ("exceeded", T0 + 180) in names


def test_parking_clears_when_vehicle_leaves() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=60, absent_grace_s=20)
    frames = [(T0 + i * 10.0, [obj(1, CAR)]) for i in range(10)]
    frames += [(T0 + 100 + i * 10.0, []) for i in range(5)]
    st, res = run_parking(zone, frames)
    assert actions(res) == ["raise", "clear"]
    clear = res.signals[-1]
    assert clear.measurements["reason"] == "left"
    assert clear.key in res.forget
    assert not st.candidates and not st.by_track


def test_passing_car_raises_nothing() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=5)
    frames = []
    for i in range(10):  # drives left to right through the zone at 2 fps
        x = 0.0 + i * 0.08
        frames.append((T0 + i * 0.5, [obj(7, (x, 0.6, x + 0.2, 0.8))]))
    frames += [(T0 + 5 + i, []) for i in range(60)]
    _, res = run_parking(zone, frames)
    assert actions(res) == []
    assert not [s for s in res.snapshots if s.name == "stopped"]


def test_id_switch_keeps_the_timer() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=120)
    frames = [(T0 + i * 10.0, [obj(1, CAR)]) for i in range(7)]  # 0-60 s as id 1
    frames += [(T0 + 65, [])]  # missed once
    frames += [(T0 + 70 + i * 10.0, [obj(42, (0.105, 0.6, 0.305, 0.8))]) for i in range(6)]  # id 42
    st, res = run_parking(zone, frames)
    raises = [s for s in res.signals if s.action == "raise"]
    assert len(raises) == 1
    assert raises[0].at == T0 + 120  # not T0 + 70 + 120
    assert raises[0].measurements["track_id"] == 42
    parking_evict(st, [1])
    assert 1 not in st.by_track


def test_two_cars_side_by_side_keep_their_own_timers() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=60)
    other = (0.3, 0.6, 0.45, 0.8)
    frames = [(T0 + i * 10.0, [obj(1, CAR)] + ([obj(2, other)] if i >= 3 else [])) for i in range(10)]
    _, res = run_parking(zone, frames)
    raises = [s for s in res.signals if s.action == "raise"]
    assert [(r.measurements["track_id"], r.at) for r in raises] == [(1, T0 + 60), (2, T0 + 90)]


def test_parked_at_start_counts() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=60)
    _, res = run_parking(zone, [(T0 + i * 10.0, [obj(3, CAR)]) for i in range(8)])
    raise_ = next(s for s in res.signals if s.action == "raise")
    assert raise_.measurements["parked_at_start"] is True


def test_active_hours() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=180, active_hours=["07:00-22:00"])
    start = datetime(2026, 5, 4, 6, 50, tzinfo=SHANGHAI).timestamp()  # parked at 06:50, before hours
    frames = [(start + i * 30.0, [obj(1, CAR)]) for i in range(40)]  # until 07:09:30
    _, res = run_parking(zone, frames, SHANGHAI)
    raise_ = next(s for s in res.signals if s.action == "raise")
    seven = datetime(2026, 5, 4, 7, 0, tzinfo=SHANGHAI).timestamp()
    assert raise_.at == seven + 180  # dwell counts from the start of hours
    # at 22:00 the event ends (parking allowed again)
    late = datetime(2026, 5, 4, 21, 59, tzinfo=SHANGHAI).timestamp()
    st = ParkingState()
    res = RuleResult()
    for i in range(20):
        res.extend(parking_step(zone, st, [obj(1, CAR)], late - 600 + i * 60, SHANGHAI))
    assert actions(res) == ["raise", "clear"]
    assert res.signals[-1].measurements["reason"] == "hours_ended"


def test_small_or_outside_vehicles_ignored() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=10, min_area_ratio=0.01)
    tiny = (0.2, 0.75, 0.25, 0.8)  # 0.0025 of the frame
    _, res = run_parking(zone, [(T0 + i * 5.0, [obj(1, tiny), obj(2, CAR_OUTSIDE)]) for i in range(10)])
    assert res.signals == []


def test_moving_off_within_zone_ends_the_stay() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=30)
    frames = [(T0 + i * 10.0, [obj(1, CAR)]) for i in range(5)]
    frames += [(T0 + 50, [obj(1, (0.25, 0.6, 0.45, 0.8))])]  # drove a car length forward
    _, res = run_parking(zone, frames)
    assert actions(res) == ["raise", "clear"]
    assert res.signals[-1].measurements["reason"] == "moved"


def test_parking_candidates_bounded() -> None:
    zone = NoParkingZone(name="gate", points=SQUARE, dwell_s=30, max_candidates=3)
    cars = [obj(i, (0.02 + i * 0.09, 0.6, 0.08 + i * 0.09, 0.8)) for i in range(5)]
    st, _ = run_parking(zone, [(T0, cars)])
    assert len(st.candidates) == 3 and st.overflowed == 2


# -- ponding ---------------------------------------------------------------------------------------


def water(track_id: int, box: Box, score: float = 0.9) -> TrackedObject:
    return obj(track_id, box, "water", score)


def test_ponding_persist_severity_and_clear() -> None:
    zone = PondingZone(
        name="road", points=SQUARE, start_ratio=0.15, stop_ratio=0.05, persist_s=30, clear_s=20
    )
    st = Debounced()
    res = RuleResult()
    puddle = (0.0, 0.5, 0.1, 1.0)  # 20 % of the region
    for i in range(10):  # 0..45 s
        res.extend(ponding_step(zone, st, [water(1, puddle)], T0 + i * 5))
    raises = [s for s in res.signals if s.action == "raise"]
    assert len(raises) == 1 and raises[0].at == T0 + 30 and raises[0].started_at == T0
    assert raises[0].severity == Severity.minor
    assert raises[0].measurements["water_ratio"] == pytest.approx(0.2)
    # it grows to 70 %: a significant hold with critical severity
    big = (0.0, 0.5, 0.35, 1.0)
    r = ponding_step(zone, st, [water(1, big)], T0 + 50)
    assert r.signals[0].action == "hold" and r.signals[0].significant
    assert r.signals[0].severity == Severity.critical
    # dries up: below stop_ratio for clear_s (and K analyses)
    res = RuleResult()
    for i in range(8):
        res.extend(ponding_step(zone, st, [], T0 + 60 + i * 5))
    assert actions(res) == ["clear"]
    assert next(s for s in res.signals if s.action == "clear").at == T0 + 80


def test_ponding_one_bad_frame_never_raises() -> None:
    zone = PondingZone(name="road", points=SQUARE, persist_s=0)
    st = Debounced()
    res = RuleResult()
    flood = (0.0, 0.5, 0.5, 1.0)
    for i in range(20):
        res.extend(ponding_step(zone, st, [water(1, flood)] if i % 3 == 0 else [], T0 + i))
    assert res.signals == []
    # two in a row is not three in a row either
    for i in range(2):
        res.extend(ponding_step(zone, st, [water(1, flood)], T0 + 100 + i))
    assert res.signals == []
    res.extend(ponding_step(zone, st, [water(1, flood)], T0 + 102))
    assert actions(res) == ["raise"]


def test_ponding_low_scores_ignored_below_a_zone_bar() -> None:
    zone = PondingZone(name="road", points=SQUARE, persist_s=0, debounce={"min_score": 0.6})
    st = Debounced()
    res = RuleResult()
    for i in range(5):
        res.extend(ponding_step(zone, st, [water(1, (0.0, 0.5, 0.5, 1.0), score=0.4)], T0 + i))
    assert res.signals == []


def test_ponding_counts_what_passed_the_calibrated_threshold_by_default() -> None:
    """Without a zone bar, the detector's calibrated per-label threshold is the bar: a detection
    that reached the rules counts, K analyses in a row still needed."""
    zone = PondingZone(name="road", points=SQUARE, persist_s=0)
    st = Debounced()
    res = RuleResult()
    for i in range(2):
        res.extend(ponding_step(zone, st, [water(1, (0.0, 0.5, 0.5, 1.0), score=0.3)], T0 + i))
    assert res.signals == []
    res.extend(ponding_step(zone, st, [water(1, (0.0, 0.5, 0.5, 1.0), score=0.3)], T0 + 2))
    assert actions(res) == ["raise"]


# -- bins ------------------------------------------------------------------------------------------

BIN = [(0.6, 0.4), (0.8, 0.4), (0.8, 0.8), (0.6, 0.8)]


def test_bin_overflow_k_of_n_persist_and_clear() -> None:
    zone = BinOverflowZone(name="bin1", points=BIN, persist_s=10, clear_s=10)
    st = Debounced()
    res = RuleResult()
    garbage = obj(5, (0.62, 0.7, 0.75, 0.85), "garbage")  # most of it on the bin region
    for i in range(6):
        res.extend(bin_step(zone, st, [garbage], T0 + i * 2.5))
    assert actions(res) == ["raise"]
    assert next(s for s in res.signals if s.action == "raise").at == T0 + 10
    for i in range(6):
        res.extend(bin_step(zone, st, [], T0 + 20 + i * 2.5))
    assert actions(res) == ["raise", "clear"]


def test_bin_overflow_class_and_far_garbage() -> None:
    zone = BinOverflowZone(name="bin1", points=BIN, persist_s=0)
    st = Debounced()
    far = obj(5, (0.1, 0.1, 0.2, 0.2), "garbage")
    res = RuleResult()
    for i in range(5):
        res.extend(bin_step(zone, st, [far], T0 + i))
    assert res.signals == []
    full = obj(6, (0.6, 0.4, 0.8, 0.8), "bin_overflow")
    for i in range(3):
        res.extend(bin_step(zone, st, [full], T0 + 10 + i))
    raise_ = next(s for s in res.signals if s.action == "raise")
    assert raise_.measurements["overflow_class"] is True


# -- a camera's rules together ---------------------------------------------------------------------


def test_camera_rules_and_eviction_sizes() -> None:
    zones = [
        NoParkingZone(name="gate", points=SQUARE, dwell_s=20, absent_grace_s=5),
        PondingZone(name="road", points=[(0.5, 0.5), (1, 0.5), (1, 1), (0.5, 1)], persist_s=0),
    ]
    rules = CameraRules(zones, UTC)
    tracker = Tracker(TrackerConfig(lost_ttl_s=2, stationary_hold_s=10))
    kinds = []
    for i in range(200):
        t = T0 + i
        dets = [Det("vehicle", 0.9, CAR)] if i < 60 else []
        upd = tracker.update(dets, t)
        rules.evict_tracks(upd.removed)
        kinds += [(s.kind, s.action) for s in rules.step(upd.objects, t).signals if s.action != "hold"]
    assert kinds == [("illegal_parking", "raise"), ("illegal_parking", "clear")]
    assert len(tracker) == 0
    assert rules.sizes() == {"parking_candidates": 0, "parking_track_links": 0}
