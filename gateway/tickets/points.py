"""The `tickets` measurement: one point per ticket transition, so SLA compliance can be charted."""

from __future__ import annotations

from gateway.tickets.models import AuditEntry, Ticket
from gridgate.models import Point, ns_from_s


def transition_point(ticket: Ticket, entry: AuditEntry) -> Point:
    """tags category, grid_id, team, status (the new one); fields ticket_id, seconds_since_created."""
    status = entry.to_status.value if entry.to_status is not None else ticket.status.value
    return Point(
        "tickets",
        {"category": ticket.category, "grid_id": ticket.grid_id, "team": ticket.team, "status": status},
        {"ticket_id": ticket.id, "seconds_since_created": float(max(0.0, entry.at - ticket.created_at))},
        ns_from_s(entry.at),
    )
