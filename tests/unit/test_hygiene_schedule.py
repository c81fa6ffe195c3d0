"""When a maintenance window is open: weekly windows in the city's zone, across midnight and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.hygiene.schedule import has_ended, is_open
from gridgate.hygiene_config import WEEKDAYS, WindowSpec

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
YEAR_2026 = (datetime(2026, 1, 1, tzinfo=UTC).timestamp(), datetime(2027, 1, 1, tzinfo=UTC).timestamp())


def weekly(days: list[str], start: str, end: str, **kw: object) -> WindowSpec:
    return WindowSpec.model_validate(
        {"reason": "cleaning", "grids": ["G1"], "weekdays": days, "start": start, "end": end, **kw}
    )


def at(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


def open_minutes(spec: WindowSpec, zone: ZoneInfo, first: float, hours: int) -> int:
    return sum(is_open(spec, first + 60 * m, zone) for m in range(60 * hours))


def test_a_weekly_window_across_midnight_in_shanghai() -> None:
    # Monday 23:00 to Tuesday 01:00 Shanghai time: Monday 15:00 to 17:00 UTC
    spec = weekly(["mon"], "23:00", "01:00")
    assert is_open(spec, at(SHANGHAI, 2026, 12, 7, 23, 0), SHANGHAI)  # Monday
    assert is_open(spec, at(SHANGHAI, 2026, 12, 8, 0, 30), SHANGHAI)  # Tuesday morning: Monday's window
    assert not is_open(spec, at(SHANGHAI, 2026, 12, 8, 1, 0), SHANGHAI)
    assert not is_open(
        spec, at(SHANGHAI, 2026, 12, 7, 0, 30), SHANGHAI
    )  # Monday morning: Sunday's, not listed
    assert not is_open(spec, at(SHANGHAI, 2026, 12, 8, 23, 30), SHANGHAI)
    # the same instants judged in UTC would be another weekday: the zone decides
    assert datetime(2026, 12, 8, 0, 30, tzinfo=SHANGHAI).astimezone(UTC).weekday() == 0
    assert open_minutes(spec, SHANGHAI, at(SHANGHAI, 2026, 12, 7, 0, 0), 7 * 24) == 120


def reference_shanghai(spec: WindowSpec, t: float) -> bool:
    """The same rule in integer arithmetic on a fixed UTC+8 clock (Shanghai has had no DST since 1991)."""
    secs = int(t) + 8 * 3600
    day, wall = (secs // 86400 + 3) % 7, secs % 86400  # 1970-01-01 was a Thursday
    assert spec.start is not None and spec.end is not None
    s = int(spec.start[:2]) * 3600 + int(spec.start[3:]) * 60
    e = int(spec.end[:2]) * 3600 + int(spec.end[3:]) * 60
    days = {WEEKDAYS.index(d) for d in spec.weekdays}
    if s < e:
        return day in days and s <= wall < e
    return (day in days and wall >= s) or ((day - 1) % 7 in days and wall < e)


hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
ends = st.one_of(hhmm, st.just("24:00"))
days = st.lists(st.sampled_from([d.value for d in WEEKDAYS]), min_size=1, max_size=7, unique=True)


@settings(max_examples=300, deadline=None)
@given(days, hhmm, ends, st.floats(*YEAR_2026))
def test_weekly_in_shanghai_matches_fixed_offset_arithmetic(
    ds: list[str], start: str, end: str, t: float
) -> None:
    if start == end:
        return
    spec = weekly(ds, start, end)
    assert is_open(spec, t, SHANGHAI) == reference_shanghai(spec, t)
    assert is_open(spec, t, SHANGHAI) == is_open(spec, t + 7 * 86400, SHANGHAI)  # weekly, no DST


@settings(max_examples=200, deadline=None)
@given(hhmm, st.integers(1, 3), st.floats(*YEAR_2026))
def test_weekly_in_berlin_follows_the_wall_clock_through_dst(start: str, hours: int, t: float) -> None:
    """Every day from `start` for `hours`: open exactly when Berlin's wall clock is inside, whatever the
    UTC offset (+1 in winter, +2 in summer)."""
    h, m = int(start[:2]), int(start[3:])
    end_min = (h * 60 + m + hours * 60) % (24 * 60)
    spec = weekly([d.value for d in WEEKDAYS], start, f"{end_min // 60:02d}:{end_min % 60:02d}")
    local = datetime.fromtimestamp(t, UTC).astimezone(BERLIN)
    offset = local.utcoffset()
    assert offset in (timedelta(hours=1), timedelta(hours=2))
    wall_min = int((t + offset.total_seconds()) % 86400) // 60
    inside = (wall_min - (h * 60 + m)) % (24 * 60) < hours * 60
    assert is_open(spec, t, BERLIN) == inside


def test_berlin_dst_nights_shorten_and_lengthen_a_window() -> None:
    daily = [d.value for d in WEEKDAYS]
    # 29 March 2026: 02:00 becomes 03:00. A window inside the skipped hour does not open that night,
    spring = at(BERLIN, 2026, 3, 29, 0, 0)
    assert open_minutes(weekly(daily, "02:00", "02:30"), BERLIN, spring, 24) == 0
    # one across it lasts an hour less; on 25 October 2026 (03:00 becomes 02:00) an hour more
    assert open_minutes(weekly(daily, "01:00", "04:00"), BERLIN, spring, 24) == 120
    autumn = at(BERLIN, 2026, 10, 25, 0, 0)
    assert open_minutes(weekly(daily, "01:00", "04:00"), BERLIN, autumn, 25) == 240
    # on an ordinary day, 3 hours
    assert open_minutes(weekly(daily, "01:00", "04:00"), BERLIN, at(BERLIN, 2026, 6, 1, 0, 0), 24) == 180
    # the same wall-clock window opens at 07:00 UTC in winter and 06:00 UTC in summer
    eight = weekly(daily, "08:00", "09:00")
    assert is_open(eight, datetime(2026, 1, 15, 7, 30, tzinfo=UTC).timestamp(), BERLIN)
    assert is_open(eight, datetime(2026, 7, 15, 6, 30, tzinfo=UTC).timestamp(), BERLIN)
    assert not is_open(eight, datetime(2026, 7, 15, 7, 30, tzinfo=UTC).timestamp(), BERLIN)


def test_one_off_and_bounded_weekly_windows_expire() -> None:
    one = WindowSpec(
        reason="pump replaced",
        devices=["WG-1"],
        starts_at=datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI),
        ends_at=datetime(2026, 12, 1, 12, 0, tzinfo=SHANGHAI),
    )
    assert not is_open(one, at(SHANGHAI, 2026, 12, 1, 8, 59), SHANGHAI)
    assert is_open(one, at(SHANGHAI, 2026, 12, 1, 9, 0), SHANGHAI)
    assert not is_open(one, at(SHANGHAI, 2026, 12, 1, 12, 0), SHANGHAI)
    assert has_ended(one, at(SHANGHAI, 2026, 12, 1, 12, 0)) and not has_ended(
        one, at(SHANGHAI, 2026, 12, 1, 11, 0)
    )
    bounded = weekly(["tue"], "09:00", "10:00", ends_at="2026-12-08T00:00:00+08:00")
    assert is_open(bounded, at(SHANGHAI, 2026, 12, 1, 9, 30), SHANGHAI)
    assert not is_open(bounded, at(SHANGHAI, 2026, 12, 8, 9, 30), SHANGHAI)  # after its end


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"reason": "x", "weekdays": ["mon"], "start": "08:00", "end": "09:00"},
            "name what the window covers",
        ),
        ({"reason": "x", "grids": ["G1"], "weekdays": ["mon"], "start": "8:00", "end": "09:00"}, "HH:MM"),
        (
            {"reason": "x", "grids": ["G1"], "weekdays": ["mon"], "start": "24:00", "end": "09:00"},
            "start 24:00",
        ),
        (
            {"reason": "x", "grids": ["G1"], "weekdays": ["mon"], "start": "08:00", "end": "08:00"},
            "both 08:00",
        ),
        ({"reason": "x", "grids": ["G1"], "weekdays": ["mon"], "start": "08:00"}, "needs all of weekdays"),
        (
            {"reason": "x", "grids": ["G1"], "weekdays": ["monday"], "start": "08:00", "end": "09:00"},
            "weekdays",
        ),
        (
            {"reason": "x", "grids": ["G1"], "starts_at": "2026-12-01T09:00:00+08:00"},
            "needs starts_at and ends_at",
        ),
        (
            {
                "reason": "x",
                "grids": ["G1"],
                "starts_at": "2026-12-01T09:00:00",
                "ends_at": "2026-12-01T10:00:00",
            },
            "timezone",
        ),
        (
            {
                "reason": "x",
                "grids": ["G1"],
                "starts_at": "2026-12-01T10:00+08:00",
                "ends_at": "2026-12-01T09:00+08:00",
            },
            "is not after starts_at",
        ),
        (
            {"reason": "x", "device_types": ["lamp"], "starts_at": "2026-12-01T09:00+08:00"},
            "unknown type 'lamp'",
        ),
        ({"reason": "", "grids": ["G1"], "weekdays": ["mon"], "start": "08:00", "end": "09:00"}, "reason"),
    ],
)
def test_a_bad_window_says_what_is_wrong(body: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        WindowSpec.model_validate(body)
    assert says in str(err.value)


@settings(max_examples=300, deadline=None)
@example("08:00\n", "09:00").via("a trailing newline")
@example("０８:00", "09:00").via("full-width digits")
@given(st.text(max_size=8), st.text(max_size=8))
def test_any_time_text_is_accepted_as_hhmm_or_refused_with_a_validation_error(start: str, end: str) -> None:
    try:
        spec = weekly(["mon"], start, end)
    except ValidationError:
        return
    assert spec.start is not None and len(spec.start) == 5 and spec.start[2] == ":"
    is_open(spec, YEAR_2026[0], SHANGHAI)  # and it evaluates


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["reason", "devices", "device_types", "grids", "starts_at", "ends_at", "weekdays", "start", "end"]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=9))
def test_any_json_body_is_a_window_or_a_validation_error(body: dict[str, object]) -> None:
    """A hostile POST body never raises anything but the 422 the API answers with."""
    try:
        spec = WindowSpec.model_validate(body)
    except ValidationError:
        return
    is_open(spec, YEAR_2026[0], BERLIN)
