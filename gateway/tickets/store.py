"""The ticket store: tickets, the events they carry, and their audit trail, in SQLAlchemy Core.

SQLite (WAL) by default, PostgreSQL by URL (`postgresql+psycopg://...`). Every write is one
transaction through `commit()`; a ticket row carries a version, so two writers never overwrite
each other silently (StaleTicket).

Several dispatchers may share one PostgreSQL database; the database, not the desks' memory,
enforces what must hold across them:
- `ticket_keys` holds every dedup key a ticket carries; a partial unique index over the keys of
  open tickets means one open ticket per key. A ticket takes a key with
  `INSERT ... ON CONFLICT (dedup_key) WHERE is_open DO NOTHING RETURNING`; a key another open
  ticket holds fails the commit with `KeyHeld` (the desk loads that ticket and joins it instead).
- a new ticket with a place takes `pg_advisory_xact_lock` on its (correlation group, grid) and
  re-reads that grid's open tickets: one the writer does not know fails the commit (StaleTicket
  naming it), so two desks never open two tickets for one place. SQLite (one process, its desk
  lock serialises the writes) takes no lock; the re-read is the same.
- SLA escalations are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` (`claim()`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.store import make_engine
from gateway.tickets.models import AuditEntry, CitizenContact, Ticket, TicketEvent, Timer
from gateway.tickets.photos import TicketPhoto, photo_url
from gateway.tickets.states import ENDED, OPEN, TicketError, TicketStatus

log = logging.getLogger("gridgate.tickets.store")

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

# every dedup key a ticket carries (the one that opened it, and those of the events that joined it);
# `is_open`: the ticket is open (a non-terminal status, OPEN) and holds the key. Ending a ticket lets
# its keys go; reopening takes back those no other open ticket took meanwhile. The partial unique
# index over the open rows is the invariant: one open ticket per key.
IS_OPEN = text("is_open")  # not table-qualified: ON CONFLICT's index predicate must not be
ticket_keys = Table(
    "ticket_keys",
    metadata,
    Column("ticket_id", String(32), primary_key=True),
    Column("dedup_key", String(256), primary_key=True),
    Column("is_open", Boolean, nullable=False),
    Index("uq_ticket_keys_open", "dedup_key", unique=True, postgresql_where=IS_OPEN, sqlite_where=IS_OPEN),
)
OPEN_KEY_INDEX = next(ix for ix in ticket_keys.indexes if ix.name == "uq_ticket_keys_open")

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

OPEN_VALUES = sorted(s.value for s in OPEN)

_TICKET_FIELDS = [c.name for c in tickets.columns if c.name not in ("group_name", "breach_count")]


class StaleTicket(TicketError):
    """Someone else changed the ticket since it was read; read it again and retry.

    `ticket_ids`: the tickets to read again (the changed ones, or another writer's new ones).
    """

    def __init__(self, message: str, ticket_ids: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.ticket_ids = set(ticket_ids)


class KeyHeld(StaleTicket):
    """A dedup key this commit gives a ticket is on another open ticket (another writer's)."""


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


# PostgreSQL's answers that mean "another transaction got in the way; run yours again"
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected


@dataclass(frozen=True, slots=True)
class Place:
    """Where a new ticket may correlate with others by distance: its correlation group and grid."""

    group: str
    grid_id: str

    def lock_name(self) -> str:
        return f"dedup:{self.group}:{self.grid_id}"


@dataclass
class Writes:
    """What one desk batch writes, in one transaction (see `TicketStore.commit`)."""

    created: Sequence[Ticket] = ()
    updated: Sequence[Ticket] = ()
    events: Sequence[TicketEvent] = ()
    audit: Sequence[AuditEntry] = ()
    claims: Mapping[str, Collection[str]] = field(default_factory=dict)
    """ticket id -> dedup keys it takes in this batch (created or joined)."""
    reopened: Collection[str] = ()
    """ticket ids that are open again: they take back those of their keys no open ticket holds."""
    places: Collection[Place] = ()
    """the places of new tickets that correlate by distance: locked, and re-read for `known`."""
    known: Container[str] = ()
    """the ticket ids the writer knows: another open one in a place fails the commit."""


@dataclass
class Claim:
    """Tickets locked for the caller in an open transaction (`ids`; `tickets`: as read under the
    lock, where the caller asked for them); `write` writes in that transaction."""

    store: TicketStore
    conn: Connection
    ids: set[str]
    tickets: list[Ticket] = field(default_factory=list)

    def write(self, w: Writes) -> None:
        self.store._write(self.conn, w)


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


class TicketStore:
    """Tickets in a SQL database. Thread-safe (one connection per call from the engine's pool)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":  # dispatchers starting at once make the schema once
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('gridgate:tickets', 0))"))
            fresh_keys = not inspect(conn).has_table(ticket_keys.name)
            metadata.create_all(conn)
            self._upgrade(conn, fresh_keys)

    def _upgrade(self, conn: Connection, fresh_keys: bool) -> None:
        """A database from before `ticket_keys`: fill it from the tickets and their events, and
        make sure the one-open-ticket-per-key index exists."""
        if fresh_keys:
            self._backfill_keys(conn)
        names = {ix["name"] for ix in inspect(conn).get_indexes(ticket_keys.name)}
        if OPEN_KEY_INDEX.name in names:
            return
        holders = self._duplicate_open_keys(conn)
        if holders:
            for key, ids in holders.items():
                log.error(
                    "event=ticket_keys_index_blocked key=%s open_tickets=%s "
                    "fix='end all but one of these tickets (close or cancel), then restart'",
                    key,
                    ",".join(ids),
                )
            raise TicketError(
                f"{self.engine.url.render_as_string(hide_password=True)}: {len(holders)} dedup keys are "
                f"on several open tickets, so index {OPEN_KEY_INDEX.name} cannot be made; the log "
                "names them: end all but one ticket of each, then restart"
            )
        OPEN_KEY_INDEX.create(conn)
        log.info("event=ticket_keys_index_created index=%s", OPEN_KEY_INDEX.name)

    def _duplicate_open_keys(self, conn: Connection) -> dict[str, list[str]]:
        k = ticket_keys.c
        q = select(k.dedup_key, k.ticket_id).where(k.is_open).order_by(k.dedup_key, k.ticket_id)
        out: dict[str, list[str]] = {}
        for key, tid in conn.execute(q):
            out.setdefault(key, []).append(tid)
        return {key: ids for key, ids in out.items() if len(ids) > 1}

    def _backfill_keys(self, conn: Connection) -> None:
        """Every ticket's keys; a key on several open tickets (a race of an older version) stays
        open on the newest only, and the log says which tickets to end."""
        c = tickets.c
        rows = conn.execute(select(c.id, c.status, c.created_at, c.dedup_key, c.active_keys)).all()
        if not rows:
            return
        keys: dict[str, set[str]] = {r.id: {r.dedup_key, *_json(r.active_keys)} for r in rows}
        for tid, key in conn.execute(select(ticket_events.c.ticket_id, ticket_events.c.dedup_key).distinct()):
            keys.setdefault(tid, set()).add(key)
        holder: dict[str, tuple[float, str]] = {}
        for r in sorted(rows, key=lambda r: (r.created_at, r.id)):
            if r.status in OPEN:
                for key in keys[r.id]:
                    older = holder.get(key)
                    if older is not None:
                        log.warning(
                            "event=ticket_key_duplicate key=%s open_tickets=%s,%s kept=%s "
                            "fix='close or cancel ticket %s: it is the same problem as %s'",
                            key,
                            older[1],
                            r.id,
                            r.id,
                            older[1],
                            r.id,
                        )
                    holder[key] = (r.created_at, r.id)
        out = [
            {"ticket_id": tid, "dedup_key": key, "is_open": holder.get(key, (0.0, ""))[1] == tid}
            for tid, ks in keys.items()
            for key in sorted(ks)
        ]
        conn.execute(ticket_keys.insert(), out)
        log.info("event=ticket_keys_backfilled tickets=%d keys=%d", len(keys), len(out))

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
        self.write(Writes(created, updated, events, audit))

    def write(self, w: Writes) -> None:
        """`commit()` with keys, reopenings and places: KeyHeld / StaleTicket when another writer won."""
        with self.engine.begin() as conn:
            self._write(conn, w)

    @contextmanager
    def _conflicts(self, ticket_ids: Iterable[str], claims: Mapping[str, Collection[str]]) -> Iterator[None]:
        """The database's refusals that mean "another writer won" as StaleTicket / KeyHeld."""
        try:
            yield
        except IntegrityError as exc:
            # a ticket taking (back) a key another writer's ticket just took: ticket_keys' index
            claimed = {key for keys in claims.values() for key in keys}
            holders = self.holders(claimed) if claimed else {}
            raise KeyHeld(
                f"dedup keys {sorted(claimed)} are on other open tickets now ({exc.orig})",
                {*holders.values(), *ticket_ids},
            ) from exc
        except DBAPIError as exc:
            if not _retryable(exc):
                raise
            raise StaleTicket(
                f"another writer got in the way ({exc.orig}); read again and retry", ticket_ids
            ) from exc

    def _write(self, conn: Connection, w: Writes) -> None:
        """A new ticket always takes its own dedup key and active keys, whatever `claims` says."""
        claims = {t.id: {t.dedup_key, *t.active_keys} for t in w.created}
        for tid, keys in w.claims.items():
            claims.setdefault(tid, set()).update(keys)
        w = replace(w, claims=claims)
        with self._conflicts({t.id for t in (*w.created, *w.updated)} | set(w.reopened), claims):
            self._write_all(conn, w)

    def _write_all(self, conn: Connection, w: Writes) -> None:
        if self.dialect == "postgresql":
            # one lock order for every writer (no deadlock): places by name
            for name in sorted({p.lock_name() for p in w.places}):
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name})
        for p in w.places:
            others = self._open_in(conn, p) - {t.id for t in w.created}
            unknown = sorted(tid for tid in others if tid not in w.known)
            if unknown:
                raise StaleTicket(
                    f"grid {p.grid_id} has open {p.group} tickets {unknown} another writer opened", unknown
                )
        if w.created:
            rows = []
            for t in w.created:
                t.version = 1
                rows.append(_ticket_row(t))
            conn.execute(tickets.insert(), rows)
        for t in sorted(w.updated, key=lambda t: t.id):  # one row lock order for every writer
            self._update(conn, t)
        self._keys(conn, w)
        if w.events:
            self._upsert_events(conn, w.events)
        if w.audit:
            conn.execute(ticket_audit.insert(), [a.model_dump(mode="json") for a in w.audit])

    def _open_in(self, conn: Connection, p: Place) -> set[str]:
        c = tickets.c
        q = select(c.id).where(
            and_(c.grid_id == p.grid_id, c.group_name == p.group, c.status.in_(OPEN_VALUES))
        )
        return set(conn.scalars(q))

    def _keys(self, conn: Connection, w: Writes) -> None:
        """Keys follow the tickets: ended ones let go, reopened ones take theirs back, claims take."""
        k = ticket_keys.c
        for tid in sorted(w.reopened):
            other = ticket_keys.alias("other")
            conn.execute(
                update(ticket_keys)
                .where(
                    and_(
                        k.ticket_id == tid,
                        ~k.is_open,
                        ~select(other.c.ticket_id)
                        .where(and_(other.c.dedup_key == k.dedup_key, other.c.is_open))
                        .exists(),
                    )
                )
                .values(is_open=True)
            )
        for tid, keys in sorted(w.claims.items()):
            for key in sorted(keys):
                self._claim(conn, tid, key)
        # last: a ticket that took a key and ended in one batch (joined, then resolved) lets it go
        ended = [t.id for t in w.updated if t.status in ENDED]
        if ended:
            conn.execute(
                update(ticket_keys).where(and_(k.ticket_id.in_(ended), k.is_open)).values(is_open=False)
            )

    def _claim(self, conn: Connection, ticket_id: str, key: str) -> None:
        k = ticket_keys.c
        # a key this ticket carried before, e.g. while it was ended: take it back
        conn.execute(
            update(ticket_keys)
            .where(and_(k.ticket_id == ticket_id, k.dedup_key == key, ~k.is_open))
            .values(is_open=True)
        )
        stmt = (
            self._insert(ticket_keys)
            .values(ticket_id=ticket_id, dedup_key=key, is_open=True)
            .on_conflict_do_nothing(index_elements=[k.dedup_key], index_where=IS_OPEN)
            .returning(k.ticket_id)
        )
        if conn.execute(stmt).first() is not None:
            return
        holder = conn.scalar(select(k.ticket_id).where(and_(k.dedup_key == key, k.is_open)))
        if holder != ticket_id:
            raise KeyHeld(
                f"dedup key {key!r} is on open ticket {holder}, not {ticket_id}",
                {ticket_id} | ({holder} if holder else set()),
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
                "read it again and retry",
                {t.id},
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

    @contextmanager
    def claim(self, versions: Mapping[str, int]) -> Iterator[Claim]:
        """Lock the open tickets among `versions` (id -> the version the caller read) that no other
        writer holds and that are still at that version (`FOR UPDATE SKIP LOCKED` on PostgreSQL);
        the caller changes the claimed ones and writes them with `Claim.write` in this transaction.
        """
        c = tickets.c
        q = select(c.id, c.version).where(and_(c.id.in_(sorted(versions)), c.status.in_(OPEN_VALUES)))
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        with self._conflicts(versions, {}), self.engine.begin() as conn:
            got = {tid for tid, version in conn.execute(q) if versions[tid] == version}
            yield Claim(self, conn, got)

    @contextmanager
    def locked(self, ticket_ids: Iterable[str]) -> Iterator[Claim]:
        """These tickets read and locked (`FOR UPDATE` on PostgreSQL: other writers wait) in a
        transaction the caller writes in: for work that lost to other writers once already."""
        ids = sorted(set(ticket_ids))
        q = select(tickets).where(tickets.c.id.in_(ids)).order_by(tickets.c.id)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        with self._conflicts(ids, {}), self.engine.begin() as conn:
            found = [_ticket(r) for r in conn.execute(q).mappings()]
            yield Claim(self, conn, {t.id for t in found}, found)

    # ---- reads ------------------------------------------------------------------------------------

    def many(self, ticket_ids: Iterable[str]) -> list[Ticket]:
        """The tickets with these ids that exist (any status)."""
        ids = sorted(set(ticket_ids))
        if not ids:
            return []
        with self.engine.connect() as conn:
            return [_ticket(r) for r in conn.execute(select(tickets).where(tickets.c.id.in_(ids))).mappings()]

    def overdue(self, now: float) -> set[str]:
        """Open tickets with an SLA timer run out by `now` that may not be recorded yet."""
        c = tickets.c
        q = select(c.id).where(
            and_(
                c.status.in_(OPEN_VALUES),
                c.breach_count < len(Timer),  # each timer breaches once per cycle
                or_(c.accept_by <= now, c.on_site_by <= now, c.resolve_by <= now),
            )
        )
        with self.engine.connect() as conn:
            return set(conn.scalars(q))

    def holders(self, keys: Iterable[str]) -> dict[str, str]:
        """dedup key -> the open ticket that holds it, for those of `keys` an open ticket holds."""
        k = ticket_keys.c
        q = select(k.dedup_key, k.ticket_id).where(and_(k.dedup_key.in_(sorted(set(keys))), k.is_open))
        with self.engine.connect() as conn:
            return {key: tid for key, tid in conn.execute(q)}

    def keys(self, ticket_ids: Iterable[str]) -> dict[str, set[str]]:
        """ticket id -> every dedup key it carries (open or not)."""
        ids = sorted(set(ticket_ids))
        out: dict[str, set[str]] = {tid: set() for tid in ids}
        k = ticket_keys.c
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = select(k.ticket_id, k.dedup_key).where(k.ticket_id.in_(ids[i : i + 500]))
                for tid, key in conn.execute(q):
                    out[tid].add(key)
        return out

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
