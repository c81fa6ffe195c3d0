"""The `tickets` measurement: one point per ticket transition, so SLA compliance can be charted."""

from __future__ import annotations

from gateway.tickets.models import AuditEntry, Ticket, Timer
from gateway.tickets.sla import deadline
from gateway.tickets.states import TicketStatus
from gridgate.models import Point, ns_from_s

# the transition that stops each SLA timer
TIMER_MET_BY: dict[TicketStatus, Timer] = {
    TicketStatus.accepted: Timer.accept,
    TicketStatus.on_site: Timer.on_site,
    TicketStatus.resolved: Timer.resolve,
}


def transition_point(ticket: Ticket, entry: AuditEntry) -> Point:
    """tags category, grid_id, team, status (the new one); fields ticket_id, seconds_since_created,
    and for the transitions that stop an SLA timer (accepted, on_site, resolved) `sla_s`, the
    timer's length in this cycle (its category's SLA), and `on_time`, whether it was met."""
    status = entry.to_status if entry.to_status is not None else ticket.status
    fields: dict[str, float | int | bool | str] = {
        "ticket_id": ticket.id,
        "seconds_since_created": float(max(0.0, entry.at - ticket.created_at)),
    }
    timer = TIMER_MET_BY.get(status)
    if timer is not None:
        by = deadline(ticket, timer)
        fields["sla_s"] = float(by - ticket.cycle_started_at)
        fields["on_time"] = entry.at <= by
    return Point(
        "tickets",
        {"category": ticket.category, "grid_id": ticket.grid_id, "team": ticket.team, "status": status.value},
        fields,
        ns_from_s(entry.at),
    )
