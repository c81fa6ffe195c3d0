"""The gateway's HTTP API (FastAPI): health, devices, events and Prometheus metrics."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, Protocol

from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

import gridgate
from gateway.metrics import GatewayMetrics
from gateway.store import GatewayStore
from gridgate.models import Event, EventClass, EventState


class DeviceOut(BaseModel):
    id: str
    type: str
    name: str | None = None
    lat: float
    lon: float
    grid_id: str
    micro_grid_id: str | None = None
    codec: str
    reporting_interval_s: float
    last_seen: datetime | None = Field(None, description="time of the last uplink, UTC")
    online: bool
    active_alarms: list[Event] = []
    active_faults: list[Event] = []


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str = gridgate.__version__
    mqtt_connected: bool
    devices: int
    sink: str
    buffer_depth: int


class GatewayView(Protocol):
    """What the API reads from the running gateway."""

    metrics: GatewayMetrics
    store: GatewayStore

    def devices(self) -> list[DeviceOut]: ...

    def health(self) -> Health: ...

    def evidence_path(self, edge_id: str, event_id: str, name: str) -> Path | None: ...


def create_app(view: GatewayView) -> FastAPI:
    app = FastAPI(
        title="gridgate",
        version=gridgate.__version__,
        summary="Street sensors and cameras to grid events and tickets",
    )

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz(response: Response) -> Health:
        health = view.health()
        if health.status != "ok":
            response.status_code = 503
        return health

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(view.metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/devices", response_model=list[DeviceOut], tags=["devices"])
    def devices(
        type: Annotated[str | None, Query(description="manhole, bin or water_gauge")] = None,
        grid_id: Annotated[str | None, Query()] = None,
        online: Annotated[bool | None, Query()] = None,
        alarming: Annotated[
            bool | None, Query(description="only devices with (or without) active alarms")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[DeviceOut]:
        out = [
            d
            for d in view.devices()
            if (type is None or d.type == type)
            and (grid_id is None or d.grid_id == grid_id)
            and (online is None or d.online == online)
            and (alarming is None or bool(d.active_alarms) == alarming)
        ]
        return out[offset : offset + limit]

    @app.get("/api/v1/devices/{device_id}", response_model=DeviceOut, tags=["devices"])
    def device(device_id: str) -> DeviceOut:
        for d in view.devices():
            if d.id == device_id:
                return d
        raise HTTPException(404, f"device {device_id!r} is not in the registry")

    @app.get("/api/v1/events", response_model=list[Event], tags=["events"])
    def events(
        kind: Annotated[str | None, Query(description="e.g. bin_full, water_high, device_offline")] = None,
        grid_id: Annotated[str | None, Query()] = None,
        state: Annotated[EventState | None, Query()] = None,
        event_class: Annotated[EventClass | None, Query(description="alarm or fault")] = None,
        source: Annotated[str | None, Query(description="device:<id> or camera:<id>")] = None,
        since: Annotated[datetime | None, Query(description="started at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="started before (ISO 8601)")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[Event]:
        return view.store.query_events(
            kind=kind,
            grid_id=grid_id,
            state=state.value if state else None,
            event_class=event_class.value if event_class else None,
            source=source,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    @app.get(
        "/api/v1/evidence/{edge_id}/{event_id}/{name}",
        tags=["events"],
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def evidence(edge_id: str, event_id: str, name: str) -> FileResponse:
        """A snapshot of a video event (the URLs are in the event's `evidence.snapshots`)."""
        path = view.evidence_path(edge_id, event_id, name)
        if path is None:
            raise HTTPException(404, f"no snapshot {name!r} for event {event_id!r} of edge box {edge_id!r}")
        return FileResponse(path, media_type="image/jpeg")

    return app
