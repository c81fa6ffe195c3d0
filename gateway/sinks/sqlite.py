"""The embedded time-series sink: the same points in a local SQLite file, for demos and no-server setups."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

from gateway.sinks.base import SinkError
from gridgate.models import Point

__all__ = ["SQLiteSink"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    fields TEXT NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS points_measurement_time ON points (measurement, time_ns);
"""
_INSERT = "INSERT INTO points (measurement, tags, fields, time_ns) VALUES (?, ?, ?, ?)"
_SORTED = orjson.OPT_SORT_KEYS


def _json(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj, option=_SORTED).decode()


def _finite(v: Any) -> bool:
    return v is not None and not (type(v) is float and v - v != 0.0)


class SQLiteSink:
    """Points in SQLite (WAL): measurement, tags JSON, fields JSON, time_ns.

    Its `encode` makes one compact JSON row per point, so the runner can batch and spool it like
    line protocol; `write_points` stores Points directly.
    """

    format = "sqlite-json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @staticmethod
    def encode(point: Point) -> str | None:
        """One JSON row `[measurement, tags, fields, time_ns]`; None when no field can be stored."""
        fields = {k: v for k, v in point.fields.items() if k and _finite(v)}
        if not fields or not point.measurement:
            return None
        tags = {k: v for k, v in point.tags.items() if k and v}
        return orjson.dumps([point.measurement, tags, fields, point.time_ns], option=_SORTED).decode()

    def write(self, lines: list[str]) -> None:
        """Store encoded rows (from `encode`)."""
        rows = []
        for line in lines:
            m, tags, fields, t = orjson.loads(line)
            rows.append((m, _json(tags), _json(fields), t))
        self._insert(rows)

    def write_points(self, points: list[Point]) -> int:
        """Store Points directly; returns how many were stored (points without fields are skipped)."""
        rows = []
        for p in points:
            fields = {k: v for k, v in p.fields.items() if k and _finite(v)}
            if fields and p.measurement:
                tags = {k: v for k, v in p.tags.items() if k and v}
                rows.append((p.measurement, _json(tags), _json(fields), p.time_ns))
        self._insert(rows)
        return len(rows)

    def _insert(self, rows: list[tuple[str, str, str, int]]) -> None:
        if not rows:
            return
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(_INSERT, rows)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            # locked / disk full / I/O: may pass later; the runner retries and spools
            raise SinkError(f"write {self.url}: {exc}", retryable=True, url=self.url) from exc

    def query(
        self,
        measurement: str,
        tags: dict[str, str] | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = 1000,
        newest_first: bool = False,
    ) -> list[Point]:
        """Points of one measurement matching all `tags`, in time order (oldest first by default)."""
        sql = "SELECT measurement, tags, fields, time_ns FROM points WHERE measurement = ?"
        args: list[Any] = [measurement]
        for k, v in (tags or {}).items():
            sql += " AND json_extract(tags, ?) = ?"
            args += ['$."' + k.replace('"', '""') + '"', v]
        if since_ns is not None:
            sql += " AND time_ns >= ?"
            args.append(since_ns)
        if until_ns is not None:
            sql += " AND time_ns < ?"
            args.append(until_ns)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY time_ns {order}, id {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Point(m, orjson.loads(t), orjson.loads(f), ns) for m, t, f, ns in rows]

    def count(self, measurement: str | None = None) -> int:
        """How many points are stored (of one measurement, or all)."""
        with self._lock:
            if measurement is None:
                return int(self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0])
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM points WHERE measurement = ?", (measurement,)
                ).fetchone()[0]
            )

    def measurements(self) -> list[str]:
        """The measurement names stored."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT measurement FROM points ORDER BY 1")]

    def delete_before(self, time_ns: int) -> int:
        """Retention: delete points older than `time_ns`; returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM points WHERE time_ns < ?", (time_ns,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
