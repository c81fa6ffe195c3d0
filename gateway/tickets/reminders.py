"""Reminders: the assignee is told again every N minutes while nobody has accepted the ticket.

Beside the escalation ladder, not instead of it: escalation moves a ticket up the chain when an SLA
timer runs out; a reminder repeats the page to the assignee. Reminder k of a cycle is due at
`cycle_started_at + k * every`; which one was sent last is kept in the ticket database
(`ticket_reminders`), so a restart neither repeats a reminder nor skips the next one. Reminders
that fell due while the gateway was down, or inside quiet hours, collapse into one: the latest.
A `device_offline` ticket has its own cadence and is reminded while open, accepted or not.
"""

from __future__ import annotations

import hashlib
import logging
import math
from base64 import b32encode
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, delete, select

from gateway.store import create_schema
from gateway.tickets.dedup import OFFLINE_KIND
from gateway.tickets.models import ChangeKind, Target, Ticket, TicketChange
from gateway.tickets.quiet import QuietHours
from gateway.tickets.states import NOT_ACCEPTED, OPEN
from gridgate.config import RemindersConfig

log = logging.getLogger("gridgate.tickets.reminders")

KEEP_LEDGER_S = 30 * 86_400

metadata = MetaData()

ledger_table = Table(
    "ticket_reminders",
    metadata,
    Column("ticket_id", String(32), primary_key=True),
    Column("cycle_started_at", Float, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("sent_at", Float, nullable=False),
)


def every_s(ticket: Ticket, cfg: RemindersConfig) -> float | None:
    """This ticket's reminder interval in seconds, or None when it gets no reminders."""
    if ticket.category == OFFLINE_KIND:
        minutes = cfg.offline_every_min
    else:
        minutes = cfg.by_category.get(ticket.category, cfg.every_min)
    return minutes * 60 if minutes else None


def due_slot(ticket: Ticket, now: float, every: float) -> int | None:
    """The latest reminder due at `now` in the ticket's cycle (1, 2, ...), or None if none is."""
    waiting = OPEN if ticket.category == OFFLINE_KIND else NOT_ACCEPTED
    if ticket.status not in waiting:
        return None
    slot = math.floor((now - ticket.cycle_started_at) / every)
    return slot if slot >= 1 else None


def reminder_id(ticket: Ticket, slot: int) -> str:
    """The change id of reminder `slot` of this cycle: the same on every gateway and every restart."""
    digest = hashlib.sha256(f"{ticket.id}:{ticket.cycle_started_at!r}:{slot}".encode()).digest()
    return "R" + b32encode(digest).decode()[:25]


@dataclass(frozen=True)
class Sent:
    cycle_started_at: float
    slot: int


class ReminderLedger:
    """The last reminder sent per ticket, in the ticket database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine, metadata)

    def load(self, now: float) -> dict[str, Sent]:
        c = ledger_table.c
        with self.engine.begin() as conn:
            conn.execute(delete(ledger_table).where(c.sent_at < now - KEEP_LEDGER_S))
            rows = conn.execute(select(c.ticket_id, c.cycle_started_at, c.slot))
            return {r.ticket_id: Sent(r.cycle_started_at, r.slot) for r in rows}

    def record(self, ticket_id: str, sent: Sent, now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(ledger_table).where(ledger_table.c.ticket_id == ticket_id))
            conn.execute(
                ledger_table.insert().values(
                    ticket_id=ticket_id, cycle_started_at=sent.cycle_started_at, slot=sent.slot, sent_at=now
                )
            )


class Reminders:
    """Turns the passing of time into `reminder` changes; `due()` is called by the SLA tick."""

    def __init__(
        self, cfg: RemindersConfig, ledger: ReminderLedger, now: float, quiet: QuietHours | None = None
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.quiet = quiet
        self.sent = ledger.load(now)

    def due(self, tickets: Iterable[Ticket], now: float) -> list[TicketChange]:
        """The reminders due at `now`, each recorded as sent before it is returned."""
        out = []
        for t in tickets:
            every = every_s(t, self.cfg)
            slot = due_slot(t, now, every) if every else None
            if slot is None:
                continue
            last = self.sent.get(t.id)
            if last is not None and last.cycle_started_at == t.cycle_started_at and last.slot >= slot:
                continue
            if self.quiet is not None and self.quiet.hold_until(t, now) is not None:
                continue  # not urgent, and the city sleeps: the first slot after quiet hours goes
            sent = Sent(t.cycle_started_at, slot)
            self.ledger.record(t.id, sent, now)  # before sending: a crash loses one, never repeats one
            self.sent[t.id] = sent
            out.append(reminder_of(t.clone(), slot, now))
            log.info(
                "event=ticket_reminder ticket=%s category=%s status=%s slot=%d assignee=%s",
                t.id,
                t.category,
                t.status,
                slot,
                t.assignee,
            )
        return out


def reminder_of(ticket: Ticket, slot: int, now: float) -> TicketChange:
    """Reminder `slot` for the ticket's assignee (the first level of its chain)."""
    role = ticket.escalation_chain[0] if ticket.escalation_chain else None
    return TicketChange(
        id=reminder_id(ticket, slot),
        kind=ChangeKind.reminder,
        at=now,
        ticket=ticket,
        target=Target(team=ticket.team, role=role, person=ticket.assignee),
        reason="still_offline" if ticket.category == OFFLINE_KIND else "not_accepted",
        reminder=slot,
    )
