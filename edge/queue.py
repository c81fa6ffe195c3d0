"""The edge box's outbox: an SQLite queue of MQTT messages, in order, that survives restarts.

Every event message and evidence picture is written here first; the publisher sends rows in
order and deletes a row only when the broker acknowledged it (PUBACK). While the broker is away
the rows wait; when it returns they go out oldest first. Event messages carry a `seq` from a
counter kept in the same database, so their order survives a restart too.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gridgate.edge.queue")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    kind TEXT NOT NULL,          -- event | evidence
    bytes INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    kind: str = "event"
    qos: int = 1
    retain: bool = False


class DiskQueue:
    """Thread-safe (one connection behind a lock); WAL, so a crash loses no committed row."""

    def __init__(self, path: str | Path, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta(k, v) VALUES ('seq', 0)")
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        self.dropped = 0  # rows deleted unsent because the cap was reached

    def put(
        self, items: Iterable[Outgoing], build_event: Callable[[int], Outgoing] | None = None
    ) -> int | None:
        """Append `items` then, if given, the event `build_event(seq)` with the next seq, atomically.

        Returns the seq used, or None.
        """
        items = list(items)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = None
                if build_event is not None:
                    self._db.execute("UPDATE meta SET v = v + 1 WHERE k = 'seq'")
                    seq = int(self._db.execute("SELECT v FROM meta WHERE k = 'seq'").fetchone()[0])
                    items.append(build_event(seq))
                for it in items:
                    self._db.execute(
                        "INSERT INTO outbox(topic, payload, qos, retain, kind, bytes, created) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (it.topic, it.payload, it.qos, int(it.retain), it.kind, len(it.payload), now),
                    )
                    self._count += 1
                    self._bytes += len(it.payload)
                self._enforce_cap()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox").fetchone()
                self._count, self._bytes = int(row[0]), int(row[1])
                raise
        return seq

    def _enforce_cap(self) -> None:
        if self._bytes <= self.max_bytes:
            return
        # pictures first (the event messages matter more), oldest first
        for kind in ("evidence", "event"):
            while self._bytes > self.max_bytes:
                row = self._db.execute(
                    "SELECT id, bytes FROM outbox WHERE kind = ? ORDER BY id LIMIT 1", (kind,)
                ).fetchone()
                if row is None:
                    break
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
                self._count -= 1
                self._bytes -= int(row[1])
                self.dropped += 1
        log.warning(
            "event=queue_full path=%s max_bytes=%d dropped_total=%d action=dropped_oldest",
            self.path,
            self.max_bytes,
            self.dropped,
        )

    def peek(self, after_id: int, limit: int) -> list[Row]:
        """Up to `limit` rows with id > `after_id`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, kind FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Row(int(r[0]), r[1], bytes(r[2]), int(r[3]), bool(r[4]), r[5]) for r in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """The broker has these rows: delete them."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for i in ids:
                row = self._db.execute("SELECT bytes FROM outbox WHERE id = ?", (i,)).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM outbox WHERE id = ?", (i,))
                    self._count -= 1
                    self._bytes -= int(row[0])
            self._db.execute("COMMIT")

    def depth(self) -> tuple[int, int]:
        """(messages, bytes) waiting."""
        return self._count, self._bytes

    def last_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT v FROM meta WHERE k = 'seq'").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
