"""The gateway's HTTP API (FastAPI): one router per resource, its models beside it.

`ops` (health, metrics: unauthenticated), `devices`, `events`, `cameras`, `tickets` (with their
photos), `grids`, `maintenance` (maintenance windows), `reports`, `dashboard` (what the pages
read: me, map, figures), `stream` (WebSocket), `open311` (GeoReport v2) and `platforms`
(CTWing/OneNET push, no bearer token); `pages` serves the dashboard (`/`) and the grid worker's
page (`/m/`). `auth` holds the bearer tokens and roles, `errors` the one error body (and
Open311's), `body` the per-route body limits checked after authentication, `params` the bounded
query types (limit, offset, ISO 8601 times).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from fastapi import FastAPI

import gridgate
from gateway.api import (
    cameras,
    dashboard,
    devices,
    errors,
    events,
    grids,
    maintenance,
    open311,
    ops,
    pages,
    platforms,
    reports,
    stream,
    tickets,
)
from gateway.api.auth import Authenticator
from gateway.api.body import BodyLimit
from gateway.api.devices import DeviceOut
from gateway.api.ops import Health
from gateway.edge_ingest import CameraFrame
from gateway.grids import GridIndex
from gateway.hygiene import MaintenanceWindows
from gateway.metrics import GatewayMetrics
from gateway.platforms.receiver import PushReceiver
from gateway.store import GatewayStore
from gateway.stream import StreamHub
from gateway.tickets.desk import Outcome
from gateway.tickets.service import TicketService
from gridgate.clock import Clock
from gridgate.config import GatewayConfig
from gridgate.models import Event

__all__ = ["DeviceOut", "GatewayView", "Health", "create_app"]


class GatewayView(Protocol):
    """What the API reads from (and hands to) the running gateway."""

    cfg: GatewayConfig
    clock: Clock
    metrics: GatewayMetrics
    store: GatewayStore
    grids: GridIndex
    tickets: TicketService | None
    stream: StreamHub
    auth: Authenticator
    windows: MaintenanceWindows
    push: PushReceiver | None  # operator platforms' HTTP push, when one is enabled

    def devices(self) -> list[DeviceOut]: ...

    def health(self) -> Health: ...

    def evidence_path(self, edge_id: str, event_id: str, name: str) -> Path | None: ...

    def camera_frame(self, camera_id: str) -> CameraFrame | None: ...

    def camera_frames(self) -> list[CameraFrame]: ...

    def edge_offline(self, edge_id: str) -> bool:
        """Its Last Will said offline (and it has not come back)."""
        ...

    def report_event(self, event: Event) -> Outcome | None:
        """An event from outside the broker (an Open311 report): stored, streamed, ticketed now."""
        ...


def create_app(view: GatewayView) -> FastAPI:
    app = FastAPI(
        title="gridgate",
        version=gridgate.__version__,
        summary="Street sensors and cameras to grid events and tickets",
        description="Bearer tokens with roles (see `auth:` in gateway.yaml); /healthz and /metrics are open. "
        "Every error is `ErrorBody` (`detail`, and `errors` for invalid fields); Open311 under "
        "/open311/v2/ uses GeoReport v2's error format. Request bodies are limited per route (413), "
        "and a body is only read once its bearer token is valid (401).",
    )
    app.state.auth = view.auth
    if view.push is not None:  # first: routes are matched in order, and a push must be answered fast
        app.include_router(platforms.router(view))
    for module in (ops, devices, events, cameras, tickets, grids, maintenance, reports, dashboard, stream):
        app.include_router(module.router(view))
    if view.cfg.open311.enabled:
        app.include_router(open311.router(view))
    # the pages last: `/` (the command centre) and `/m/` (the grid worker's phone), static files only
    app.mount("/", pages.Pages(view.cfg.map.tiles), name="pages")
    errors.install(app)
    lim = view.cfg.limits
    app.add_middleware(
        BodyLimit,
        auth=view.auth,
        photos_max=lim.max_photo_bytes * lim.max_photos_per_upload,
        push_max=view.cfg.platforms.max_body_bytes,
    )
    return app
