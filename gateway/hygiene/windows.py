"""Maintenance windows: from gateway.yaml and from the API, kept in the ticket database with an audit trail.

SQLAlchemy Core (SQLite WAL by default, PostgreSQL by URL), two tables of their own beside the
tickets: `maintenance_windows` (the spec, who created and who ended it, when) and
`maintenance_window_audit` (one row per action). Windows in the file are not stored: they are what
the file says, and end when it is edited. A window is `scheduled`, `open` (now inside it), `idle`
(weekly, between two openings), `expired` (past its `ends_at`) or `ended` (ended early over the API).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import JSON, Column, Float, Integer, MetaData, String, Table, select, update

from gateway.hygiene.schedule import has_ended, is_open
from gateway.store import create_schema, make_engine
from gridgate.hygiene_config import ConfiguredWindow, WindowSpec
from gridgate.models import new_event_id, utc

metadata = MetaData()
ACTOR_MAX = 256  # a token's name is the actor; longer names are cut to fit the column

windows_table = Table(
    "maintenance_windows",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_by", String(ACTOR_MAX), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_by", String(ACTOR_MAX)),
    Column("ended_at", Float),
)

audit_table = Table(
    "maintenance_window_audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("window_id", String(64), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("by", String(ACTOR_MAX), nullable=False),
    Column("action", String(16), nullable=False),
)

WindowState = Literal["scheduled", "open", "idle", "expired", "ended"]


class WindowAudit(BaseModel):
    at: datetime
    by: str = Field(description="the token's name, or `config`")
    action: Literal["created", "ended"]


class MaintenanceWindow(WindowSpec):
    """A window with its origin, state now and audit trail (what the API lists)."""

    id: str
    origin: Literal["config", "api"] = Field(description="gateway.yaml or POST /api/v1/maintenance-windows")
    created_by: str
    created_at: datetime | None = Field(None, description="None for a window from the file")
    ended_by: str | None = None
    ended_at: datetime | None = Field(None, description="ended early over the API")
    state: WindowState
    audit: list[WindowAudit] = Field(default_factory=list, description="who created and ended it, when")


@dataclass(frozen=True, slots=True)
class Target:
    """What a window may cover: a source (device, camera, edge box) with its type and grids."""

    source_id: str
    source_type: str  # manhole, bin, water_gauge, camera, edge
    grid_id: str | None
    micro_grid_id: str | None


def covers(spec: WindowSpec, t: Target) -> bool:
    """Every scope field the window names matches the target (an empty field matches all)."""
    return (
        (not spec.devices or t.source_id in spec.devices)
        and (not spec.device_types or t.source_type in spec.device_types)
        and (not spec.grids or t.grid_id in spec.grids)
        and (not spec.micro_grids or t.micro_grid_id in spec.micro_grids)
    )


class WindowNotFound(LookupError):
    pass


class WindowNotEndable(ValueError):
    pass


@dataclass(slots=True)
class _Row:
    id: str
    spec: WindowSpec
    origin: Literal["config", "api"]
    created_by: str
    created_at: float | None = None
    ended_by: str | None = None
    ended_at: float | None = None


class MaintenanceWindows:
    """Every window, cached in memory for the per-event check; writes go to the database first."""

    def __init__(self, url: str, configured: list[ConfiguredWindow], tz: ZoneInfo) -> None:
        self.engine = make_engine(url)
        create_schema(self.engine, metadata)
        self.tz = tz
        self._lock = threading.Lock()
        self._configured = [
            _Row(
                w.id,
                WindowSpec.model_validate(w.model_dump(exclude={"id", "created_by"})),
                "config",
                w.created_by,
            )
            for w in configured
        ]
        self._rows: list[_Row] = []
        self.refresh()

    def close(self) -> None:
        self.engine.dispose()

    def refresh(self) -> None:
        """Reload the API's windows (another gateway sharing the database may have changed them)."""
        with self._lock, self.engine.connect() as conn:  # a create meanwhile lands after this
            stored = [
                _Row(
                    r.id,
                    WindowSpec.model_validate(r.spec),
                    "api",
                    r.created_by,
                    r.created_at,
                    r.ended_by,
                    r.ended_at,
                )
                for r in conn.execute(select(windows_table).order_by(windows_table.c.created_at))
            ]
            self._rows = self._configured + stored

    # ---- the per-event check ----------------------------------------------------------------------

    def open_for(self, target: Target, now: float) -> str | None:
        """The id of a window open now that covers `target`, or None."""
        with self._lock:
            rows = self._rows
        for row in rows:
            if row.ended_at is None and covers(row.spec, target) and is_open(row.spec, now, self.tz):
                return row.id
        return None

    # ---- the API ------------------------------------------------------------------------------------

    def create(self, spec: WindowSpec, by: str, now: float) -> MaintenanceWindow:
        by = by[:ACTOR_MAX]
        row = _Row(new_event_id(), spec, "api", by, now)
        with self.engine.begin() as conn:
            conn.execute(
                windows_table.insert().values(
                    id=row.id, spec=spec.model_dump(mode="json"), created_by=by, created_at=now
                )
            )
            conn.execute(audit_table.insert().values(window_id=row.id, at=now, by=by, action="created"))
        with self._lock:
            self._rows = [*(r for r in self._rows if r.id != row.id), row]
        return self._out(row, now, self._audit([row.id]))

    def end(self, window_id: str, by: str, now: float) -> MaintenanceWindow:
        """End a window early; raises WindowNotFound, or WindowNotEndable for one from the file or
        one already over."""
        by = by[:ACTOR_MAX]
        row = self._find(window_id)
        if row.origin == "config":
            raise WindowNotEndable(
                f"maintenance window {window_id!r} is defined in gateway.yaml (hygiene.maintenance_windows): "
                "remove it there and restart"
            )
        if row.ended_at is not None or has_ended(row.spec, now):
            raise WindowNotEndable(
                f"maintenance window {window_id!r} is already over ({self._state(row, now)})"
            )
        with self.engine.begin() as conn:
            done = conn.execute(
                update(windows_table)
                .where(windows_table.c.id == window_id, windows_table.c.ended_at.is_(None))
                .values(ended_by=by, ended_at=now)
            )
            if done.rowcount != 1:
                raise WindowNotEndable(
                    f"maintenance window {window_id!r} was ended by someone else meanwhile"
                )
            conn.execute(audit_table.insert().values(window_id=window_id, at=now, by=by, action="ended"))
        with self._lock:  # the row now cached (a refresh may have replaced the one found)
            row = next(r for r in self._rows if r.id == window_id)
            row.ended_by, row.ended_at = by, now
        return self._out(row, now, self._audit([window_id]))

    def list(self, now: float) -> list[MaintenanceWindow]:
        with self._lock:
            rows = list(self._rows)
        audit = self._audit([r.id for r in rows if r.origin == "api"])
        return [self._out(r, now, audit) for r in rows]

    def get(self, window_id: str, now: float) -> MaintenanceWindow:
        row = self._find(window_id)
        return self._out(row, now, self._audit([window_id]))

    # ---- helpers ------------------------------------------------------------------------------------

    def _cached(self, window_id: str) -> _Row | None:
        with self._lock:
            return next((r for r in self._rows if r.id == window_id), None)

    def _find(self, window_id: str) -> _Row:
        """The cached window; on a miss the database is read again (another gateway may have made it)."""
        row = self._cached(window_id)
        if row is None:
            self.refresh()
            row = self._cached(window_id)
        if row is None:
            raise WindowNotFound(
                f"no maintenance window {window_id!r} (GET /api/v1/maintenance-windows lists them)"
            )
        return row

    def _state(self, row: _Row, now: float) -> WindowState:
        if row.ended_at is not None:
            return "ended"
        if has_ended(row.spec, now):
            return "expired"
        if is_open(row.spec, now, self.tz):
            return "open"
        starts = row.spec.starts_at
        return "scheduled" if starts is not None and utc(now) < starts else "idle"

    def _audit(self, ids: list[str]) -> dict[str, list[WindowAudit]]:
        if not ids:
            return {}
        out: dict[str, list[WindowAudit]] = {}
        q = select(audit_table).where(audit_table.c.window_id.in_(ids)).order_by(audit_table.c.seq)
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                out.setdefault(r.window_id, []).append(WindowAudit(at=utc(r.at), by=r.by, action=r.action))
        return out

    def _out(self, row: _Row, now: float, audit: dict[str, list[WindowAudit]]) -> MaintenanceWindow:
        extra: dict[str, Any] = {
            "id": row.id,
            "origin": row.origin,
            "created_by": row.created_by,
            "created_at": utc(row.created_at) if row.created_at is not None else None,
            "ended_by": row.ended_by,
            "ended_at": utc(row.ended_at) if row.ended_at is not None else None,
            "state": self._state(row, now),
            "audit": audit.get(row.id, []),
        }
        return MaintenanceWindow.model_validate({**row.spec.model_dump(), **extra})
