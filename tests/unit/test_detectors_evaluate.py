"""Matching, recall, false detections and threshold calibration of `detectors.evaluate`."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.evaluate import (
    Found,
    Truth,
    calibrate,
    load_thresholds,
    match_frame,
    save_thresholds,
    tally,
    thresholds_path,
)

CAR = (10.0, 10.0, 50.0, 40.0)


def test_a_detection_matches_once_and_a_duplicate_is_not_a_false_alarm() -> None:
    r = match_frame(
        [Truth("vehicle", CAR)],
        [Found("vehicle", 0.9, CAR), Found("vehicle", 0.5, (11, 11, 50, 40)), Found("water", 0.7, CAR)],
        {"light": "day"},
    )
    assert r.truth_scores == [("vehicle", 0.9)]
    assert r.false_scores == [("water", 0.7)]  # another label at the same place is a false alarm
    t = tally([r], {"vehicle": 0.5, "water": 0.8})["all"]
    assert t.recall("vehicle") == 1.0 and sum(t.false.values()) == 0
    t = tally([r], {"vehicle": 0.95, "water": 0.5})["all"]
    assert t.recall("vehicle") == 0.0 and t.false["water"] == 1


def test_iou_below_half_is_a_miss() -> None:
    r = match_frame([Truth("bin", (0, 0, 10, 10))], [Found("bin", 0.9, (6, 0, 16, 10))], {})
    assert r.truth_scores == [("bin", 0.0)] and r.false_scores == [("bin", 0.9)]


def test_groups_and_negative_frames() -> None:
    res = [
        match_frame([], [Found("garbage", 0.6, CAR)], {"light": "night"}),
        match_frame([Truth("garbage", CAR)], [Found("garbage", 0.6, CAR)], {"light": "day"}),
    ]
    by = tally(res, {"garbage": 0.5}, "light")
    assert by["night"].false_per_negative_frame() == 1.0 and by["night"].recall("garbage") is None
    assert by["day"].recall("garbage") == 1.0 and by["day"].false_per_negative_frame() is None


@given(st.lists(st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)), min_size=5, max_size=60))
@settings(max_examples=50, deadline=None)
def test_calibrated_thresholds_keep_false_alarms_in_budget(pairs: list[tuple[float, float]]) -> None:
    """Whatever the scores, the chosen threshold keeps false detections on negative frames within
    the label's share of the budget (or is the top of the grid)."""
    res = []
    for true_score, false_score in pairs:
        res.append(match_frame([Truth("water", CAR)], [Found("water", true_score, CAR)], {}))
        res.append(match_frame([], [Found("water", false_score, CAR)], {}))
    thr = calibrate(res, fp_per_frame=0.2, labels=("water",))["water"]
    negatives = [r for r in res if r.negative]
    fp = sum(1 for r in negatives for _, s in r.false_scores if s >= thr)
    assert thr == 0.9 or fp / len(negatives) <= 0.2


def test_thresholds_live_beside_the_weights(tmp_path: Path) -> None:
    pt = tmp_path / "street.pt"
    assert thresholds_path(pt) == tmp_path / "street.thresholds.json"
    assert thresholds_path(tmp_path / "street.onnx") == tmp_path / "street.thresholds.json"
    assert load_thresholds(pt) == {}
    save_thresholds(pt, {"water": 0.45}, {"calibrated_on": "test"})
    assert load_thresholds(pt) == {"water": 0.45}
