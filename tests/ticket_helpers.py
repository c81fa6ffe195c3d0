"""Builders for ticket tests: a small grid map, events, and a desk or service on a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.grids import GridIndex
from gateway.tickets.desk import TicketDesk
from gateway.tickets.notify import MemoryNotifier
from gateway.tickets.routing import RoutingConfig, load_routing
from gateway.tickets.service import TicketService
from gateway.tickets.store import TicketStore
from gridgate.clock import FakeClock
from gridgate.config import TicketsConfig
from gridgate.models import Event, EventClass, EventState, Location, Severity, utc

ROUTING_FILE = Path(__file__).resolve().parent.parent / "config" / "routing.yaml"

# a camera and a water gauge about 20 m apart, in micro-grid G1-M1
GAUGE = (30.2200, 120.1200)
CAMERA = (30.22015, 120.12012)


def _square(props: dict[str, Any], lon: float, lat: float, dlon: float, dlat: float) -> dict[str, Any]:
    ring = [[lon, lat], [lon + dlon, lat], [lon + dlon, lat + dlat], [lon, lat + dlat], [lon, lat]]
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def grid_doc() -> dict[str, Any]:
    """G1 (with micro-grid G1-M1 in its south-west) and G2 east of it, which overrides parking."""
    return {
        "type": "FeatureCollection",
        "features": [
            _square(
                {"id": "G1", "grid_head": "head-G1", "leader": "leader-G1", "workers": ["worker-G1"]},
                120.10,
                30.20,
                0.10,
                0.10,
            ),
            _square({"id": "G1-M1", "parent": "G1", "workers": ["worker-G1-M1"]}, 120.10, 30.20, 0.05, 0.05),
            _square(
                {
                    "id": "G2",
                    "grid_head": "head-G2",
                    "leader": "leader-G2",
                    "workers": ["worker-G2"],
                    "teams": {"illegal_parking": "enforcement-zone-2"},
                },
                120.20,
                30.20,
                0.10,
                0.10,
            ),
        ],
    }


def grids() -> GridIndex:
    return GridIndex.from_geojson(grid_doc(), "outside")


def routing() -> RoutingConfig:
    return load_routing(ROUTING_FILE)


def tickets_cfg(**overrides: Any) -> TicketsConfig:
    base: dict[str, Any] = {"offline_grace_s": 0, "offline_settle_s": 0, "update_coalesce_s": 30}
    return TicketsConfig(**(base | overrides))


def event(
    kind: str,
    source: str,
    at: float,
    where: tuple[float, float] | None = GAUGE,
    *,
    state: EventState = EventState.active,
    event_class: EventClass = EventClass.alarm,
    severity: Severity = Severity.major,
    id: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> Event:
    extra: dict[str, Any] = {"id": id} if id else {}
    return Event(
        kind=kind,
        source=source,
        event_class=event_class,
        location=Location(lat=where[0], lon=where[1]) if where else None,
        severity=severity,
        state=state,
        started_at=utc(at),
        updated_at=utc(at),
        evidence=evidence or {},
        **extra,
    )


def cleared(ev: Event, at: float) -> Event:
    """The clear of an active event: same id, state cleared."""
    return ev.model_copy(update={"state": EventState.cleared, "ended_at": utc(at), "updated_at": utc(at)})


def make_service(
    url: str, clock: FakeClock, cfg: TicketsConfig | None = None, **desk_kw: Any
) -> tuple[TicketService, MemoryNotifier]:
    """A service with a memory notifier; drive it with `process()` and `tick()` (no worker thread)."""
    cfg = cfg or tickets_cfg()
    desk = TicketDesk(TicketStore(url), routing(), grids(), cfg, now=clock.now(), **desk_kw)
    notes = MemoryNotifier()
    svc = TicketService(desk, notes, clock, tick_s=cfg.tick_s, coalesce_s=cfg.update_coalesce_s)
    return svc, notes
