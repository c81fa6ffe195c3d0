"""Gateway behaviour over time with a real broker: offline and stuck sensors on an injected clock,
and alarm state kept across a restart without duplicate events."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.service import Gateway
from gridgate.clock import FakeClock
from tests.integration.spine_helpers import gateway_config
from tests.servers import Collector, Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration


def up(broker: Mosquitto, dtype: str, device: str, ts: float, **values: float) -> None:
    pub(broker, f"gridgate/devices/{dtype}/{device}/up", json.dumps({"ts": ts, **values}))


def test_offline_and_stuck_sensor_with_injected_clock(mosquitto: Mosquitto, tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, offline_check_s=0.1)
    with (
        Collector.on(mosquitto, ["gridgate/maintenance/#", "gridgate/alerts/#"]) as col,
        Gateway(cfg, clock=clock),
    ):
        up(mosquitto, "water_gauge", "WG-OUT", clock.now(), water_level_cm=2.0)
        up(mosquitto, "water_gauge", "WG-1", clock.now(), water_level_cm=3.0)
        # WG-OUT reports every 60 s: silent for 151 s it is offline, its LWT-free silence noticed by the clock
        clock.advance(151)
        msgs = col.wait_for(lambda ms: any(m.json()["kind"] == "device_offline" for m in ms), 10)
        offline = [m.json() for m in msgs if m.json()["kind"] == "device_offline"]
        assert {o["source"] for o in offline} == {"device:WG-OUT"}
        assert all(
            m.topic == "gridgate/maintenance/maintenance/faults"
            for m in col.on_topic("gridgate/maintenance/#")
        )
        # back online with its next uplink
        up(mosquitto, "water_gauge", "WG-OUT", clock.now(), water_level_cm=2.0)
        col.wait_for(
            lambda ms: any(
                m.json()["kind"] == "device_offline" and m.json()["state"] == "cleared" for m in ms
            )
        )
        # WG-1 reports every 300 s: the same level for 24 h is a stuck sensor
        for _ in range(300):
            clock.advance(300)
            up(mosquitto, "water_gauge", "WG-1", clock.now(), water_level_cm=3.0)
            up(mosquitto, "water_gauge", "WG-OUT", clock.now(), water_level_cm=2.0 + (clock.now() % 7) / 10)
        col.wait_for(lambda ms: [m for m in ms if m.json()["kind"] == "stuck_sensor"], 20)
        stuck = [m.json() for m in col.on_topic("gridgate/alerts/+/stuck_sensor")]
        assert [(s["source"], s["state"]) for s in stuck] == [("device:WG-1", "active")]
        # an LWT `offline` is offline at once
        pub(mosquitto, "gridgate/devices/water_gauge/WG-1/status", "offline")
        col.wait_for(
            lambda ms: any(
                m.json()["kind"] == "device_offline" and m.json()["source"] == "device:WG-1" for m in ms
            )
        )


@pytest.mark.parametrize("workers", [0, 2])
def test_alarm_state_survives_restart_without_duplicates(
    mosquitto: Mosquitto, tmp_path: Path, workers: int
) -> None:
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, ingest={"workers": workers})
    t0 = time.time() - 100
    with Collector.on(mosquitto, ["gridgate/alerts/#"]) as col:
        with Gateway(cfg) as gw:
            up(mosquitto, "bin", "BIN-1", t0, fill_pct=92.0)
            first = col.wait_count(1, "gridgate/alerts/+/bin_full")[0].json()
            assert first["state"] == "active"
            wait_until(lambda: gw.metrics.readings >= 1, 5)
        # a new gateway process reads the state the old one left
        with Gateway(cfg) as gw:
            up(mosquitto, "bin", "BIN-1", t0 + 10, fill_pct=95.0)  # still full: no second `active`
            wait_until(lambda: gw.metrics.readings >= 1, 10, "reading handled after restart")
            assert [e.kind for e in gw.engine.active_events("BIN-1")] == ["bin_full"]
            up(mosquitto, "bin", "BIN-1", t0 + 20, fill_pct=20.0)  # emptied: cleared, same event id
            cleared = col.wait_for(lambda ms: [m for m in ms if m.json()["state"] == "cleared"], 10)
        changes = [m.json() for m in col.on_topic("gridgate/alerts/+/bin_full")]
        assert [c["state"] for c in changes] == ["active", "cleared"]
        assert cleared[-1].json()["id"] == first["id"]


def test_worker_devices_show_live_state_between_checkpoints(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """With worker processes the gateway's device view follows every report, not each checkpoint."""
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, ingest={"workers": 2, "checkpoint_s": 60})
    t0 = time.time() - 100

    def shown(device_id: str) -> tuple[list[str], float | None]:
        d = next(d for d in gw.devices() if d.id == device_id)
        seen = d.last_seen.timestamp() if d.last_seen else None
        return sorted(e.kind for e in d.active_alarms + d.active_faults), seen

    with Gateway(cfg) as gw:
        up(mosquitto, "bin", "BIN-1", t0, fill_pct=92.0, battery_pct=5.0)
        up(mosquitto, "manhole", "MH-1", t0, tilt_deg=2.0, battery_pct=80.0)
        wait_until(lambda: gw.metrics.messages_in >= 2, 10, "both readings handled")
        wait_until(lambda: shown("BIN-1")[0] == ["battery_low", "bin_full"], 5, "BIN-1's events shown")
        assert shown("MH-1") == ([], pytest.approx(time.time(), abs=10))
        up(mosquitto, "bin", "BIN-1", t0 + 10, fill_pct=20.0, battery_pct=90.0)
        wait_until(lambda: shown("BIN-1")[0] == [], 5, "BIN-1's events cleared")
        assert gw.checkpoint_seq == 0  # no checkpoint came in between: the reports carried it


def test_worker_hand_offs_race_checkpoints_without_losing_a_message(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Partial batches handed over (the MQTT thread's read done) while checkpoints are asked for:
    a checkpoint request must never overtake a batch it accounts for, or the worker skips the batch."""
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, ingest={"workers": 2, "checkpoint_s": 0.01})
    n = 20_000
    t0 = time.time() - 3600
    with Gateway(cfg) as gw:
        assert gw.shards is not None
        for i in range(n):
            device, field = [("MH-1", "tilt_deg"), ("BIN-1", "fill_pct"), ("WG-1", "water_level_cm")][i % 3]
            dtype = {"MH-1": "manhole", "BIN-1": "bin", "WG-1": "water_gauge"}[device]
            body = json.dumps({"ts": t0 + i * 0.1, field: 1.0 + i % 2}).encode()
            gw._on_message(f"gridgate/devices/{dtype}/{device}/up", body, i + 1, False)
            if i % 7 == 0:
                gw.shards.flush()  # what the MQTT thread does each time it has read all it had
        wait_until(lambda: gw.metrics.messages_in >= n, 60, f"{n} messages handled")
        assert gw.metrics.messages_decoded == n
