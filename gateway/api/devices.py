"""Devices in the registry, with their live state."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from gateway.api.auth import Reader
from gateway.api.errors import responses
from gateway.api.params import Limit, Offset
from gridgate.models import Event

if TYPE_CHECKING:
    from gateway.api import GatewayView


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
    in_maintenance: bool = Field(False, description="a maintenance window covers it now (维护中): no tickets")


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=responses(401, 422))

    @r.get("", response_model=list[DeviceOut])
    def devices(
        _who: Reader,
        type: Annotated[str | None, Query(description="manhole, bin or water_gauge")] = None,
        grid_id: Annotated[str | None, Query()] = None,
        online: Annotated[bool | None, Query()] = None,
        alarming: Annotated[
            bool | None, Query(description="only devices with (or without) active alarms")
        ] = None,
        limit: Limit = 1000,
        offset: Offset = 0,
    ) -> list[DeviceOut]:
        """Every device: type, position, grid, last seen, online, active alarms and faults."""
        out = [
            d
            for d in view.devices()
            if (type is None or d.type == type)
            and (grid_id is None or d.grid_id == grid_id)
            and (online is None or d.online == online)
            and (alarming is None or bool(d.active_alarms) == alarming)
        ]
        return out[offset : offset + limit]

    @r.get("/{device_id}", response_model=DeviceOut, responses=responses(404))
    def device(device_id: str, _who: Reader) -> DeviceOut:
        """One device of devices.yaml with its live state."""
        for d in view.devices():
            if d.id == device_id:
                return d
        raise HTTPException(404, f"device {device_id!r} is not in the registry")

    return r
