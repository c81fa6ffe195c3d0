"""What a ticket is: the ticket, the events it carries, its audit trail, and a change to notify.

Times are epoch seconds (floats) throughout, as the clock gives them; `gridgate.models.utc()`
turns one into a datetime for an API.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from ulid import ULID

from gateway.tickets.states import Resolution, TicketStatus


def new_id() -> str:
    return str(ULID())


class Timer(StrEnum):
    """The SLA timers of a ticket."""

    accept = "accept"
    on_site = "on_site"
    resolve = "resolve"


class Ticket(BaseModel):
    """One problem at one place for one team: everything but its events and audit trail."""

    id: str = Field(default_factory=new_id)
    status: TicketStatus = TicketStatus.new
    category: str = Field(description="the event kind that opened it (illegal_parking, ponding, ...)")
    group: str = Field(description="correlation group: categories that are one problem (routing.yaml)")
    title: str = ""
    is_fault: bool = Field(False, description="a device fault (maintenance) rather than a street alarm")
    severity: str = "major"
    code: str | None = Field(None, description="the city's classification code from routing.yaml")
    lat: float | None = None
    lon: float | None = None
    grid_id: str
    micro_grid_id: str | None = None
    grid_fallback: bool = Field(False, description="the location is inside no grid: the fallback grid")
    team: str
    assignee: str | None = Field(None, description="the grid worker who owns it")
    escalation_level: int = Field(0, description="index into `escalation_chain`; 0 is the assignee")
    escalation_chain: list[str] = Field(default_factory=list, description="roles, e.g. worker, grid_head")
    escalation_people: list[str | None] = Field(default_factory=list, description="a person per role")
    dedup_key: str = Field(description="the dedup key of the event that opened it")
    parent_source: str | None = Field(None, description="set when it groups the faults behind a parent")
    sources: list[str] = Field(default_factory=list, description="every source that added an event")
    active_keys: list[str] = Field(default_factory=list, description="dedup keys of its active events")
    count: int = Field(1, description="events that joined it, the first included")
    first_seen: float
    last_seen: float
    created_at: float
    updated_at: float
    cycle_started_at: float = Field(description="created or last reopened: the SLA timers start here")
    accept_by: float
    on_site_by: float
    resolve_by: float
    breached: list[Timer] = Field(default_factory=list, description="timers breached in this cycle")
    accepted_at: float | None = None
    on_site_at: float | None = None
    resolved_at: float | None = None
    closed_at: float | None = None
    ended_at: float | None = Field(None, description="entered resolved, closed or cancelled")
    all_clear_since: float | None = Field(
        None, description="every event cleared at; None while any is active"
    )
    reopen_count: int = 0
    version: int = Field(0, description="optimistic lock: bumped by every write")

    def clone(self) -> Ticket:
        """An independent copy (its lists copied too), much cheaper than a deep copy."""
        return self.model_copy(
            update={
                "escalation_chain": list(self.escalation_chain),
                "escalation_people": list(self.escalation_people),
                "sources": list(self.sources),
                "active_keys": list(self.active_keys),
                "breached": list(self.breached),
            }
        )

    @property
    def escalation_role(self) -> str | None:
        chain = self.escalation_chain
        return chain[self.escalation_level] if self.escalation_level < len(chain) else None

    @property
    def escalation_person(self) -> str | None:
        p = self.escalation_people
        return p[self.escalation_level] if self.escalation_level < len(p) else None

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary that notifications carry (no event list)."""
        return self.model_dump(mode="json", exclude={"escalation_people", "active_keys"}) | {
            "escalation_role": self.escalation_role,
            "escalation_person": self.escalation_person,
            "active_events": len(self.active_keys),
        }


class TicketEvent(BaseModel):
    """One event a ticket carries, as evidence (one row per event id)."""

    ticket_id: str
    event_id: str
    kind: str
    source: str
    dedup_key: str
    state: str = "active"
    severity: str = "major"
    lat: float | None = None
    lon: float | None = None
    first_seen: float
    last_seen: float
    value: float | None = None
    message: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict, description="snapshot / clip references")


class CitizenContact(BaseModel):
    """Who filed an Open311 report: personal data, kept apart from events, tickets and every channel.

    Only the roles that must call a citizen back (admin, command_centre) ever see it, in
    `GET /api/v1/tickets/{id}`; events, alerts, the stream, webhooks and MQTT never carry it.
    """

    report_id: str = Field(description="the report's event id: the Open311 token")
    filed_at: float
    filed_by: str = Field(description="the API token (a citizen app) that filed it")
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    device_id: str | None = Field(None, description="the citizen's device, as Open311 names it")
    account_id: str | None = None


class AuditAction(StrEnum):
    transition = "transition"
    escalate = "escalate"
    breach = "breach"
    reassign = "reassign"
    comment = "comment"
    group = "group"


class AuditEntry(BaseModel):
    """One line of a ticket's history: who did what when; transitions carry from and to."""

    ticket_id: str
    at: float
    actor: str = Field(description="`system`, `sla`, or the person or API token acting")
    action: AuditAction
    from_status: TicketStatus | None = None
    to_status: TicketStatus | None = None
    note: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class ChangeKind(StrEnum):
    created = "created"
    updated = "updated"
    escalated = "escalated"
    reminder = "reminder"  # nobody acted yet: the same ticket again (not a change of the ticket)


class Target(BaseModel):
    """Whom a change is for: always a team, and a person where one is named."""

    team: str
    role: str | None = Field(None, description="worker, grid_head or leader")
    person: str | None = None


class TicketChange(BaseModel):
    """What notifiers receive: one change of one ticket, with its snapshot and its target."""

    id: str = Field(default_factory=new_id, description="unique per change: an idempotency key")
    kind: ChangeKind
    at: float
    ticket: Ticket
    target: Target
    from_status: TicketStatus | None = Field(None, description="set when the status changed")
    to_status: TicketStatus | None = None
    reason: str = Field("", description="why: event_raised, events_cleared, sla_accept, accept, ...")
    transitions: list[AuditEntry] = Field(default_factory=list, description="the transitions it covers")
    resolution: Resolution | None = Field(None, description="why it ended, when the person said so")
    event_ids: list[str] = Field(
        default_factory=list, description="with a resolution: the ticket's events (edge boxes mark them)"
    )
    reminder: int | None = Field(None, description="a reminder: which one in this cycle (1, 2, ...)")

    def to_json(self) -> dict[str, Any]:
        """The payload channels send: the change and the ticket summary (+ resolution, event ids)."""
        out: dict[str, Any] = {
            "change_id": self.id,
            "kind": self.kind.value,
            "at": self.at,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "reason": self.reason,
            "target": self.target.model_dump(mode="json"),
            "ticket": self.ticket.summary(),
        }
        if self.resolution is not None:  # only then: every other payload stays as it was
            out["resolution"] = self.resolution.value
            out["event_ids"] = list(self.event_ids)
        if self.reminder is not None:
            out["reminder"] = self.reminder
        return out
