"""Durable gateway state: device rule state (so alarms survive a restart) and the event log.

SQLAlchemy Core over SQLite (WAL) by default; any SQLAlchemy URL works, PostgreSQL included.
Writes are few (state changes, not readings), so they go straight through in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gridgate.models import Event

metadata = MetaData()

device_state = Table(
    "device_state",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("saved_at", Float, nullable=False),
)

# the journal position every saved state and event accounts for (gateway/journal.py)
ingest_mark = Table(
    "ingest_mark",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("saved_at", Float, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("event_class", String(16), nullable=False),
    Column("source", String(160), nullable=False),
    Column("grid_id", String(128)),
    Column("micro_grid_id", String(128)),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("body", JSON, nullable=False),
    Index("ix_events_kind_state", "kind", "state"),
    Index("ix_events_grid_started", "grid_id", "started_at"),
    Index("ix_events_source", "source"),
)


# event changes an ingest replica saved with its device state, waiting to be published to the
# lead dispatcher (`--role ingest`, gateway/cluster/): whoever owns the bucket next publishes what is left
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("bucket", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("saved_at", Float, nullable=False),
    Index("ix_event_outbox_bucket", "bucket", "id"),
)


def create_schema(engine: Engine, schema: MetaData) -> None:
    """`create_all`, one process at a time on PostgreSQL: replicas starting together would otherwise
    race to create the same table (a unique violation in the catalogue)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('gridgate:schema'))"))
        schema.create_all(conn)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str) -> Engine:
    """An engine with WAL and a busy timeout on SQLite, so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class GatewayStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        create_schema(self.engine, metadata)
        # INSERT ... ON CONFLICT DO UPDATE exists in both dialects we support, each in its own module
        self._insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert

    def close(self) -> None:
        self.engine.dispose()

    # device rule state -------------------------------------------------------------------
    def load_device_states(self, device_ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Every saved device state, or those of `device_ids`."""
        q = select(device_state)
        with self.engine.connect() as conn:
            if device_ids is None:
                return {row.device_id: row.state for row in conn.execute(q)}
            ids, out = list(device_ids), {}
            for i in range(0, len(ids), 5000):
                chunk = q.where(device_state.c.device_id.in_(ids[i : i + 5000]))
                out.update({row.device_id: row.state for row in conn.execute(chunk)})
            return out

    def device_states_saved_since(self, since: float) -> tuple[dict[str, dict[str, Any]], float]:
        """The states saved at or after `since` (their own savers' clocks), and the newest save time."""
        q = select(device_state).where(device_state.c.saved_at >= since)
        newest, out = since, {}
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                out[row.device_id] = row.state
                newest = max(newest, row.saved_at)
        return out, newest

    def load_mark(self, name: str) -> int | None:
        """A saved mark (the journal position of the last checkpoint, ...); None: never saved."""
        with self.engine.connect() as conn:
            seq = conn.scalar(select(ingest_mark.c.seq).where(ingest_mark.c.name == name))
        return None if seq is None else int(seq)

    def load_marks(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {row.name: int(row.seq) for row in conn.execute(select(ingest_mark))}

    def save_checkpoint(
        self,
        states: dict[str, dict[str, Any]],
        batch: Iterable[Event],
        marks: dict[str, int],
        now: float,
        forget: Iterable[str] = (),
        outbox: Iterable[tuple[int, str]] = (),
    ) -> None:
        """Device states, events and the journal positions they account for, in one transaction;
        `forget`: marks to delete (another worker layout's); `outbox`: (bucket, body) to publish."""
        rows = self._event_rows(batch)
        forget = list(forget)
        outbox_rows = [{"bucket": b, "body": body, "saved_at": now} for b, body in outbox]
        if not states and not rows and not marks and not forget and not outbox_rows:
            return
        with self.engine.begin() as conn:
            if outbox_rows:
                conn.execute(event_outbox.insert(), outbox_rows)
            if forget:
                conn.execute(ingest_mark.delete().where(ingest_mark.c.name.in_(forget)))
            self._upsert(conn, events, rows)
            self._upsert(
                conn,
                device_state,
                [{"device_id": k, "state": v, "saved_at": now} for k, v in states.items()],
            )
            mark_rows = [{"name": name, "seq": seq, "saved_at": now} for name, seq in marks.items()]
            self._upsert(conn, ingest_mark, mark_rows)

    def _upsert(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """INSERT ... ON CONFLICT (primary key) DO UPDATE every other column."""
        if not rows:
            return
        upsert = self._insert(table)
        key = [c.name for c in table.primary_key.columns]
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=key,
                set_={c.name: upsert.excluded[c.name] for c in table.columns if c.name not in key},
            ),
            rows,
        )

    # the event outbox of ingest replicas -------------------------------------------------
    def load_outbox(self, buckets: Iterable[int]) -> list[tuple[int, str]]:
        """(row id, body) of what waits to be published for these buckets, oldest first."""
        q = select(event_outbox.c.id, event_outbox.c.body).where(event_outbox.c.bucket.in_(list(buckets)))
        with self.engine.connect() as conn:
            return [(int(r.id), r.body) for r in conn.execute(q.order_by(event_outbox.c.id))]

    def delete_outbox(self, row_ids: Iterable[int]) -> None:
        ids = list(row_ids)
        if ids:
            with self.engine.begin() as conn:
                conn.execute(event_outbox.delete().where(event_outbox.c.id.in_(ids)))

    def stored_changes(self, event_ids: Iterable[str]) -> dict[str, datetime]:
        """event id -> the time of its latest change as stored (end, else update, else start): what a
        redelivered event change is checked against."""
        ids = list(event_ids)
        if not ids:
            return {}
        c = events.c
        q = select(c.id, c.started_at, c.updated_at, c.ended_at).where(c.id.in_(ids))
        with self.engine.connect() as conn:
            return {r.id: r.ended_at or r.updated_at or r.started_at for r in conn.execute(q)}

    # events ------------------------------------------------------------------------------
    @staticmethod
    def _event_rows(batch: Iterable[Event]) -> list[dict[str, Any]]:
        """One row per event id (an event is one row from raise to clear): the last change wins."""
        latest: dict[str, dict[str, Any]] = {}
        for e in batch:
            latest[e.id] = _event_row(e)
        return list(latest.values())

    def query_events(
        self,
        *,
        kind: str | None = None,
        grid_id: str | None = None,
        state: str | None = None,
        source: str | None = None,
        event_class: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        suppressed: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Event]:
        """Events newest first; `suppressed`: only muted ones (True) or only live ones (False)."""
        q = select(events.c.body).order_by(events.c.started_at.desc(), events.c.id.desc())
        if suppressed is not None:
            muted_by = events.c.body["suppressed_by"].as_string()
            q = q.where(muted_by.is_not(None) if suppressed else muted_by.is_(None))
        for col, value in (
            (events.c.kind, kind),
            (events.c.grid_id, grid_id),
            (events.c.state, state),
            (events.c.source, source),
            (events.c.event_class, event_class),
        ):
            if value is not None:
                q = q.where(col == value)
        if since is not None:
            q = q.where(events.c.started_at >= since)
        if until is not None:
            q = q.where(events.c.started_at < until)
        with self.engine.connect() as conn:
            rows = conn.scalars(q.limit(limit).offset(offset)).all()
        return [Event.model_validate(json.loads(r) if isinstance(r, str) else r) for r in rows]

    def events_active_or_ended_since(self, since: datetime) -> list[Event]:
        """Every active event, and those that ended at or after `since` (what alert hygiene rebuilds from)."""
        q = select(events.c.body).where((events.c.state == "active") | (events.c.ended_at >= since))
        with self.engine.connect() as conn:
            rows = conn.scalars(q).all()
        return [Event.model_validate(json.loads(r) if isinstance(r, str) else r) for r in rows]

    def source_places(self, prefix: str) -> dict[str, tuple[float | None, float | None, int]]:
        """source -> (lat, lon) of its latest event and how many of its events are active, for the
        sources that start with `prefix` (`camera:`)."""
        c = events.c
        mine = c.source.startswith(prefix)
        newest = (
            select(c.source, func.max(c.started_at).label("at")).where(mine).group_by(c.source).subquery()
        )
        latest = select(c.source, c.body).join(
            newest, (c.source == newest.c.source) & (c.started_at == newest.c.at)
        )
        active = select(c.source, func.count()).where(mine, c.state == "active").group_by(c.source)
        out: dict[str, tuple[float | None, float | None, int]] = {}
        with self.engine.connect() as conn:
            counts = {source: int(n) for source, n in conn.execute(active)}
            for source, body in conn.execute(latest):
                where = (json.loads(body) if isinstance(body, str) else body).get("location") or {}
                out[source] = (where.get("lat"), where.get("lon"), counts.get(source, 0))
        return out

    def kind_counts(self, since: datetime) -> dict[str, int]:
        """event kind -> events that started at or after `since`."""
        q = select(events.c.kind, func.count()).where(events.c.started_at >= since).group_by(events.c.kind)
        with self.engine.connect() as conn:
            return {kind: int(n) for kind, n in conn.execute(q)}

    def active_counts(self, column: str = "grid_id") -> dict[str, dict[str, int]]:
        """grid (or micro-grid) id -> event class (alarm, fault) -> events active now."""
        col = getattr(events.c, column)
        q = (
            select(col, events.c.event_class, func.count())
            .where(events.c.state == "active")
            .group_by(col, events.c.event_class)
        )
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for key, cls, n in conn.execute(q):
                if key is not None:
                    out.setdefault(key, {})[cls] = int(n)
        return out


def _event_row(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "kind": e.kind,
        "event_class": e.event_class.value,
        "source": e.source,
        "grid_id": e.grid_id,
        "micro_grid_id": e.micro_grid_id,
        "severity": e.severity.value,
        "state": e.state.value,
        "started_at": e.started_at,
        "ended_at": e.ended_at,
        "updated_at": e.updated_at,
        "body": e.model_dump(mode="json"),
    }
