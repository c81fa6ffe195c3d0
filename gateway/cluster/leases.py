"""Who owns what in a cluster: PostgreSQL session advisory locks, held on one connection.

A lock is held for as long as the connection that took it lives: a replica killed with SIGKILL,
or cut off from the database, loses its locks the moment PostgreSQL notices the connection is
gone, and the others take over. Three kinds, each in its own key space (the first key of the
two-key form, derived from the topic prefix so two deployments on one database never meet):
  member   one slot per running ingest replica (its number names its broker sessions)
  bucket   one per bucket of devices (and one for the edge boxes' topics)
  leader   the one lead dispatcher
Which locks exist is read from `pg_locks`, so counting the replicas needs no table of its own.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

MAX_MEMBERS = 256


def key_space(prefix: str, kind: str) -> int:
    """The first advisory-lock key of one kind of lock for one topic prefix (a positive int4)."""
    return zlib.crc32(f"gridgate:{prefix}:{kind}".encode()) & 0x7FFFFFFF


def conninfo(url: str) -> str:
    """A libpq connection string from the SQLAlchemy URL (`postgresql+psycopg://...`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class Plan:
    take: list[int]
    give: list[int]


def rebalance(owned: set[int], free: set[int], units: int, members: int, rng: random.Random) -> Plan:
    """What one replica should take and give up so that each holds about units / members.

    Everyone aims at the same share (rounded up), so the cluster settles without talking: a
    replica above it gives the surplus back, one below it takes free units (in random order, so
    two replicas taking at once seldom reach for the same one; the lock decides anyway)."""
    share = math.ceil(units / max(1, members))
    if len(owned) > share:
        return Plan([], sorted(owned)[share:])
    want = share - len(owned)
    candidates = sorted(free - owned)
    rng.shuffle(candidates)
    return Plan(candidates[:want], [])


class Leases:
    """One replica's (or dispatcher's) locks. Not thread-safe: one thread drives it."""

    def __init__(self, url: str, prefix: str) -> None:
        self.conn = psycopg.connect(conninfo(url), autocommit=True)
        self.spaces = {kind: key_space(prefix, kind) for kind in ("member", "bucket", "leader")}

    def close(self) -> None:
        self.conn.close()  # every lock goes with the connection

    def try_lock(self, kind: str, key: int) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.spaces[kind], key)).fetchone()
        return bool(row and row[0])

    def unlock(self, kind: str, key: int) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self.spaces[kind], key))

    def held(self, kind: str) -> set[int]:
        """The keys of this kind anyone holds now (this connection included)."""
        rows = self.conn.execute(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid = %s::bigint::oid "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (self.spaces[kind],),
        ).fetchall()
        return {int(r[0]) for r in rows}

    def join(self) -> int:
        """Take the lowest free member slot: this replica's number while it lives."""
        for slot in range(MAX_MEMBERS):
            if self.try_lock("member", slot):
                return slot
        raise RuntimeError(f"more than {MAX_MEMBERS} ingest replicas share this database and prefix")

    def free(self, kind: str, keys: Iterable[int]) -> set[int]:
        return set(keys) - self.held(kind)

    def ping(self) -> None:
        """Raise (psycopg.Error) if the connection, and with it every lock, is gone."""
        self.conn.execute("SELECT 1")
