"""Reports over the ticket store: SLA performance and hotspots ("one class of cases").

The queries read a few columns of the tickets table; the maths is pure (rows in, figures out) so it
is tested without a database.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select

from gateway.tickets.states import ENDED, OPEN, TicketStatus
from gateway.tickets.store import TicketStore, tickets

METRES_PER_DEGREE = 111_320.0
ENDED_VALUES = frozenset(s.value for s in ENDED)


@dataclass(frozen=True, slots=True)
class SLARow:
    """The columns of one ticket that the SLA report needs (epoch seconds)."""

    grid_id: str
    category: str
    status: str
    cycle_started_at: float
    accepted_at: float | None
    on_site_at: float | None
    resolved_at: float | None
    accept_by: float
    on_site_by: float
    resolve_by: float
    breach_count: int


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class SLAFigures:
    tickets: int = 0
    accept_s: list[float] = field(default_factory=list)
    arrive_s: list[float] = field(default_factory=list)
    resolve_s: list[float] = field(default_factory=list)
    judged: int = 0
    met: int = 0
    accept_met: int = 0
    accept_judged: int = 0
    on_site_met: int = 0
    on_site_judged: int = 0
    resolve_met: int = 0
    resolve_judged: int = 0

    def add(self, r: SLARow, now: float) -> None:
        self.tickets += 1
        start = r.cycle_started_at
        for at, by, values, timer in (
            (r.accepted_at, r.accept_by, self.accept_s, "accept"),
            (r.on_site_at, r.on_site_by, self.arrive_s, "on_site"),
            (r.resolved_at, r.resolve_by, self.resolve_s, "resolve"),
        ):
            if at is not None:
                values.append(at - start)
            # a timer is judged once it was met or its deadline passed; a running one is not
            if at is not None or now >= by:
                setattr(self, f"{timer}_judged", getattr(self, f"{timer}_judged") + 1)
                if at is not None and at <= by:
                    setattr(self, f"{timer}_met", getattr(self, f"{timer}_met") + 1)
        if r.status in ENDED_VALUES or r.breach_count:
            self.judged += 1
            self.met += r.breach_count == 0

    def to_json(self) -> dict[str, Any]:
        def pct(met: int, judged: int) -> float | None:
            return round(100.0 * met / judged, 2) if judged else None

        def stat(values: list[float]) -> dict[str, Any]:
            p50, p90 = percentile(values, 50), percentile(values, 90)
            return {
                "n": len(values),
                "p50_s": round(p50, 3) if p50 is not None else None,
                "p90_s": round(p90, 3) if p90 is not None else None,
            }

        return {
            "tickets": self.tickets,
            "time_to_accept": stat(self.accept_s),
            "time_to_arrive": stat(self.arrive_s),
            "time_to_resolve": stat(self.resolve_s),
            "compliance_pct": pct(self.met, self.judged),
            "accept_compliance_pct": pct(self.accept_met, self.accept_judged),
            "on_site_compliance_pct": pct(self.on_site_met, self.on_site_judged),
            "resolve_compliance_pct": pct(self.resolve_met, self.resolve_judged),
            "judged": self.judged,
        }


def sla_report(
    rows: Iterable[SLARow], now: float, by: str = "grid_category"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """p50/p90 times to accept, arrive, resolve and compliance %, per group (grid, category or both).

    Times run from the start of the ticket's cycle (created or reopened). `compliance_pct`: of the
    tickets that ended or breached a timer, those that breached none.
    """
    groups: dict[tuple[str, ...], SLAFigures] = defaultdict(SLAFigures)
    total = SLAFigures()
    for r in rows:
        key = {"grid": (r.grid_id,), "category": (r.category,)}.get(by, (r.grid_id, r.category))
        groups[key].add(r, now)
        total.add(r, now)
    names = {"grid": ("grid_id",), "category": ("category",)}.get(by, ("grid_id", "category"))
    out = [dict(zip(names, key, strict=True)) | figs.to_json() for key, figs in sorted(groups.items())]
    return out, total.to_json()


def sla_rows(store: TicketStore, since: float, until: float, **filters: Any) -> list[SLARow]:
    c = tickets.c
    q = select(
        c.grid_id,
        c.category,
        c.status,
        c.cycle_started_at,
        c.accepted_at,
        c.on_site_at,
        c.resolved_at,
        c.accept_by,
        c.on_site_by,
        c.resolve_by,
        c.breach_count,
    ).where(and_(c.created_at >= since, c.created_at < until))
    for name in ("grid_id", "category", "team"):
        if filters.get(name) is not None:
            q = q.where(getattr(c, name) == filters[name])
    with store.engine.connect() as conn:
        return [SLARow(*row) for row in conn.execute(q)]


@dataclass(frozen=True, slots=True)
class HotspotRow:
    id: str
    category: str
    grid_id: str
    micro_grid_id: str | None
    lat: float | None
    lon: float | None
    created_at: float
    reopen_count: int
    count: int


def cell_of(lat: float, lon: float, cell_m: float) -> tuple[int, int]:
    """A square cell of about `cell_m` metres containing the point (lon shrinks with latitude)."""
    dlat = cell_m / METRES_PER_DEGREE
    dlon = cell_m / (METRES_PER_DEGREE * max(math.cos(math.radians(lat)), 0.01))
    return math.floor(lat / dlat), math.floor(lon / dlon)


def hotspots(
    rows: Iterable[HotspotRow], *, min_count: int, place: str = "cell", cell_m: float = 100.0
) -> list[dict[str, Any]]:
    """The same category recurring at one place at least `min_count` times, most frequent first.

    An occurrence is a ticket, or a reopening of one (the problem came back). `place` is a square
    cell of `cell_m` metres, a micro-grid, or a grid.
    """
    buckets: dict[tuple[str, Any], list[HotspotRow]] = defaultdict(list)
    for r in rows:
        if place == "grid":
            where: Any = r.grid_id
        elif place == "micro_grid":
            where = r.micro_grid_id or r.grid_id
        elif r.lat is not None and r.lon is not None:
            where = cell_of(r.lat, r.lon, cell_m)
        else:
            where = ("grid", r.grid_id)
        buckets[(r.category, where)].append(r)
    out = []
    for (category, _where), members in buckets.items():
        occurrences = sum(1 + m.reopen_count for m in members)
        if occurrences < min_count:
            continue
        located = [m for m in members if m.lat is not None and m.lon is not None]
        grids = Counter(m.grid_id for m in members)
        micro = Counter(m.micro_grid_id for m in members if m.micro_grid_id)
        out.append(
            {
                "category": category,
                "occurrences": occurrences,
                "tickets": len(members),
                "events": sum(m.count for m in members),
                "grid_id": grids.most_common(1)[0][0],
                "micro_grid_id": micro.most_common(1)[0][0] if micro else None,
                "lat": round(sum(m.lat for m in located) / len(located), 6) if located else None,  # type: ignore[misc]
                "lon": round(sum(m.lon for m in located) / len(located), 6) if located else None,  # type: ignore[misc]
                "first_at": min(m.created_at for m in members),
                "last_at": max(m.created_at for m in members),
                "ticket_ids": [m.id for m in sorted(members, key=lambda m: m.created_at)],
            }
        )
    out.sort(key=lambda h: (-h["occurrences"], h["category"], h["grid_id"]))
    return out


def hotspot_rows(store: TicketStore, since: float, until: float, **filters: Any) -> list[HotspotRow]:
    c = tickets.c
    q = select(
        c.id, c.category, c.grid_id, c.micro_grid_id, c.lat, c.lon, c.created_at, c.reopen_count, c.count
    ).where(and_(c.created_at >= since, c.created_at < until))
    for name in ("grid_id", "category", "team"):
        if filters.get(name) is not None:
            q = q.where(getattr(c, name) == filters[name])
    with store.engine.connect() as conn:
        return [HotspotRow(*row) for row in conn.execute(q)]


def open_counts(store: TicketStore, column: str = "grid_id") -> dict[str, dict[str, int]]:
    """grid (or micro-grid) id -> status -> tickets, for tickets not closed or cancelled."""
    col = getattr(tickets.c, column)
    q = (
        select(col, tickets.c.status, func.count())
        .where(tickets.c.status.not_in([TicketStatus.closed.value, TicketStatus.cancelled.value]))
        .where(col.is_not(None))
        .group_by(col, tickets.c.status)
    )
    out: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for key, status, n in conn.execute(q):
            out.setdefault(key, {})[status] = int(n)
    return out


def breached_open(store: TicketStore, column: str = "grid_id") -> dict[str, int]:
    """grid (or micro-grid) id -> open tickets with a breached SLA timer."""
    col = getattr(tickets.c, column)
    q = (
        select(col, func.count())
        .where(tickets.c.status.in_([s.value for s in OPEN]))
        .where(tickets.c.breach_count > 0)
        .group_by(col)
    )
    with store.engine.connect() as conn:
        return {key: int(n) for key, n in conn.execute(q) if key is not None}


@dataclass(frozen=True, slots=True)
class FigureRow:
    """The columns of one ticket that the headline figures need (epoch seconds)."""

    status: str
    cycle_started_at: float
    accepted_at: float | None
    resolved_at: float | None
    resolve_by: float
    closed_at: float | None
    reopen_count: int
    team: str = ""


def figure_rows(store: TicketStore, since: float, until: float) -> list[FigureRow]:
    c = tickets.c
    q = select(
        c.status,
        c.cycle_started_at,
        c.accepted_at,
        c.resolved_at,
        c.resolve_by,
        c.closed_at,
        c.reopen_count,
        c.team,
    ).where(and_(c.created_at >= since, c.created_at < until, c.is_fault.is_(False)))
    with store.engine.connect() as conn:
        return [FigureRow(*row) for row in conn.execute(q)]


def headline(rows: Sequence[FigureRow]) -> dict[str, Any]:
    """The rates Chinese centres publish, over the street tickets created in a window.

    应结案 (due): every ticket not cancelled; 结案率: closed (verified) / due; 按期结案率: closed
    and resolved by its resolve deadline / due; 返工率 (reopen rate): reopened at least once / those
    ever resolved; median time to accept: from the (last) cycle start to acceptance.
    """
    due = [r for r in rows if r.status != TicketStatus.cancelled.value]
    closed = [r for r in due if r.status == TicketStatus.closed.value]
    on_time = [r for r in closed if r.resolved_at is not None and r.resolved_at <= r.resolve_by]
    ever_resolved = [r for r in due if r.resolved_at is not None or r.reopen_count > 0]
    reworked = [r for r in ever_resolved if r.reopen_count > 0]
    accept_s = [r.accepted_at - r.cycle_started_at for r in rows if r.accepted_at is not None]

    def pct(n: int, d: int) -> float | None:
        return round(100.0 * n / d, 1) if d else None

    return {
        "due": len(due),
        "closed": len(closed),
        "closed_on_time": len(on_time),
        "closure_rate_pct": pct(len(closed), len(due)),
        "on_time_closure_rate_pct": pct(len(on_time), len(due)),
        "reopen_rate_pct": pct(len(reworked), len(ever_resolved)),
        "median_accept_s": percentile(accept_s, 50),
    }


def unit_ranking(rows: Sequence[FigureRow]) -> list[dict[str, Any]]:
    """The headline figures per team (the units a centre ranks), best on-time closure first."""
    by_team: dict[str, list[FigureRow]] = defaultdict(list)
    for r in rows:
        by_team[r.team].append(r)
    out = [{"team": team} | headline(group) for team, group in by_team.items()]
    return sorted(out, key=lambda u: (-(u["on_time_closure_rate_pct"] or 0.0), -u["due"], u["team"]))
