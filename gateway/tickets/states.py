"""The ticket state machine: which status may follow which, and replaying an audit trail.

Pure logic: no clock, no I/O. `new -> dispatched -> accepted -> on_site -> resolved -> closed`,
plus `cancelled` (before anyone accepted, or called off) and `reopened` (the problem came back).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class TicketStatus(StrEnum):
    new = "new"
    dispatched = "dispatched"
    accepted = "accepted"
    on_site = "on_site"
    resolved = "resolved"
    closed = "closed"
    cancelled = "cancelled"
    reopened = "reopened"


S = TicketStatus

TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    S.new: frozenset({S.dispatched, S.cancelled}),
    S.dispatched: frozenset({S.accepted, S.on_site, S.resolved, S.cancelled}),
    S.accepted: frozenset({S.on_site, S.resolved, S.cancelled}),
    S.on_site: frozenset({S.resolved, S.cancelled}),
    # resolved waits for a person to verify (close) it; the problem may come back before that
    S.resolved: frozenset({S.closed, S.reopened}),
    S.closed: frozenset({S.reopened}),
    S.cancelled: frozenset({S.reopened}),
    S.reopened: frozenset({S.dispatched, S.accepted, S.on_site, S.resolved, S.cancelled}),
}

OPEN: frozenset[TicketStatus] = frozenset({S.new, S.dispatched, S.accepted, S.on_site, S.reopened})
"""Someone still has to act: dedup joins these, SLA timers run on these."""

ENDED: frozenset[TicketStatus] = frozenset({S.resolved, S.closed, S.cancelled})
"""Work is over (resolved still awaits verification): a recurrence reopens these."""

NOT_ACCEPTED: frozenset[TicketStatus] = frozenset({S.new, S.dispatched, S.reopened})
"""Nobody has taken the order yet: auto-cancel is allowed from these."""

INITIAL = S.new


class Resolution(StrEnum):
    """Why a ticket ended, when a person says so (`resolution` of an action)."""

    false_alarm = "false_alarm"
    """Nothing was there: the camera's frames of its events become negatives for retraining."""


class TicketError(Exception):
    """Base of the errors the ticket desk raises for a request it refuses."""


class IllegalTransition(TicketError):
    """A status change the state machine does not allow; says what is allowed instead."""

    def __init__(self, ticket_id: str, current: TicketStatus, target: TicketStatus) -> None:
        self.ticket_id = ticket_id
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        super().__init__(
            f"ticket {ticket_id}: cannot go from {current} to {target} "
            f"(from {current} it may go to: {allowed})"
        )


def can_transition(current: TicketStatus, target: TicketStatus) -> bool:
    return target in TRANSITIONS[current]


def transition(ticket_id: str, current: TicketStatus, target: TicketStatus) -> TicketStatus:
    """`target` if the machine allows `current -> target`; IllegalTransition otherwise."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(ticket_id, current, target)
    return target


def check_resolution(ticket_id: str, target: TicketStatus | None, resolution: Resolution | None) -> None:
    """A resolution goes only with an action that ends the ticket (resolve, close, cancel)."""
    if resolution is not None and target not in ENDED:
        doing = f"going to {target}" if target is not None else "this action"
        raise TicketError(
            f"ticket {ticket_id}: resolution {resolution} is for resolve, close or cancel, not {doing}"
        )


def replay(
    ticket_id: str, steps: Iterable[tuple[TicketStatus | str | None, TicketStatus | str]]
) -> TicketStatus:
    """Fold an audit trail of (from, to) steps into the status it leads to; checks every step."""
    current: TicketStatus | None = None
    for raw_before, raw_after in steps:
        before = TicketStatus(raw_before) if raw_before is not None else None
        after = TicketStatus(raw_after)
        if current is None:
            if before is not None or after is not INITIAL:
                raise TicketError(f"ticket {ticket_id}: audit trail must start with (None -> {INITIAL})")
            current = after
            continue
        if before is not current:
            raise TicketError(
                f"ticket {ticket_id}: audit trail broken: step from {before} while the ticket was {current}"
            )
        current = transition(ticket_id, current, after)
    if current is None:
        raise TicketError(f"ticket {ticket_id}: empty audit trail")
    return current
