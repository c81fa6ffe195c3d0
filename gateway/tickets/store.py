"""The ticket store: tickets, the events they carry, and their audit trail, in SQLAlchemy Core.

SQLite (WAL) by default, PostgreSQL by URL (`postgresql+psycopg://...`). Every write is one
transaction through `commit()`; a ticket row carries a version, so two writers never overwrite
each other silently (StaleTicket).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping

from gateway.store import create_schema, make_engine
from gateway.tickets.models import AuditEntry, CitizenContact, Ticket, TicketEvent
from gateway.tickets.photos import TicketPhoto, photo_url
from gateway.tickets.states import ENDED, OPEN, TicketError, TicketStatus

metadata = MetaData()

tickets = Table(
    "tickets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("category", String(64), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("title", Text, nullable=False, default=""),
    Column("is_fault", Boolean, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("code", String(64)),
    Column("lat", Float),
    Column("lon", Float),
    Column("grid_id", String(128), nullable=False),
    Column("micro_grid_id", String(128)),
    Column("grid_fallback", Boolean, nullable=False),
    Column("team", String(128), nullable=False),
    Column("assignee", String(128)),
    Column("escalation_level", Integer, nullable=False),
    Column("escalation_chain", JSON, nullable=False),
    Column("escalation_people", JSON, nullable=False),
    Column("dedup_key", String(256), nullable=False),
    Column("parent_source", String(160)),
    Column("sources", JSON, nullable=False),
    Column("active_keys", JSON, nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("cycle_started_at", Float, nullable=False),
    Column("accept_by", Float, nullable=False),
    Column("on_site_by", Float, nullable=False),
    Column("resolve_by", Float, nullable=False),
    Column("breached", JSON, nullable=False),
    Column("breach_count", Integer, nullable=False),
    Column("accepted_at", Float),
    Column("on_site_at", Float),
    Column("resolved_at", Float),
    Column("closed_at", Float),
    Column("ended_at", Float),
    Column("all_clear_since", Float),
    Column("reopen_count", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_tickets_status", "status"),
    Index("ix_tickets_grid_status", "grid_id", "status"),
    Index("ix_tickets_team_status", "team", "status"),
    Index("ix_tickets_category_created", "category", "created_at"),
    Index("ix_tickets_dedup_key", "dedup_key"),
    Index("ix_tickets_ended", "ended_at"),
)

# one statement for every optimistic update, built once: building it per call costs more than
# running it (SQLAlchemy derives a cache key from every value of a fresh .values())
_UPDATE_TICKET = (
    update(tickets)
    .where(and_(tickets.c.id == bindparam("w_id"), tickets.c.version == bindparam("w_version")))
    .values({c.name: bindparam(f"v_{c.name}") for c in tickets.columns if c.name != "id"})
)

ticket_events = Table(
    "ticket_events",
    metadata,
    Column("ticket_id", String(32), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("source", String(160), nullable=False),
    Column("dedup_key", String(256), nullable=False),
    Column("state", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("lat", Float),
    Column("lon", Float),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("value", Float),
    Column("message", Text, nullable=False),
    Column("evidence", JSON, nullable=False),
    Index("ix_ticket_events_event", "event_id"),
)

ticket_audit = Table(
    "ticket_audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("ticket_id", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16)),
    Column("note", Text, nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_ticket_audit_ticket", "ticket_id", "seq"),
    Index("ix_ticket_audit_at", "at"),
)

# personal data of Open311 reporters, apart from the events (which every channel carries)
citizen_reports = Table(
    "citizen_reports",
    metadata,
    Column("report_id", String(64), primary_key=True),
    Column("filed_at", Float, nullable=False),
    Column("filed_by", String(128), nullable=False),
    Column("contact", JSON, nullable=False),
)

# photos people attached (gateway/tickets/photos.py); the bytes are files under data_dir/photos/
ticket_photos = Table(
    "ticket_photos",
    metadata,
    Column("ticket_id", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("content_type", String(32), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("filename", String(200), nullable=False),
)

_TICKET_FIELDS = [c.name for c in tickets.columns if c.name not in ("group_name", "breach_count")]


class StaleTicket(TicketError):
    """Someone else changed the ticket since it was read; read it again and retry."""


class TicketNotFound(TicketError):
    def __init__(self, ticket_id: str) -> None:
        self.ticket_id = ticket_id
        super().__init__(f"ticket {ticket_id!r} does not exist (list tickets to find its id)")


def _ticket_row(t: Ticket) -> dict[str, Any]:
    row = t.model_dump(mode="json", exclude={"group"})
    row["group_name"] = t.group
    row["breach_count"] = len(t.breached)
    return row


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _ticket(row: RowMapping) -> Ticket:
    data = {name: row[name] for name in _TICKET_FIELDS}
    for name in ("escalation_chain", "escalation_people", "sources", "active_keys", "breached"):
        data[name] = _json(data[name])
    data["group"] = row["group_name"]
    return Ticket.model_validate(data)


def _event(row: RowMapping) -> TicketEvent:
    data = dict(row)
    data["evidence"] = _json(data["evidence"])
    return TicketEvent.model_validate(data)


def _audit(row: RowMapping) -> AuditEntry:
    data = dict(row)
    data.pop("seq")
    data["detail"] = _json(data["detail"])
    return AuditEntry.model_validate(data)


def _statuses(status: TicketStatus | str | Iterable[TicketStatus | str] | None) -> list[str] | None:
    if status is None:
        return None
    if isinstance(status, str):
        return [TicketStatus(status).value]
    return [TicketStatus(s).value for s in status]


class TicketStore:
    """Tickets in a SQL database. Thread-safe (one connection per call from the engine's pool)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        create_schema(self.engine, metadata)
        self._insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # ---- writes -----------------------------------------------------------------------------------

    def commit(
        self,
        *,
        created: Sequence[Ticket] = (),
        updated: Sequence[Ticket] = (),
        events: Sequence[TicketEvent] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        """Write new tickets, changed tickets, their events (upsert by id) and audit lines at once.

        Each written ticket's `version` goes up by one; a changed ticket whose stored version is not
        the one it was read at makes the whole commit fail with StaleTicket.
        """
        with self.engine.begin() as conn:
            if created:
                rows = []
                for t in created:
                    t.version = 1
                    rows.append(_ticket_row(t))
                conn.execute(tickets.insert(), rows)
            for t in updated:
                self._update(conn, t)
            if events:
                self._upsert_events(conn, events)
            if audit:
                conn.execute(
                    ticket_audit.insert(),
                    [a.model_dump(mode="json") for a in audit],
                )

    def _update(self, conn: Connection, t: Ticket) -> None:
        row = _ticket_row(t)
        row["version"] = t.version + 1
        params = {f"v_{k}": v for k, v in row.items() if k != "id"}
        params["w_id"], params["w_version"] = t.id, t.version
        res = conn.execute(_UPDATE_TICKET, params)
        if res.rowcount != 1:
            raise StaleTicket(
                f"ticket {t.id}: changed by another writer since version {t.version} was read; "
                "read it again and retry"
            )
        t.version += 1

    def _upsert_events(self, conn: Connection, events: Sequence[TicketEvent]) -> None:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for e in events:
            latest[(e.ticket_id, e.event_id)] = e.model_dump(mode="json")
        stmt = self._insert(ticket_events)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ticket_events.c.ticket_id, ticket_events.c.event_id],
            set_={
                name: stmt.excluded[name]
                for name in ("state", "severity", "last_seen", "value", "message", "evidence")
            },
        )
        conn.execute(stmt, list(latest.values()))

    # ---- reads ------------------------------------------------------------------------------------

    def get(self, ticket_id: str) -> Ticket | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(tickets).where(tickets.c.id == ticket_id)).mappings().first()
        return _ticket(row) if row is not None else None

    def require(self, ticket_id: str) -> Ticket:
        t = self.get(ticket_id)
        if t is None:
            raise TicketNotFound(ticket_id)
        return t

    def _filtered(self, q: Any, **f: Any) -> Any:
        statuses = _statuses(f.get("status"))
        if statuses is not None:
            q = q.where(tickets.c.status.in_(statuses))
        for name in ("grid_id", "micro_grid_id", "team", "category", "assignee"):
            value = f.get(name)
            if value is not None:
                q = q.where(getattr(tickets.c, name) == value)
        breached = f.get("breached")
        if breached is not None:
            q = q.where(tickets.c.breach_count > 0 if breached else tickets.c.breach_count == 0)
        if f.get("since") is not None:
            q = q.where(tickets.c.created_at >= f["since"])
        if f.get("until") is not None:
            q = q.where(tickets.c.created_at < f["until"])
        if f.get("updated_since") is not None:
            q = q.where(tickets.c.updated_at >= f["updated_since"])
        return q

    def list_tickets(
        self,
        *,
        status: TicketStatus | str | Iterable[TicketStatus | str] | None = None,
        grid_id: str | None = None,
        micro_grid_id: str | None = None,
        team: str | None = None,
        category: str | None = None,
        assignee: str | None = None,
        breached: bool | None = None,
        since: float | None = None,
        until: float | None = None,
        updated_since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Ticket]:
        """Tickets matching every given filter, newest first (`since`/`until`: created time)."""
        q = self._filtered(
            select(tickets),
            status=status,
            grid_id=grid_id,
            micro_grid_id=micro_grid_id,
            team=team,
            category=category,
            assignee=assignee,
            breached=breached,
            since=since,
            until=until,
            updated_since=updated_since,
        )
        q = q.order_by(tickets.c.created_at.desc(), tickets.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_ticket(r) for r in conn.execute(q).mappings()]

    def count_tickets(self, **filters: Any) -> int:
        """How many tickets match the same filters as `list_tickets` (without limit/offset)."""
        q = self._filtered(select(func.count()).select_from(tickets), **filters)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def counts_by_grid(self) -> dict[str, dict[str, int]]:
        """grid id -> status -> ticket count: the live counts of a grid overview."""
        q = select(tickets.c.grid_id, tickets.c.status, func.count()).group_by(
            tickets.c.grid_id, tickets.c.status
        )
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for grid, status, n in conn.execute(q):
                out.setdefault(grid, {})[status] = int(n)
        return out

    def history(self, ticket_id: str) -> list[AuditEntry]:
        """The audit trail of a ticket, oldest first."""
        q = select(ticket_audit).where(ticket_audit.c.ticket_id == ticket_id).order_by(ticket_audit.c.seq)
        with self.engine.connect() as conn:
            return [_audit(r) for r in conn.execute(q).mappings()]

    def events(self, ticket_id: str) -> list[TicketEvent]:
        """The events a ticket carries, in the order first seen."""
        q = (
            select(ticket_events)
            .where(ticket_events.c.ticket_id == ticket_id)
            .order_by(ticket_events.c.first_seen, ticket_events.c.event_id)
        )
        with self.engine.connect() as conn:
            return [_event(r) for r in conn.execute(q).mappings()]

    def ticketed(self, event_ids: Iterable[str]) -> set[str]:
        """Which of these events some ticket (live or ended) carries."""
        ids, out = list(event_ids), set()
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 5000):
                q = select(ticket_events.c.event_id).where(ticket_events.c.event_id.in_(ids[i : i + 5000]))
                out.update(conn.scalars(q))
        return out

    def save_report(self, contact: CitizenContact) -> None:
        """Keep who filed an Open311 report (before its event goes anywhere)."""
        personal = contact.model_dump(exclude={"report_id", "filed_at", "filed_by"}, exclude_none=True)
        row = {
            "report_id": contact.report_id,
            "filed_at": contact.filed_at,
            "filed_by": contact.filed_by,
            "contact": personal,
        }
        with self.engine.begin() as conn:
            conn.execute(citizen_reports.insert(), [row])

    def report_known(self, report_id: str) -> bool:
        """Whether an Open311 report with this id (token) was filed here."""
        q = select(citizen_reports.c.report_id).where(citizen_reports.c.report_id == report_id)
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    def contacts(self, ticket_id: str) -> list[CitizenContact]:
        """Who filed the citizen reports a ticket carries, first filed first."""
        r = citizen_reports.c
        q = (
            select(citizen_reports)
            .join(ticket_events, ticket_events.c.event_id == r.report_id)
            .where(ticket_events.c.ticket_id == ticket_id)
            .order_by(r.filed_at, r.report_id)
        )
        with self.engine.connect() as conn:
            return [
                CitizenContact(
                    report_id=row["report_id"],
                    filed_at=row["filed_at"],
                    filed_by=row["filed_by"],
                    **_json(row["contact"]),
                )
                for row in conn.execute(q).mappings()
            ]

    def add_photos(self, photos: Sequence[TicketPhoto]) -> None:
        if photos:
            with self.engine.begin() as conn:
                conn.execute(ticket_photos.insert(), [p.model_dump(exclude={"url"}) for p in photos])

    def remove_photos(self, ticket_id: str, names: Iterable[str]) -> None:
        c = ticket_photos.c
        with self.engine.begin() as conn:
            conn.execute(ticket_photos.delete().where(c.ticket_id == ticket_id, c.name.in_(list(names))))

    def photos(self, ticket_ids: Iterable[str]) -> dict[str, list[TicketPhoto]]:
        """ticket id -> its photos, oldest first."""
        ids = list(ticket_ids)
        if not ids:
            return {}
        c = ticket_photos.c
        q = select(ticket_photos).where(c.ticket_id.in_(ids)).order_by(c.at, c.name)
        out: dict[str, list[TicketPhoto]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(q).mappings():
                out.setdefault(row["ticket_id"], []).append(
                    TicketPhoto(**row, url=photo_url(row["ticket_id"], row["name"]))
                )
        return out

    def event_counts(self, ticket_ids: Iterable[str]) -> dict[str, int]:
        """Stored event rows per ticket (evidence kept; `Ticket.count` counts every event)."""
        ids = list(ticket_ids)
        if not ids:
            return {}
        q = (
            select(ticket_events.c.ticket_id, func.count())
            .where(ticket_events.c.ticket_id.in_(ids))
            .group_by(ticket_events.c.ticket_id)
        )
        with self.engine.connect() as conn:
            return {tid: int(n) for tid, n in conn.execute(q)}

    def live(self, now: float, reopen_window_s: float) -> list[Ticket]:
        """Tickets dedup still needs: open ones, and ended ones a recurrence could reopen."""
        q = select(tickets).where(
            or_(
                tickets.c.status.in_([s.value for s in OPEN]),
                and_(
                    tickets.c.status.in_([s.value for s in ENDED]),
                    tickets.c.ended_at >= now - reopen_window_s,
                ),
            )
        )
        with self.engine.connect() as conn:
            return [_ticket(r) for r in conn.execute(q).mappings()]
