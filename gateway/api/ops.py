"""Operations: health and Prometheus metrics (both unauthenticated, for probes and scrapers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

import gridgate

if TYPE_CHECKING:
    from gateway.api import GatewayView


class Health(BaseModel):
    """`degraded` (HTTP 503) names its `problems`: `mqtt_disconnected`, `worker_down`,
    `sink_backing_off` (writes to the time-series database failing), `sink_dropping` (the backlog
    hit `buffer_max_points` within the last 5 minutes), `checkpoint_stale` (no checkpoint saved
    for 30 s: the journal grows and a restart would replay all of it). Sink figures add up the
    gateway process and its workers; `sink_last_error` is the gateway's, else a worker's, without
    credentials."""

    status: Literal["ok", "degraded"]
    problems: list[str] = []
    version: str = gridgate.__version__
    mqtt_connected: bool
    devices: int
    sink: str
    sink_state: Literal["healthy", "backing_off"] = "healthy"
    sink_failed_attempts: int = 0
    sink_last_error: str | None = None
    buffer_depth: int
    spooled: int = 0
    points_dropped: int = 0
    points_refused: int = 0
    checkpoint_age_s: float = 0.0
    journal_bytes: int = 0


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(tags=["ops"])

    @r.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "degraded: see `problems`"}},
    )
    def healthz(response: Response) -> Health:
        """`ok` (200) or `degraded` (503) with its problems, the sink's state and the journal's; open."""
        health = view.health()
        if health.status != "ok":
            response.status_code = 503
        return health

    @r.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
    )
    def metrics() -> Response:
        """Prometheus metrics (`gridgate_*`); open."""
        return Response(generate_latest(view.metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    return r
