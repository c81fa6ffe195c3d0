"""What the dashboard (`/`) and the grid worker's page (`/m/`) read beyond the other routers.

`me` (who the token is, what it may do, the teams a ticket may go to), `me/tickets` (the open
tickets the caller may act on), `map` (the base map settings) and `map/grids` (grids.geojson
itself), and `figures` (the headline figures as Chinese centres publish them). The pages call
only the API, so every figure and every action passes the same role checks as any client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from gateway.api.auth import SUPERVISOR_ACTIONS, SUPERVISOR_ROLES, Principal, Reader
from gateway.api.errors import responses
from gateway.api.params import Timestamp
from gateway.api.tickets import service_of
from gateway.tickets.desk import Action
from gateway.tickets.models import Ticket
from gateway.tickets.reports import breached_open, figure_rows, headline, open_counts, unit_ranking
from gateway.tickets.states import OPEN

if TYPE_CHECKING:
    from gateway.api import GatewayView

DAY_S = 86_400.0
MY_TICKETS_MAX = 500


class Me(BaseModel):
    name: str = Field(description="the token's name: the actor in the audit trail")
    role: str
    team: str | None = Field(None, description="role team: the team whose tickets it acts on")
    grids: list[str] = Field(default_factory=list, description="role grid_worker: its grids and micro-grids")
    can_write: bool = Field(description="may act on tickets at all")
    actions: list[Action] = Field(description="the actions the role may take (on tickets in its scope)")
    teams: list[str] = Field(description="teams a ticket may be reassigned to (routing.yaml)")


class MapSettings(BaseModel):
    datum: Literal["wgs84", "gcj02"] = Field(
        description="the base map's datum; the page shifts WGS-84 positions to it"
    )
    tiles: str | None = Field(description="XYZ tile URL template; null: the vector-only map")
    tiles_attribution: str
    tiles_max_zoom: int


class UnitFigures(BaseModel):
    """One team's figures over the window (the units a centre ranks)."""

    team: str
    due: int
    closed: int
    closed_on_time: int
    closure_rate_pct: float | None
    on_time_closure_rate_pct: float | None
    reopen_rate_pct: float | None
    median_accept_s: float | None


class Figures(BaseModel):
    """Headline figures: open work now, and the rates over tickets created in the window."""

    since: datetime
    until: datetime
    open: int = Field(description="street and device tickets someone still has to act on")
    overdue: int = Field(description="open tickets with a breached SLA timer")
    awaiting_verification: int = Field(description="resolved, waiting for the command centre to verify")
    due: int = Field(description="应结案: tickets created in the window, less the cancelled")
    closed: int = Field(description="结案: of those, verified and closed")
    closed_on_time: int = Field(description="按期结案: closed, and resolved by the resolve deadline")
    closure_rate_pct: float | None = Field(description="结案率 = closed / due")
    on_time_closure_rate_pct: float | None = Field(description="按期结案率 = closed on time / due")
    reopen_rate_pct: float | None = Field(description="返工率 = reopened at least once / ever resolved")
    median_accept_s: float | None = Field(description="median seconds from dispatch to acceptance")
    day_start: datetime = Field(description="the start of `events_today`")
    events_today: dict[str, int] = Field(description="event kind -> events started since day_start")
    units: list[UnitFigures] = Field(description="the same rates per team, best 按期结案率 first")


def role_actions(who: Principal) -> list[Action]:
    if not who.can_write:
        return []
    return [a for a in Action if a not in SUPERVISOR_ACTIONS or who.role in SUPERVISOR_ROLES]


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["dashboard"], responses=responses(401, 422))
    grids_doc: list[bytes] = []  # read once: the file is the grid index's own input

    @r.get("/me", response_model=Me)
    def me(who: Reader) -> Me:
        """Who this token is and what it may do (the pages show only those actions)."""
        teams = sorted(view.tickets.desk.routing.known_teams()) if view.tickets is not None else []
        return Me(
            name=who.name,
            role=who.role,
            team=who.team,
            grids=sorted(who.grids),
            can_write=who.can_write,
            actions=role_actions(who),
            teams=teams,
        )

    @r.get("/me/tickets", response_model=list[Ticket], responses=responses(503))
    def my_tickets(who: Reader) -> list[Ticket]:
        """Open tickets in the caller's scope: its grids (grid_worker), its team (team), else all."""
        store = service_of(view).store
        status = sorted(OPEN)
        if who.role == "grid_worker":
            found: dict[str, Ticket] = {}
            for g in sorted(who.grids):
                for key in ("grid_id", "micro_grid_id"):
                    for t in store.list_tickets(status=status, limit=MY_TICKETS_MAX, **{key: g}):
                        found[t.id] = t
            out = list(found.values())
        elif who.role == "team":
            out = store.list_tickets(status=status, team=who.team, limit=MY_TICKETS_MAX)
        else:
            out = store.list_tickets(status=status, limit=MY_TICKETS_MAX)
        return sorted(out, key=lambda t: t.created_at)[:MY_TICKETS_MAX]

    @r.get("/map", response_model=MapSettings)
    def map_settings(_who: Reader) -> MapSettings:
        """The base map: its datum and tile URL (gateway.yaml `map:`)."""
        m = view.cfg.map
        return MapSettings(
            datum=m.datum,
            tiles=m.tiles,
            tiles_attribution=m.tiles_attribution,
            tiles_max_zoom=m.tiles_max_zoom,
        )

    @r.get(
        "/map/grids",
        response_class=Response,
        responses={200: {"content": {"application/geo+json": {}}}, **responses(404)},
    )
    def map_grids(_who: Reader) -> Response:
        """grids.geojson as the gateway loaded it (WGS-84): grids and micro-grids (`parent` set)."""
        path = view.cfg.grids_file
        if path is None:
            raise HTTPException(404, "no grids_file is configured: set grids_file in gateway.yaml")
        if not grids_doc:
            grids_doc.append(path.read_bytes())
        return Response(grids_doc[0], media_type="application/geo+json")

    @r.get("/figures", response_model=Figures, responses=responses(503))
    def figures(
        _who: Reader,
        days: Annotated[float, Query(gt=0, le=366, description="window of the rates, ending now")] = 30,
        day_start: Annotated[
            Timestamp | None,
            Query(description="start of today for `events_today` (the page sends its local midnight)"),
        ] = None,
    ) -> Figures:
        """Open, overdue, 结案率, 按期结案率, 返工率, median time to accept, events today by kind."""
        svc = service_of(view)
        now = view.clock.now()
        start = now - days * DAY_S
        counts = open_counts(svc.store)
        by_state: dict[str, int] = {}
        for per_grid in counts.values():
            for state, n in per_grid.items():
                by_state[state] = by_state.get(state, 0) + n
        rows = figure_rows(svc.store, start, now + 1)
        today = day_start or datetime.fromtimestamp(now - now % DAY_S, UTC)
        return Figures(
            since=datetime.fromtimestamp(start, UTC),
            until=datetime.fromtimestamp(now, UTC),
            open=sum(n for s, n in by_state.items() if s in OPEN),
            overdue=sum(breached_open(svc.store).values()),
            awaiting_verification=by_state.get("resolved", 0),
            **headline(rows),
            day_start=today,
            events_today=dict(sorted(view.store.kind_counts(today).items())),
            units=unit_ranking(rows),
        )

    return r
