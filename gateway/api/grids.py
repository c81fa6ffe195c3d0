"""Grids and micro-grids with their people and live counts (open tickets by state, active alarms)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from gateway.api.auth import Reader
from gateway.api.errors import responses
from gateway.tickets.reports import breached_open, open_counts
from gateway.tickets.states import OPEN

if TYPE_CHECKING:
    from gateway.api import GatewayView


class GridOut(BaseModel):
    id: str
    name: str = ""
    parent: str | None = Field(None, description="set on a micro-grid: its grid")
    grid_head: str | None = None
    leader: str | None = None
    workers: list[str] = []
    micro_grids: list[str] = Field(default_factory=list, description="ids of its micro-grids")
    fallback: bool = Field(False, description="the grid of points inside no polygon")
    tickets: dict[str, int] = Field(
        default_factory=dict, description="tickets not closed or cancelled, by state (resolved awaits verify)"
    )
    open_tickets: int = Field(0, description="tickets someone still has to act on")
    breached_tickets: int = Field(0, description="open tickets with a breached SLA timer")
    active_alarms: int = Field(0, description="street alarms active now")
    active_faults: int = Field(0, description="device faults active now")


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1/grids", tags=["grids"], responses=responses(401, 422))

    def build(level: str) -> list[GridOut]:
        column = "micro_grid_id" if level == "micro_grid" else "grid_id"
        counts = open_counts(view.tickets.store, column) if view.tickets is not None else {}
        breached = breached_open(view.tickets.store, column) if view.tickets is not None else {}
        active = view.store.active_counts(column)
        children: dict[str, list[str]] = {}
        for g in view.grids.grids.values():
            if g.parent:
                children.setdefault(g.parent, []).append(g.id)
        out = []
        props = [g for g in view.grids.grids.values() if (g.parent is None) == (level == "grid")]
        ids = {g.id for g in props}
        for g in props:
            out.append(
                GridOut(
                    id=g.id,
                    name=g.name,
                    parent=g.parent,
                    grid_head=g.grid_head,
                    leader=g.leader,
                    workers=g.workers,
                    micro_grids=sorted(children.get(g.id, [])),
                )
            )
        fb = view.grids.fallback_grid
        if level == "grid" and fb not in ids:
            out.append(GridOut(id=fb, name="outside every grid", fallback=True))
        for g in out:
            by_state = counts.get(g.id, {})
            g.tickets = dict(sorted(by_state.items()))
            g.open_tickets = sum(n for s, n in by_state.items() if s in OPEN)
            g.breached_tickets = breached.get(g.id, 0)
            g.active_alarms = active.get(g.id, {}).get("alarm", 0)
            g.active_faults = active.get(g.id, {}).get("fault", 0)
        return sorted(out, key=lambda g: (g.fallback, g.id))

    @r.get("", response_model=list[GridOut])
    def grids(
        _who: Reader,
        level: Annotated[Literal["grid", "micro_grid"], Query(description="grids or micro-grids")] = "grid",
        busy: Annotated[bool, Query(description="only those with open tickets or active alarms")] = False,
    ) -> list[GridOut]:
        """Grids or micro-grids with live counts: open tickets by state, breached, alarms, faults."""
        out = build(level)
        return [g for g in out if g.open_tickets or g.active_alarms or g.active_faults] if busy else out

    @r.get("/{grid_id}", response_model=GridOut, responses=responses(404))
    def grid(grid_id: str, _who: Reader) -> GridOut:
        """One grid or micro-grid with its live counts."""
        props = view.grids.grids.get(grid_id)
        level = "micro_grid" if props is not None and props.parent else "grid"
        for g in build(level):
            if g.id == grid_id:
                return g
        raise HTTPException(404, f"no grid or micro-grid {grid_id!r} (GET /api/v1/grids lists them)")

    return r
