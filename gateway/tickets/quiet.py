"""Quiet hours: which tickets may page now, and when a held notification may go. Pure logic.

A window is a daily span of local time in the city's zone (`timezone`); a start after its end spans
midnight (22:00-07:00). Urgent tickets (`quiet_hours.urgent`) always page. Quiet hours move pages
only: SLA timers keep running, and the MQTT ticket topic and the WebSocket stream are never held.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.tickets.desk import SEVERITY_RANK
from gateway.tickets.models import Ticket
from gridgate.config import QuietHoursConfig, QuietWindow, UrgentRule


def quiet_until(at: float, window: QuietWindow, tz: ZoneInfo) -> float | None:
    """When the quiet hours holding `at` end (epoch seconds); None when `at` is outside them."""
    start, end = window.start, window.end
    if start == end:
        return None
    local = datetime.fromtimestamp(at, tz)
    now = local.time().replace(tzinfo=None)
    if start < end:
        inside, end_day = start <= now < end, local.date()
    else:
        inside = now >= start or now < end
        end_day = local.date() + timedelta(days=1) if now >= start else local.date()
    if not inside:
        return None
    ends = datetime.combine(end_day, end, tzinfo=tz).timestamp()
    return ends if ends > at else None  # a clock jump (DST) past the end: not quiet any more


def is_urgent(ticket: Ticket, rules: list[UrgentRule]) -> bool:
    """Whether some rule names the ticket's category at (or below) its severity."""
    rank = SEVERITY_RANK.get(ticket.severity, SEVERITY_RANK["major"])
    return any(
        r.category == ticket.category and (r.min_severity is None or rank >= SEVERITY_RANK[r.min_severity])
        for r in rules
    )


class QuietHours:
    """`tickets.quiet_hours` in the city's time zone."""

    def __init__(self, cfg: QuietHoursConfig, timezone: str) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(timezone)

    def hold_until(self, ticket: Ticket, at: float) -> float | None:
        """None: page at `at`; else the time its quiet hours end."""
        if is_urgent(ticket, self.cfg.urgent):
            return None
        return quiet_until(at, self.cfg.by_category.get(ticket.category, self.cfg), self.tz)
