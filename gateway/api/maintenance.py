"""Maintenance windows: listed by every reader, created and ended early by the command centre or an admin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from gateway.api.auth import Reader, Supervisor
from gateway.api.errors import responses
from gateway.hygiene import MaintenanceWindow, WindowNotEndable, WindowNotFound
from gateway.hygiene.windows import WindowState
from gridgate.hygiene_config import WindowSpec

if TYPE_CHECKING:
    from gateway.api import GatewayView


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1/maintenance-windows", tags=["maintenance"], responses=responses(401, 422))

    @r.get("", response_model=list[MaintenanceWindow])
    def windows(
        _who: Reader,
        state: Annotated[
            WindowState | None, Query(description="scheduled, open, idle, expired, ended")
        ] = None,
    ) -> list[MaintenanceWindow]:
        """Every maintenance window (from gateway.yaml and the API) with its state and audit trail."""
        return [w for w in view.windows.list(view.clock.now()) if state is None or w.state == state]

    @r.get("/{window_id}", response_model=MaintenanceWindow, responses=responses(404))
    def window(window_id: str, _who: Reader) -> MaintenanceWindow:
        """One maintenance window with its audit trail."""
        try:
            return view.windows.get(window_id, view.clock.now())
        except WindowNotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @r.post("", response_model=MaintenanceWindow, status_code=201, responses=responses(400, 403, 413))
    def create(body: WindowSpec, who: Supervisor, response: Response) -> MaintenanceWindow:
        """A maintenance window: readings and events of what it covers are kept (suppressed), no tickets."""
        known = view.grids.grids
        unknown = [
            f"{field}: grid {g!r} is not in the grid map (GET /api/v1/grids lists them)"
            for field, ids in (("grids", body.grids), ("micro_grids", body.micro_grids))
            for g in ids
            if g not in known and g != view.cfg.fallback_grid
        ]
        if unknown:
            raise HTTPException(422, "; ".join(unknown))
        made = view.windows.create(body, who.name, view.clock.now())
        response.headers["Location"] = f"/api/v1/maintenance-windows/{made.id}"
        return made

    @r.delete("/{window_id}", response_model=MaintenanceWindow, responses=responses(403, 404, 409))
    def end(window_id: str, who: Supervisor) -> MaintenanceWindow:
        """End a window early (kept, with who ended it and when, in its audit trail)."""
        try:
            return view.windows.end(window_id, who.name, view.clock.now())
        except WindowNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except WindowNotEndable as exc:
            raise HTTPException(409, str(exc)) from exc

    return r
