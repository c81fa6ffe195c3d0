"""Reports: SLA performance per grid and category, and hotspots ("one class of cases")."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from gateway.api.auth import Reader
from gateway.api.errors import responses
from gateway.api.params import Timestamp
from gateway.api.tickets import service_of
from gateway.tickets.reports import hotspot_rows, hotspots, sla_report, sla_rows

if TYPE_CHECKING:
    from gateway.api import GatewayView

DAY_S = 86_400.0


class Timing(BaseModel):
    n: int = Field(description="tickets that reached this step")
    p50_s: float | None = Field(description="median seconds from the start of the cycle")
    p90_s: float | None


class SLAFigures(BaseModel):
    grid_id: str | None = None
    category: str | None = None
    tickets: int
    time_to_accept: Timing
    time_to_arrive: Timing
    time_to_resolve: Timing
    compliance_pct: float | None = Field(
        description="of the tickets that ended or breached a timer, % that breached none"
    )
    accept_compliance_pct: float | None = Field(description="% of judged accept timers met")
    on_site_compliance_pct: float | None
    resolve_compliance_pct: float | None
    judged: int


class SLAReport(BaseModel):
    since: datetime
    until: datetime
    by: str
    groups: list[SLAFigures]
    total: SLAFigures


class Hotspot(BaseModel):
    category: str
    occurrences: int = Field(description="tickets at this place plus their reopenings")
    tickets: int
    events: int = Field(description="events the tickets carried")
    grid_id: str
    micro_grid_id: str | None
    lat: float | None
    lon: float | None
    first_at: float
    last_at: float
    ticket_ids: list[str]


class HotspotReport(BaseModel):
    since: datetime
    until: datetime
    place: str
    min_count: int
    hotspots: list[Hotspot]
    by_category: dict[str, int] = Field(description="category -> number of hotspots: the classes of cases")


def window(
    view: GatewayView, since: datetime | None, until: datetime | None, days: float
) -> tuple[float, float]:
    end = until.timestamp() if until is not None else view.clock.now() + 1
    start = since.timestamp() if since is not None else end - days * DAY_S
    if start >= end:
        raise HTTPException(422, "since must be before until")
    return start, end


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1/reports", tags=["reports"], responses=responses(401, 422, 503))

    @r.get("/sla", response_model=SLAReport)
    def sla(
        _who: Reader,
        by: Annotated[Literal["grid_category", "grid", "category"], Query()] = "grid_category",
        since: Annotated[
            Timestamp | None, Query(description="tickets created at or after; default 30 days")
        ] = None,
        until: Annotated[Timestamp | None, Query(description="created before; default now")] = None,
        grid_id: Annotated[str | None, Query()] = None,
        category: Annotated[str | None, Query()] = None,
        team: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """p50/p90 time to accept, arrive, resolve and SLA compliance %, per grid and category."""
        svc = service_of(view)
        start, end = window(view, since, until, 30)
        rows = sla_rows(svc.store, start, end, grid_id=grid_id, category=category, team=team)
        groups, total = sla_report(rows, view.clock.now(), by)
        return {"since": start, "until": end, "by": by, "groups": groups, "total": total}

    @r.get("/hotspots", response_model=HotspotReport)
    def hotspot_report(
        _who: Reader,
        min_count: Annotated[
            int, Query(ge=2, description="occurrences at one place to count as a hotspot")
        ] = 3,
        days: Annotated[float, Query(gt=0, le=366, description="window ending now (or at `until`)")] = 30,
        until: Annotated[Timestamp | None, Query()] = None,
        place: Annotated[
            Literal["cell", "micro_grid", "grid"], Query(description="what counts as one place")
        ] = "cell",
        cell_m: Annotated[float, Query(ge=10, le=5000, description="side of a cell in metres")] = 100,
        category: Annotated[str | None, Query()] = None,
        grid_id: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """The same category recurring at one place at least `min_count` times in the window."""
        svc = service_of(view)
        start, end = window(view, None, until, days)
        rows = hotspot_rows(svc.store, start, end, category=category, grid_id=grid_id)
        found = hotspots(rows, min_count=min_count, place=place, cell_m=cell_m)
        by_category: dict[str, int] = {}
        for h in found:
            by_category[h["category"]] = by_category.get(h["category"], 0) + 1
        return {
            "since": start,
            "until": end,
            "place": place,
            "min_count": min_count,
            "hotspots": found,
            "by_category": by_category,
        }

    return r
