"""Threshold rules: hysteresis, minimum and clear durations, severity steps, serialisable state."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from devices.rules import (
    BATTERY_LOW,
    TAMPER,
    Change,
    Direction,
    Rule,
    RuleState,
    default_alarms,
    override,
    step,
)
from devices.types import DeviceType
from gridgate.models import EventClass, Severity

T0 = 1_800_000_000.0


def rule(kind: str, dtype: DeviceType) -> Rule:
    return next(r for r in default_alarms(dtype) if r.kind == kind)


TILT = rule("manhole_tilt", DeviceType.manhole)
OPEN = rule("manhole_open", DeviceType.manhole)
WATER = rule("water_high", DeviceType.water_gauge)
FULL = rule("bin_full", DeviceType.bin)


def feed(r: Rule, values: list[tuple[float, float]], state: RuleState | None = None) -> list[Change | None]:
    s = state or RuleState()
    return [step(r, s, v, T0 + t) for t, v in values]


def test_defaults_match_the_issue() -> None:
    assert (TILT.raise_at, TILT.clear_at, TILT.severity) == (15, 5, Severity.major)
    assert OPEN.severity is Severity.critical and OPEN.direction is Direction.true
    assert rule("gas_high", DeviceType.manhole).raise_at == 20
    assert (FULL.raise_at, FULL.clear_at) == (80, 50)
    assert rule("bin_fire", DeviceType.bin).raise_at == 60
    assert rule("bin_fallen", DeviceType.bin).raise_at == 45
    assert (WATER.raise_at, WATER.clear_at, WATER.clear_duration_s) == (15, 10, 600)
    assert BATTERY_LOW.event_class is EventClass.fault and TAMPER.event_class is EventClass.fault


def test_tilt_hysteresis() -> None:
    changes = feed(TILT, [(0, 14.9), (1, 15.0), (2, 10), (3, 6), (4, 5.0), (5, 14), (6, 15)])
    assert changes == [None, Change.raised, None, None, Change.cleared, None, Change.raised]


def test_bool_rule() -> None:
    assert feed(OPEN, [(0, False), (1, True), (2, True), (3, False)]) == [
        None,
        Change.raised,
        None,
        Change.cleared,
    ]


def test_min_duration_raises_only_after_holding() -> None:
    slow = override(FULL, min_duration_s=600)
    s = RuleState()
    assert step(slow, s, 85, T0) is None
    assert step(slow, s, 90, T0 + 300) is None
    assert step(slow, s, 70, T0 + 400) is None  # dipped below raise_at: the wait starts again
    assert step(slow, s, 85, T0 + 500) is None
    assert step(slow, s, 85, T0 + 1099) is None
    assert step(slow, s, 85, T0 + 1100) is Change.raised


def test_water_high_clears_only_after_ten_minutes_below_10() -> None:
    s = RuleState()
    assert step(WATER, s, 16, T0) is Change.raised
    assert step(WATER, s, 10.0, T0 + 60) is None  # 10 is not below 10
    assert s.clearing_since is None
    assert step(WATER, s, 9.9, T0 + 120) is None
    assert step(WATER, s, 8, T0 + 600) is None
    assert step(WATER, s, 12, T0 + 650) is None  # rose again: the hold restarts
    assert step(WATER, s, 9, T0 + 700) is None
    assert step(WATER, s, 9, T0 + 1299) is None
    assert step(WATER, s, 9, T0 + 1300) is Change.cleared
    assert not s.active


def test_water_high_severity_steps_at_27() -> None:
    s = RuleState()
    assert step(WATER, s, 26.9, T0) is Change.raised and s.severity is Severity.major
    assert step(WATER, s, 27, T0 + 60) is Change.severity and s.severity is Severity.critical
    assert step(WATER, s, 30, T0 + 120) is None
    assert step(WATER, s, 20, T0 + 180) is Change.severity and s.severity is Severity.major
    s2 = RuleState()
    assert step(WATER, s2, 35, T0) is Change.raised and s2.severity is Severity.critical


def test_battery_low_steps_and_clear() -> None:
    s = RuleState()
    assert step(BATTERY_LOW, s, 20, T0) is None
    assert step(BATTERY_LOW, s, 19, T0 + 1) is Change.raised and s.severity is Severity.minor
    assert step(BATTERY_LOW, s, 9, T0 + 2) is Change.severity and s.severity is Severity.major
    assert step(BATTERY_LOW, s, 24, T0 + 3) is Change.severity and s.severity is Severity.minor
    assert step(BATTERY_LOW, s, 25, T0 + 4) is Change.cleared
    s2 = RuleState()
    assert step(BATTERY_LOW, s2, 5, T0) is Change.raised and s2.severity is Severity.major


def test_disabled_rule_never_raises_and_clears_an_active_one() -> None:
    off = override(TILT, enabled=False)
    assert feed(off, [(0, 90), (1, 90)]) == [None, None]
    s = RuleState()
    step(TILT, s, 40, T0)
    assert step(off, s, 40, T0 + 1) is Change.cleared


def test_override_ignores_none() -> None:
    r = override(TILT, raise_at=20, clear_at=None)
    assert (r.raise_at, r.clear_at) == (20, 5)


def test_check_finds_contradictions() -> None:
    assert override(TILT, clear_at=30).check() is not None
    assert override(BATTERY_LOW, clear_at=10).check() is not None
    assert TILT.check() is None and BATTERY_LOW.check() is None


def test_rule_state_round_trips_through_json() -> None:
    s = RuleState()
    step(WATER, s, 30, T0)
    step(WATER, s, 5, T0 + 60)
    data = orjson.loads(orjson.dumps(s.to_dict()))
    restored = RuleState.from_dict(data)
    assert restored == s
    assert step(WATER, restored, 5, T0 + 660) is Change.cleared


@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 120)), max_size=40))
def test_events_alternate_raise_and_clear(values: list[tuple[float, float]]) -> None:
    s = RuleState()
    t = T0
    active = False
    for dt, v in values:
        t += dt
        change = step(WATER, s, v, t)
        if change is Change.raised:
            assert not active
            active = True
        elif change is Change.cleared:
            assert active
            active = False
        elif change is Change.severity:
            assert active
        assert s.active == active
