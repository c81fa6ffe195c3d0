"""Grid tickets: events become one ticket per problem, routed, chased by SLA, dispatched.

One module per concept (after Alertmanager's split), each testable alone with a fake clock:
`states` (state machine), `dedup` (correlation), `routing` (routing.yaml), `sla` (timers and
escalation), `storm` (offline grace, parent grouping, rate limit), `coalesce` (update pacing),
`notify` (channels), `webhook` (the outbox and its delivery, signed webhooks), `robots` and
`cards` (WeCom / DingTalk / Feishu group robots), `reminders` (re-notifying while unaccepted),
`quiet` (quiet hours), `points` (the `tickets` measurement), `store` (SQLAlchemy), `desk` (the
logic over the store) and `service` (threads and wiring to the gateway).
"""

from gateway.tickets.desk import Action, Outcome, TicketDesk, target_of
from gateway.tickets.models import (
    AuditAction,
    AuditEntry,
    ChangeKind,
    Target,
    Ticket,
    TicketChange,
    TicketEvent,
    Timer,
)
from gateway.tickets.notify import FanOut, MemoryNotifier, MQTTNotifier, Notifier
from gateway.tickets.routing import RoutingConfig, load_routing
from gateway.tickets.service import TicketService
from gateway.tickets.states import IllegalTransition, TicketError, TicketStatus
from gateway.tickets.store import StaleTicket, TicketNotFound, TicketStore

__all__ = [
    "Action",
    "AuditAction",
    "AuditEntry",
    "ChangeKind",
    "FanOut",
    "IllegalTransition",
    "MQTTNotifier",
    "MemoryNotifier",
    "Notifier",
    "Outcome",
    "RoutingConfig",
    "StaleTicket",
    "Target",
    "Ticket",
    "TicketChange",
    "TicketDesk",
    "TicketError",
    "TicketEvent",
    "TicketNotFound",
    "TicketService",
    "TicketStatus",
    "TicketStore",
    "Timer",
    "load_routing",
    "target_of",
]
