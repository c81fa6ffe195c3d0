"""Cameras of the edge boxes: the latest analysed frame of each, with what its detector saw drawn."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from gateway.api.auth import Reader
from gateway.api.errors import responses

if TYPE_CHECKING:
    from gateway.api import GatewayView


FRAME_STALE_S = 120.0  # a frame older than this: the box analyses the camera no more (or sends none)


class CameraOut(BaseModel):
    id: str
    edge_id: str = Field(description="the edge box that sent its latest frame")
    last_frame_at: datetime
    frame_age_s: float
    edge_online: bool = Field(description="false once the box's Last Will said offline")
    state: Literal["ok", "stale", "offline"] = Field(
        description=f"offline: its box is offline; stale: no frame for {FRAME_STALE_S:.0f} s; else ok"
    )
    lat: float | None = Field(None, description="where its latest event was (its zone), if any")
    lon: float | None = None
    active_alarms: int = Field(0, description="its video events active now")
    frame_url: str


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1/cameras", tags=["cameras"], responses=responses(401, 422))

    @r.get("", response_model=list[CameraOut])
    def cameras(_who: Reader) -> list[CameraOut]:
        """Every camera that sent a frame, with its health and where its events happen."""
        now = view.clock.now()
        places = view.store.source_places("camera:")
        out = []
        for f in view.camera_frames():
            camera_id = f.path.stem
            lat, lon, active = places.get(f"camera:{camera_id}", (None, None, 0))
            age = max(0.0, now - f.received_at.timestamp())
            online = not view.edge_offline(f.edge_id)
            out.append(
                CameraOut(
                    id=camera_id,
                    edge_id=f.edge_id,
                    last_frame_at=f.received_at,
                    frame_age_s=round(age, 1),
                    edge_online=online,
                    state="offline" if not online else ("stale" if age > FRAME_STALE_S else "ok"),
                    lat=lat,
                    lon=lon,
                    active_alarms=active,
                    frame_url=f"/api/v1/cameras/{camera_id}/frame",
                )
            )
        return out

    @r.get(
        "/{camera_id}/frame",
        response_class=FileResponse,
        responses={
            200: {
                "content": {"image/jpeg": {}},
                "description": "JPEG; headers `X-Edge-Id` (the box that sent it) and `Last-Modified`",
            },
            **responses(404),
        },
    )
    def frame(camera_id: str, _who: Reader) -> FileResponse:
        """The camera's latest analysed frame with boxes, labels, scores, track ids and zones drawn
        (the edge box sends one every `publisher.snapshot_every_s`)."""
        found = view.camera_frame(camera_id)
        if found is None:
            raise HTTPException(
                404,
                f"no frame from camera {camera_id!r} yet: its edge box sends one every "
                "publisher.snapshot_every_s seconds once it analyses the stream (check that the camera id "
                "is in the box's cameras.yaml and that snapshot_every_s is not 0)",
            )
        return FileResponse(
            found.path,
            media_type="image/jpeg",
            headers={"X-Edge-Id": found.edge_id, "Cache-Control": "no-cache"},
        )

    return r
