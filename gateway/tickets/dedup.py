"""Dedup and correlation: which ticket, if any, a new event belongs to. Pure logic, no I/O.

An event joins a ticket when (in this order):
1. it is a fault of a child whose parent source (e.g. an edge box) has an open offline ticket;
2. its dedup key is on a ticket (open: join; ended within the reopen window: reopen);
3. a street alarm (not a device fault) finds a ticket of its correlation group within the radius
   (open and still active or seen within the window: join; ended within the reopen window: reopen).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from gateway.tickets.models import Ticket
from gateway.tickets.states import ENDED, OPEN

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG_LAT = 111_320.0
OFFLINE_KIND = "device_offline"


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def parent_key(parent_source: str) -> str:
    """The dedup key of a parent source's offline event, under which its children's faults group."""
    return f"{OFFLINE_KIND}:{parent_source}"


class MatchReason(StrEnum):
    parent = "parent"
    dedup_key = "dedup_key"
    nearby = "nearby"


@dataclass(frozen=True, slots=True)
class Match:
    ticket_id: str
    reason: MatchReason
    reopen: bool = False
    distance_m: float | None = None


@dataclass(frozen=True, slots=True)
class DedupPolicy:
    radius_m: float = 50.0
    window_s: float = 900.0
    reopen_window_s: float = 86_400.0


@dataclass(frozen=True, slots=True)
class EventKey:
    """What correlation needs to know about an event."""

    dedup_key: str
    group: str
    lat: float | None
    lon: float | None
    is_fault: bool = False
    parent_source: str | None = None


class CorrelationIndex:
    """Live tickets by dedup key and by place (cells about the radius wide), per group."""

    def __init__(self, radius_m: float) -> None:
        self.radius_m = radius_m
        self._cell_deg = max(radius_m, 1.0) / M_PER_DEG_LAT
        self._by_key: dict[str, str] = {}
        self._keys_of: dict[str, set[str]] = {}
        self._cells: dict[tuple[str, int, int], set[str]] = {}
        self._cell_of: dict[str, tuple[str, int, int]] = {}

    def __len__(self) -> int:
        return len(self._keys_of)

    def __contains__(self, ticket_id: str) -> bool:
        return ticket_id in self._keys_of

    def _cell(self, group: str, lat: float, lon: float) -> tuple[str, int, int]:
        return group, math.floor(lat / self._cell_deg), math.floor(lon / self._cell_deg)

    def add(self, ticket: Ticket) -> None:
        """Index a ticket (again): its dedup key and its place."""
        self.add_key(ticket.id, ticket.dedup_key)
        self.add_place(ticket)

    def add_place(self, ticket: Ticket) -> None:
        """Index a ticket's place (once)."""
        self._keys_of.setdefault(ticket.id, set())
        if ticket.lat is not None and ticket.lon is not None and ticket.id not in self._cell_of:
            cell = self._cell(ticket.group, ticket.lat, ticket.lon)
            self._cells.setdefault(cell, set()).add(ticket.id)
            self._cell_of[ticket.id] = cell

    def add_key(self, ticket_id: str, key: str) -> None:
        """A key now points at this ticket (the newest ticket wins a key)."""
        old = self._by_key.get(key)
        if old is not None and old != ticket_id:
            self._keys_of.get(old, set()).discard(key)
        self._by_key[key] = ticket_id
        self._keys_of.setdefault(ticket_id, set()).add(key)

    def remove(self, ticket_id: str) -> None:
        for key in self._keys_of.pop(ticket_id, set()):
            if self._by_key.get(key) == ticket_id:
                del self._by_key[key]
        cell = self._cell_of.pop(ticket_id, None)
        if cell is not None:
            members = self._cells.get(cell)
            if members is not None:
                members.discard(ticket_id)
                if not members:
                    del self._cells[cell]

    def by_key(self, key: str) -> str | None:
        return self._by_key.get(key)

    def near(self, group: str, lat: float, lon: float) -> list[str]:
        """Ticket ids in the cells around (lat, lon) for a group: candidates, not yet measured."""
        _, ci, cj = self._cell(group, lat, lon)
        # a degree of longitude is shorter away from the equator: look further east and west
        span = math.ceil(1.0 / max(math.cos(math.radians(lat)), 0.05))
        out: list[str] = []
        for di in (-1, 0, 1):
            for dj in range(-span, span + 1):
                members = self._cells.get((group, ci + di, cj + dj))
                if members:
                    out.extend(members)
        return out


def _joinable(t: Ticket, now: float, policy: DedupPolicy, nearby: bool) -> bool:
    if t.status not in OPEN:
        return False
    # a nearby event joins an open ticket while its problem is ongoing or was seen recently
    return not nearby or bool(t.active_keys) or now - t.last_seen <= policy.window_s


def _reopenable(t: Ticket, now: float, policy: DedupPolicy) -> bool:
    return t.status in ENDED and t.ended_at is not None and now - t.ended_at <= policy.reopen_window_s


def find_match(
    ev: EventKey,
    index: CorrelationIndex,
    tickets: Mapping[str, Ticket],
    now: float,
    policy: DedupPolicy,
) -> Match | None:
    """The ticket this event belongs to, or None for a new ticket."""
    if ev.is_fault and ev.parent_source is not None:
        tid = index.by_key(parent_key(ev.parent_source))
        t = tickets.get(tid) if tid else None
        if t is not None and t.status in OPEN:
            return Match(t.id, MatchReason.parent)
    tid = index.by_key(ev.dedup_key)
    t = tickets.get(tid) if tid else None
    if t is not None:
        if _joinable(t, now, policy, nearby=False):
            return Match(t.id, MatchReason.dedup_key)
        if _reopenable(t, now, policy):
            return Match(t.id, MatchReason.dedup_key, reopen=True)
    if ev.is_fault or ev.lat is None or ev.lon is None or policy.radius_m <= 0:
        return None  # a device fault is about that device: no correlation by place
    best_open: tuple[float, str] | None = None
    best_ended: tuple[float, str] | None = None
    for cand in index.near(ev.group, ev.lat, ev.lon):
        t = tickets.get(cand)
        if t is None or t.lat is None or t.lon is None or t.group != ev.group:
            continue
        d = distance_m(ev.lat, ev.lon, t.lat, t.lon)
        if d > policy.radius_m:
            continue
        if _joinable(t, now, policy, nearby=True):
            if best_open is None or (d, t.id) < best_open:
                best_open = (d, t.id)
        elif _reopenable(t, now, policy) and (best_ended is None or (d, t.id) < best_ended):
            best_ended = (d, t.id)
    if best_open is not None:
        return Match(best_open[1], MatchReason.nearby, distance_m=best_open[0])
    if best_ended is not None:
        return Match(best_ended[1], MatchReason.nearby, reopen=True, distance_m=best_ended[0])
    return None
