"""Cameras of the edge boxes: the latest analysed frame of each, with what its detector saw drawn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from gateway.api.auth import Reader
from gateway.api.errors import responses

if TYPE_CHECKING:
    from gateway.api import GatewayView


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1/cameras", tags=["cameras"], responses=responses(401, 422))

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
