"""Events (alarms and faults) from the event store, and the snapshots of video events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse

from gateway.api.auth import Reader
from gateway.api.errors import responses
from gateway.api.params import Limit, Offset, Timestamp
from gridgate.models import Event, EventClass, EventState

EVIDENCE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mp4": "video/mp4",
    ".json": "application/json",
}

if TYPE_CHECKING:
    from gateway.api import GatewayView


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["events"], responses=responses(401, 422))

    @r.get("/events", response_model=list[Event])
    def events(
        _who: Reader,
        kind: Annotated[str | None, Query(description="e.g. bin_full, water_high, device_offline")] = None,
        grid_id: Annotated[str | None, Query()] = None,
        state: Annotated[EventState | None, Query()] = None,
        event_class: Annotated[EventClass | None, Query(description="alarm or fault")] = None,
        source: Annotated[str | None, Query(description="device:<id> or camera:<id>")] = None,
        since: Annotated[Timestamp | None, Query(description="started at or after (ISO 8601)")] = None,
        until: Annotated[Timestamp | None, Query(description="started before (ISO 8601)")] = None,
        suppressed: Annotated[
            bool | None, Query(description="true: only muted events (`suppressed_by` set); false: only live")
        ] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> list[Event]:
        """Events (alarms and faults of devices and cameras), newest first."""
        return view.store.query_events(
            kind=kind,
            grid_id=grid_id,
            state=state.value if state else None,
            event_class=event_class.value if event_class else None,
            source=source,
            since=since,
            until=until,
            suppressed=suppressed,
            limit=limit,
            offset=offset,
        )

    @r.get(
        "/evidence/{edge_id}/{event_id}/{name}",
        response_class=FileResponse,
        responses={
            200: {"content": {"image/jpeg": {}, "video/mp4": {}, "application/json": {}}},
            **responses(404),
        },
    )
    def evidence(edge_id: str, event_id: str, name: str, _who: Reader) -> FileResponse:
        """A video event's evidence file: a snapshot (URLs in the event's `evidence.snapshots`), its
        clip `clip.mp4` (`evidence.clip`) or, once it ended, its `manifest.json` of SHA-256 hashes."""
        path = view.evidence_path(edge_id, event_id, name)
        if path is None:
            raise HTTPException(404, f"no evidence {name!r} for event {event_id!r} of edge box {edge_id!r}")
        return FileResponse(path, media_type=EVIDENCE_TYPES.get(path.suffix, "image/jpeg"))

    return r
