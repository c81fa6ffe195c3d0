"""Tickets the desk held back (per-grid rate limit) are not lost when the gateway stops."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.service import Gateway
from tests.integration.spine_helpers import gateway_config
from tests.servers import Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration


def test_events_queued_by_the_rate_limit_get_their_tickets_after_a_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Three alarms in one grid with room for two tickets a minute: the third waits in the desk's
    memory. After a restart it is on a ticket (before, it was lost with the process)."""
    cfg = gateway_config(
        tmp_path, mosquitto, {"api": "none"}, tickets={"rate_limit_per_grid_per_min": 2, "tick_s": 0.1}
    )
    now = int(time.time())
    with Gateway(cfg) as gw:
        assert gw.tickets is not None
        for device, body in (
            ("manhole/MH-1", {"ts": now, "tilt_deg": 30}),
            ("bin/BIN-1", {"ts": now, "fill_pct": 95}),
            ("water_gauge/WG-1", {"ts": now, "water_level_cm": 90}),
        ):
            pub(mosquitto, f"gridgate/devices/{device}/up", json.dumps(body))
        wait_until(lambda: gw.tickets is not None and gw.tickets.stats.events_done >= 3, timeout=10)
        wait_until(lambda: gw.tickets is not None and gw.tickets.desk.storm.queued == 1, timeout=10)
        assert gw.tickets.store.count_tickets() == 2
    with Gateway(cfg) as gw:
        assert gw.tickets is not None
        wait_until(lambda: gw.tickets is not None and gw.tickets.store.count_tickets() == 3, timeout=10)
