"""Tickets end to end on a real Mosquitto: device uplinks -> gateway -> ticket notifications.

The storm is honest about what a device can do: an alarm that stays active emits no new event, so
1,000 events from one sensor means a cover that flaps open/closed 1,000 times (2,000 uplinks, each
open a new `manhole_open` event with the same dedup key). Video-style bursts of distinct active
events go through the gateway's listener hook in test_tickets_lifecycle (the edge topic has no
ingest yet).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.service import Gateway
from gateway.tickets.states import TicketStatus
from gridgate.models import Location
from tests.integration.spine_helpers import gateway_config
from tests.servers import Collector, Mosquitto, pub, wait_until
from tests.ticket_helpers import ROUTING_FILE, cleared, event

pytestmark = pytest.mark.integration


def ticket_cfg(**extra: object) -> dict[str, object]:
    return {"routing_file": ROUTING_FILE, "offline_grace_s": 0, "tick_s": 0.1, **extra}


@pytest.mark.slow
def test_dedup_storm_of_1000_events_through_the_broker(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, tickets=ticket_cfg(update_coalesce_s=1.0))
    with Collector.on(mosquitto, "gridgate/tickets/#") as col, Gateway(cfg) as gw:
        assert gw.tickets is not None
        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="MH-1")
        device.connect(mosquitto.host, mosquitto.port)
        device.loop_start()
        t0 = time.time() - 4000  # the cover's own clock: one open/close pair every 2 s
        started = time.monotonic()
        infos = []
        for i in range(1000):
            for dt, is_open in ((0, True), (1, False)):
                body = json.dumps({"ts": t0 + 2 * i + dt, "open": is_open})
                infos.append(device.publish("gridgate/devices/manhole/MH-1/up", body, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        device.loop_stop()
        device.disconnect()
        wait_until(lambda: gw.metrics.events_out[("manhole_open", "active")] == 1000, 30, "1,000 raises")
        assert gw.tickets.drain(30)
        msgs = col.wait_for(lambda ms: any(m.json()["ticket"]["count"] == 1000 for m in ms), 15)
        elapsed = time.monotonic() - started
        tickets = gw.tickets.store.list_tickets()
        assert len(tickets) == 1
        t = tickets[0]
        assert (t.count, t.category, t.team, t.grid_id, t.status) == (
            1000,
            "manhole_open",
            "municipal_works",
            "G1",
            TicketStatus.dispatched,  # the last uplink closed it: resolved after the clear hold
        )
        bodies = [m.json() for m in msgs]
        assert {m.topic for m in msgs} == {"gridgate/tickets/municipal_works"}
        assert [b["kind"] for b in bodies].count("created") == 1
        # one notification per state change, count updates at most one a second: not 1,000
        assert len(bodies) <= 1 + int(elapsed / 1.0) + 2, [b["kind"] for b in bodies]
        assert bodies[0]["ticket"]["id"] == t.id and bodies[0]["target"]["person"] is None


def test_camera_and_gauge_correlate_and_clear_through_the_gateway(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg = gateway_config(
        tmp_path, mosquitto, {"api": "none"}, tickets=ticket_cfg(update_coalesce_s=0, clear_hold_s=0)
    )
    with Collector.on(mosquitto, "gridgate/tickets/#") as col, Gateway(cfg) as gw:
        assert gw.tickets is not None
        now = time.time()
        pub(
            mosquitto,
            "gridgate/devices/water_gauge/WG-1/up",
            json.dumps({"ts": now - 1200, "water_level_cm": 22}),
        )
        first = col.wait_count(1, timeout=10)[0].json()
        assert (first["kind"], first["ticket"]["category"], first["ticket"]["team"]) == (
            "created",
            "water_high",
            "drainage",
        )
        # the camera's ponding detection ~20 m away, as the edge will hand it to the gateway
        cam = event("ponding", "camera:cam-1", now, None, evidence={"snapshot": "/snap/cam-1/77.jpg"})
        cam.location = Location(lat=30.24015, lon=120.15012)
        gw.tickets.on_events([cam])
        second = col.wait_count(2, timeout=10)[1].json()
        assert second["kind"] == "updated" and second["ticket"]["id"] == first["ticket"]["id"]
        assert (
            second["ticket"]["sources"] == ["device:WG-1", "camera:cam-1"] and second["ticket"]["count"] == 2
        )
        # the water recedes (below 10 cm for 10 minutes on the gauge's clock) and the camera clears
        pub(
            mosquitto,
            "gridgate/devices/water_gauge/WG-1/up",
            json.dumps({"ts": now - 1100, "water_level_cm": 4}),
        )
        pub(
            mosquitto,
            "gridgate/devices/water_gauge/WG-1/up",
            json.dumps({"ts": now - 400, "water_level_cm": 3}),
        )
        gw.tickets.on_events([cleared(cam, time.time())])
        done = col.wait_for(lambda ms: any(m.json()["to_status"] == "resolved" for m in ms), 10)
        resolved = [m.json() for m in done if m.json()["to_status"] == "resolved"]
        assert len(resolved) == 1 and resolved[0]["reason"] == "events_cleared"
        assert gw.tickets.store.count_tickets() == 1
