"""Grid tickets: events become one ticket per problem, routed, chased by SLA, dispatched.

One module per concept (after Alertmanager's split), each testable alone with a fake clock:
`states` (state machine), `dedup` (correlation), `routing` (routing.yaml), `sla` (timers and
escalation), `storm` (offline grace, parent grouping, rate limit), `coalesce` (update pacing),
`notify` (channels), `webhook` (the outbox and its delivery, signed webhooks), `robots` and
`cards` (WeCom / DingTalk / Feishu group robots), `reminders` (re-notifying while unaccepted),
`quiet` (quiet hours), `points` (the `tickets` measurement), `store` (SQLAlchemy; what the
database enforces when several dispatchers share it), `desk` (the logic over the store),
`service` (threads and wiring) and `host` (what the service needs from the gateway: TicketHost).
"""

from gateway.tickets.desk import Action, Outcome, TicketDesk, target_of
from gateway.tickets.host import TicketHost
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
from gateway.tickets.store import KeyHeld, StaleTicket, TicketNotFound, TicketStore

__all__ = [
    "Action",
    "AuditAction",
    "AuditEntry",
    "ChangeKind",
    "FanOut",
    "IllegalTransition",
    "KeyHeld",
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
    "TicketHost",
    "TicketNotFound",
    "TicketService",
    "TicketStatus",
    "TicketStore",
    "Timer",
    "load_routing",
    "target_of",
]
