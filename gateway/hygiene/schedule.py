"""When a maintenance window is open: pure, the instant and the city's time zone passed in.

Weekly times are wall-clock times in the zone: a window `mon 08:00-09:00` in Europe/Berlin opens at
07:00 UTC in winter and 06:00 UTC in summer. On the night the clocks go forward, wall times that do
not exist never match (a window inside the skipped hour does not open that night); on the night they
go back, the repeated hour matches twice (the window lasts an hour longer).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gridgate.hygiene_config import WEEKDAYS, WindowSpec, parse_hhmm


def is_open(spec: WindowSpec, at: float, tz: ZoneInfo) -> bool:
    """True when the window covers epoch second `at`."""
    instant = datetime.fromtimestamp(at, tz=UTC)
    if spec.starts_at is not None and instant < spec.starts_at:
        return False
    if spec.ends_at is not None and instant >= spec.ends_at:
        return False
    if not spec.weekdays:
        return True  # a one-off: inside its bounds
    assert spec.start is not None and spec.end is not None  # the spec's validator
    local = instant.astimezone(tz)
    wall = local.time().replace(tzinfo=None, fold=0)
    start, end = parse_hhmm(spec.start), parse_hhmm(spec.end)
    assert start is not None  # `24:00` is refused as a start
    today = WEEKDAYS[local.weekday()] in spec.weekdays
    if end is not None and start < end:  # within one day
        return today and start <= wall < end
    # runs past midnight (or to 24:00): the evening of a listed day, the morning after one
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7] in spec.weekdays
    return (today and wall >= start) or (end is not None and yesterday and wall < end)


def has_ended(spec: WindowSpec, at: float) -> bool:
    """True when the window can never open again after `at` (it expires)."""
    return spec.ends_at is not None and datetime.fromtimestamp(at, tz=UTC) >= spec.ends_at
