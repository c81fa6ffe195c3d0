"""Retry keys of accepted pushes, remembered for a TTL in memory and in SQLite (kept across restarts).

CTWing sends a body up to 4 times, OneNET up to 17 times over 2 h 45 min, whenever an answer was
slow or lost. A key is written (WAL, one small row) right after the push is journaled and before
the 200 leaves, so a retry after a crash or restart is still recognised.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

PRUNE_EVERY = 1000  # adds between two deletions of expired rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS push_keys (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS push_keys_expiry ON push_keys (expires_at);
"""


class PushDedup:
    """A bounded set of keys with a TTL (`now` is passed in: no clock of its own). Thread-safe."""

    def __init__(self, path: Path, ttl_s: float, max_keys: int, now: float) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        # one writer, this process: no file locks per transaction (a key is written before every 200)
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("DELETE FROM push_keys WHERE expires_at <= ?", (now,))
        rows = self._db.execute(
            "SELECT key, expires_at FROM push_keys ORDER BY expires_at DESC LIMIT ?", (max_keys,)
        ).fetchall()
        self._keys: OrderedDict[str, float] = OrderedDict(reversed(rows))  # oldest first
        self._adds = 0

    def __len__(self) -> int:
        return len(self._keys)

    def seen(self, key: str, now: float) -> bool:
        """Whether `key` was added less than the TTL ago."""
        with self._lock:
            expires = self._keys.get(key)
            return expires is not None and expires > now

    def add(self, key: str, now: float) -> None:
        """Remember `key` until now + TTL, on disk before this returns."""
        expires = now + self.ttl_s
        with self._lock:
            self._keys[key] = expires
            self._keys.move_to_end(key)
            self._db.execute(
                "INSERT OR REPLACE INTO push_keys (key, expires_at) VALUES (?, ?)", (key, expires)
            )
            self._adds += 1
            if self._adds % PRUNE_EVERY == 0 or len(self._keys) > self.max_keys:
                self._prune(now)

    def _prune(self, now: float) -> None:
        while self._keys:
            key, expires = next(iter(self._keys.items()))
            if expires > now and len(self._keys) <= self.max_keys:
                break
            del self._keys[key]
        oldest_kept = next(iter(self._keys.values()), float("inf"))
        self._db.execute("DELETE FROM push_keys WHERE expires_at < ?", (oldest_kept,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
