"""SLA timers and the escalation ladder. Pure logic: `now` is passed in.

A timer runs from the ticket's cycle start (creation or reopening) until the status it waits for
is reached. A breached timer escalates the ticket one level up its chain (worker -> grid head ->
leader); each timer breaches once per cycle, so each level is escalated to at most once.
"""

from __future__ import annotations

from gateway.tickets.models import Ticket, Timer
from gateway.tickets.routing import SLA
from gateway.tickets.states import NOT_ACCEPTED, OPEN, TicketStatus

S = TicketStatus

# the statuses in which each timer still runs
RUNNING: dict[Timer, frozenset[TicketStatus]] = {
    Timer.accept: NOT_ACCEPTED,
    Timer.on_site: NOT_ACCEPTED | {S.accepted},
    Timer.resolve: OPEN,
}


def deadlines(start: float, sla: SLA) -> tuple[float, float, float]:
    """(accept_by, on_site_by, resolve_by) for a cycle starting at `start`."""
    return start + sla.accept_s, start + sla.on_site_s, start + sla.resolve_s


def deadline(ticket: Ticket, timer: Timer) -> float:
    if timer is Timer.accept:
        return ticket.accept_by
    if timer is Timer.on_site:
        return ticket.on_site_by
    return ticket.resolve_by


def due_breaches(ticket: Ticket, now: float) -> list[Timer]:
    """Timers that have run out at `now` and were not yet recorded as breached, earliest first."""
    out = [
        t
        for t in Timer
        if ticket.status in RUNNING[t] and t not in ticket.breached and now >= deadline(ticket, t)
    ]
    return sorted(out, key=lambda t: deadline(ticket, t))


def next_level(level: int, chain_length: int) -> int | None:
    """The next level up the chain, or None at the top (a breach there is recorded, not escalated)."""
    return level + 1 if level + 1 < chain_length else None


def next_due(ticket: Ticket) -> float | None:
    """When the next timer of this ticket runs out, or None if none is running."""
    pending = [deadline(ticket, t) for t in Timer if ticket.status in RUNNING[t] and t not in ticket.breached]
    return min(pending) if pending else None
