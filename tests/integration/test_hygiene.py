"""Alert hygiene through a running gateway on a real broker: cause mutes symptoms, maintenance windows.

A fake clock drives the recovery time and the windows; tickets, events and points are read where
an operator reads them (the API, the embedded time-series store).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from websockets.sync.client import connect

from gateway.hygiene import MaintenanceWindows, Target
from gateway.service import Gateway
from gridgate.clock import FakeClock
from gridgate.hygiene_config import WindowSpec
from gridgate.models import utc
from tests.integration.spine_helpers import DEVICES, gateway_config
from tests.servers import Collector, Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration

RECOVERY_S = 120.0
T0 = 1_800_000_000.0
TOKENS = {"cc": "command_centre", "ro": "read_only", "drainage": "team"}


def token(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}-token-0123456789abcdef"}


def make_gateway(tmp: Path, broker: Mosquitto, clock: FakeClock, **extra: Any) -> Gateway:
    cfg = gateway_config(
        tmp,
        broker,
        {"api": "none"},
        tickets={"offline_grace_s": 0, "offline_settle_s": 0, "tick_s": 0.05, "clear_hold_s": 3600},
        **({"hygiene": {"recovery_s": RECOVERY_S}} | extra),
        auth={
            "tokens": [
                {"name": n, "token": token(n)["Authorization"][7:], "role": role, "team": "drainage"}
                if role == "team"
                else {"name": n, "token": token(n)["Authorization"][7:], "role": role}
                for n, role in TOKENS.items()
            ]
        },
    )
    devices = dict(DEVICES)
    devices["devices"] = [
        *DEVICES["devices"],
        {"id": "MH-E1", "type": "manhole", "lat": 30.25, "lon": 120.18, "behind": "EB-1"},
        {"id": "MH-E2", "type": "manhole", "lat": 30.25, "lon": 120.19, "behind": "EB-1"},
    ]
    cfg.devices_file.write_text(yaml.safe_dump(devices))
    return Gateway(cfg, clock=clock).start()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def up(broker: Mosquitto, dtype: str, device: str, ts: float, **values: float) -> None:
    pub(broker, f"gridgate/devices/{dtype}/{device}/up", json.dumps({"ts": ts, **values}))


def api(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.api_url or "", timeout=10, headers=token("ro"))


def tickets(gw: Gateway) -> list[dict[str, Any]]:
    assert gw.tickets is not None
    gw.tickets.drain(10)
    r = api(gw).get("/api/v1/tickets")
    assert r.status_code == 200, r.text
    return r.json()


def categories(gw: Gateway, source: str) -> list[str]:
    """The categories of the tickets that carry `source`, in order of creation."""
    return [
        t["category"] for t in sorted(tickets(gw), key=lambda t: t["created_at"]) if source in t["sources"]
    ]


def events(gw: Gateway, **params: str) -> list[dict[str, Any]]:
    gw.checkpoint()  # the event store is written at checkpoints
    r = api(gw).get("/api/v1/events", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def event_points(gw: Gateway) -> list[dict[str, Any]]:
    assert gw.flush(10)
    with sqlite3.connect(gw.cfg.storage.timeseries_db) as db:
        rows = db.execute(
            "SELECT tags, fields FROM points WHERE measurement = 'events' ORDER BY id"
        ).fetchall()
    return [{**json.loads(t), **json.loads(f)} for t, f in rows]


def wait_for_kinds(gw: Gateway, *kinds: str) -> None:
    wait_until(lambda: {k for k in kinds} <= {e["kind"] for e in events(gw)}, 10)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_offline_gauge_mutes_its_water_alarm_until_it_has_recovered(
    mosquitto: Mosquitto, tmp_path: Path, clock: FakeClock, workers: int
) -> None:
    gw = make_gateway(tmp_path, mosquitto, clock, ingest={"workers": workers})
    try:
        up(mosquitto, "water_gauge", "WG-1", clock.now(), water_level_cm=2.0)
        pub(mosquitto, "gridgate/devices/water_gauge/WG-1/status", "offline")
        wait_until(lambda: categories(gw, "device:WG-1") == ["device_offline"], 10)
        clock.advance(60)
        # it comes back with water rising: the first uplink clears the offline, the water rises at once
        for level in (12.0, 20.0, 30.0):
            up(mosquitto, "water_gauge", "WG-1", clock.now(), water_level_cm=level)
            clock.advance(1)
        wait_until(lambda: [e for e in events(gw, kind="water_high") if e["severity"] == "critical"], 10)
        [offline] = events(gw, kind="device_offline")
        [water] = events(gw, kind="water_high")
        assert offline["suppressed_by"] is None and offline["state"] == "cleared"
        assert water["suppressed_by"] == offline["id"] and water["state"] == "active"
        assert categories(gw, "device:WG-1") == ["device_offline"]  # exactly one: no water ticket
        points = [p for p in event_points(gw) if p["kind"] == "water_high"]
        assert points and all(p["suppressed_by"] == offline["id"] for p in points)
        # still high when the recovery time is over: live now, and its ticket opens
        clock.advance(RECOVERY_S)
        wait_until(lambda: "water_high" in categories(gw, "device:WG-1"), 10)
        [water] = events(gw, kind="water_high")
        assert water["suppressed_by"] is None
        assert [p for p in event_points(gw) if p["kind"] == "water_high"][-1].get("suppressed_by") is None
        assert categories(gw, "device:WG-1") == ["device_offline", "water_high"]
    finally:
        gw.stop()


def test_an_offline_cover_mutes_its_tilt_but_never_an_open_lid(
    mosquitto: Mosquitto, tmp_path: Path, clock: FakeClock
) -> None:
    gw = make_gateway(tmp_path, mosquitto, clock)
    try:
        pub(mosquitto, "gridgate/devices/manhole/MH-1/status", "offline")
        wait_until(lambda: categories(gw, "device:MH-1") == ["device_offline"], 10)
        up(mosquitto, "manhole", "MH-1", clock.now(), tilt_deg=25.0, open=True)
        wait_for_kinds(gw, "manhole_tilt", "manhole_open")
        [offline] = events(gw, kind="device_offline", source="device:MH-1")
        assert events(gw, kind="manhole_tilt")[0]["suppressed_by"] == offline["id"]
        assert events(gw, kind="manhole_open")[0]["suppressed_by"] is None  # a hole in the road
        wait_until(lambda: "manhole_open" in categories(gw, "device:MH-1"), 10)
        assert sorted(categories(gw, "device:MH-1")) == ["device_offline", "manhole_open"]
    finally:
        gw.stop()


def test_an_offline_edge_box_mutes_the_offline_of_the_devices_behind_it(
    mosquitto: Mosquitto, tmp_path: Path, clock: FakeClock
) -> None:
    gw = make_gateway(tmp_path, mosquitto, clock)
    try:
        faults = Collector.on(
            mosquitto, ["gridgate/maintenance/#", "gridgate/alerts/+/device_offline"]
        ).start()
        pub(mosquitto, "gridgate/edge/EB-1/status", "offline")
        wait_until(lambda: [t for t in tickets(gw) if t["category"] == "device_offline"], 10)
        for device in ("MH-E1", "MH-E2", "MH-1"):
            pub(mosquitto, f"gridgate/devices/manhole/{device}/status", "offline")
        wait_until(lambda: len(events(gw, kind="device_offline")) == 4, 10)
        # the command centre sees every alert with its reason; maintenance is paged for the live ones
        alerts = faults.wait_count(4, "gridgate/alerts/#")
        assert {m.json()["source"]: m.json()["suppressed_by"] is not None for m in alerts} == {
            "edge:EB-1": False,
            "device:MH-E1": True,
            "device:MH-E2": True,
            "device:MH-1": False,
        }
        paged = faults.wait_count(2, "gridgate/maintenance/#")
        time.sleep(0.3)
        assert (
            sorted(m.json()["source"] for m in faults.on_topic("gridgate/maintenance/#"))
            == [
                "device:MH-1",
                "edge:EB-1",
            ]
            and len(paged) == 2
        )
        faults.stop()
        by_source = {e["source"]: e for e in events(gw, kind="device_offline")}
        edge_id = by_source["edge:EB-1"]["id"]
        assert by_source["device:MH-E1"]["suppressed_by"] == edge_id
        assert by_source["device:MH-E2"]["suppressed_by"] == edge_id
        assert by_source["device:MH-1"]["suppressed_by"] is None  # not behind the box
        muted = {e["source"] for e in events(gw, kind="device_offline", suppressed="true")}
        live = {e["source"] for e in events(gw, kind="device_offline", suppressed="false")}
        assert (muted, live) == ({"device:MH-E1", "device:MH-E2"}, {"device:MH-1", "edge:EB-1"})
        wait_until(lambda: len(tickets(gw)) == 2, 10)
        assert gw.tickets is not None and gw.tickets.drain(5)
        sources = sorted(s for t in tickets(gw) for s in t["sources"])
        assert sources == ["device:MH-1", "edge:EB-1"]
    finally:
        faults.stop()
        gw.stop()


@pytest.fixture
def gw(mosquitto: Mosquitto, tmp_path: Path, clock: FakeClock) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, mosquitto, clock)
    try:
        yield gateway
    finally:
        gateway.stop()


def test_a_maintenance_window_over_the_api_mutes_its_bins_until_it_ends(
    gw: Gateway, mosquitto: Mosquitto, clock: FakeClock
) -> None:
    client = api(gw)
    body = {
        "reason": "bins emptied and cleaned",
        "device_types": ["bin"],
        "grids": ["G1"],
        "starts_at": utc(clock.now()).isoformat(),
        "ends_at": (utc(clock.now()) + timedelta(hours=1)).isoformat(),
    }
    # who may: the command centre; a team or a read-only screen may not; a bad body says why
    r = client.post("/api/v1/maintenance-windows", json=body, headers=token("drainage"))
    assert r.status_code == 403 and "command centre or an admin" in r.json()["detail"]
    assert client.post("/api/v1/maintenance-windows", json=body).status_code == 403
    bad = client.post(
        "/api/v1/maintenance-windows", json={**body, "ends_at": body["starts_at"]}, headers=token("cc")
    )
    assert bad.status_code == 422 and "is not after starts_at" in bad.json()["detail"]
    bad = client.post("/api/v1/maintenance-windows", json={**body, "grids": ["G9"]}, headers=token("cc"))
    assert bad.status_code == 422 and "grid 'G9' is not in the grid map" in bad.json()["detail"]
    bad = client.post(
        "/api/v1/maintenance-windows",
        json={k: v for k, v in body.items() if k != "ends_at"},
        headers=token("cc"),
    )
    assert bad.status_code == 422 and "needs starts_at and ends_at" in bad.json()["detail"]
    r = client.post("/api/v1/maintenance-windows", json=body, headers=token("cc"))
    assert r.status_code == 201, r.text
    window = r.json()
    assert window["state"] == "open" and window["created_by"] == "cc"
    assert r.headers["location"] == f"/api/v1/maintenance-windows/{window['id']}"
    devices = {d["id"]: d for d in client.get("/api/v1/devices").json()}
    assert devices["BIN-1"]["in_maintenance"] and not devices["WG-1"]["in_maintenance"]

    # during the window: readings stored, the event stored (and streamed) as suppressed, no ticket
    ws_url = (gw.api_url or "").replace("http://", "ws://") + "/api/v1/stream"
    with connect(f"{ws_url}?token={token('cc')['Authorization'][7:]}&types=alert&kinds=bin_full") as ws:
        assert json.loads(ws.recv(5))["type"] == "hello"
        up(mosquitto, "bin", "BIN-1", clock.now(), fill_pct=95.0)
        streamed = json.loads(ws.recv(10))
    assert streamed["event"]["suppressed_by"] == f"maintenance:{window['id']}"
    up(mosquitto, "water_gauge", "WG-1", clock.now(), water_level_cm=25.0)  # not covered: ticketed
    wait_for_kinds(gw, "bin_full", "water_high")
    [full] = events(gw, kind="bin_full")
    assert full["suppressed_by"] == f"maintenance:{window['id']}" and full["id"] == streamed["event"]["id"]
    assert events(gw, kind="water_high")[0]["suppressed_by"] is None
    wait_until(lambda: categories(gw, "device:WG-1") == ["water_high"], 10)
    assert categories(gw, "device:BIN-1") == []
    assert gw.flush(10)
    with sqlite3.connect(gw.cfg.storage.timeseries_db) as db:
        fills = db.execute(
            "SELECT json_extract(fields, '$.fill_pct') FROM points WHERE measurement = 'telemetry' "
            "AND json_extract(tags, '$.device_id') = 'BIN-1'"
        ).fetchall()
    assert fills == [(95.0,)]
    up(mosquitto, "bin", "BIN-1", clock.now() + 1, fill_pct=10.0)  # emptied: cleared, still muted
    wait_until(lambda: events(gw, kind="bin_full")[0]["state"] == "cleared", 10)
    assert events(gw, kind="bin_full")[0]["suppressed_by"] == f"maintenance:{window['id']}"

    # ended early: the audit trail says who and when; the next alarm opens a ticket
    clock.advance(600)
    assert client.delete(f"/api/v1/maintenance-windows/{window['id']}").status_code == 403
    r = client.delete(f"/api/v1/maintenance-windows/{window['id']}", headers=token("cc"))
    assert r.status_code == 200, r.text
    ended = r.json()
    assert ended["state"] == "ended" and ended["ended_by"] == "cc"
    assert [(a["action"], a["by"]) for a in ended["audit"]] == [("created", "cc"), ("ended", "cc")]
    assert ended["audit"][1]["at"] == utc(clock.now()).isoformat().replace("+00:00", "Z")
    again = client.delete(f"/api/v1/maintenance-windows/{window['id']}", headers=token("cc"))
    assert again.status_code == 409 and "already over (ended)" in again.json()["detail"]
    assert client.delete("/api/v1/maintenance-windows/nope", headers=token("cc")).status_code == 404
    [listed] = client.get("/api/v1/maintenance-windows", params={"state": "ended"}).json()
    assert listed["audit"] == ended["audit"]
    assert not {d["id"]: d for d in client.get("/api/v1/devices").json()}["BIN-1"]["in_maintenance"]
    up(mosquitto, "bin", "BIN-1", clock.now(), fill_pct=96.0)
    wait_until(lambda: categories(gw, "device:BIN-1") == ["bin_full"], 10)


def test_a_weekly_window_from_the_file_and_its_expiry(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # Tuesday 2026-12-01 23:30 Shanghai (15:30 UTC): inside `mon,tue 23:00-01:00`
    clock = FakeClock(utc(0).replace(year=2026, month=12, day=1, hour=15, minute=30).timestamp())
    window = {"id": "night-cleaning", "reason": "street cleaning", "devices": ["BIN-1"]}
    window |= {"weekdays": ["mon", "tue"], "start": "23:00", "end": "01:00"}
    gw = make_gateway(tmp_path, mosquitto, clock, hygiene={"recovery_s": 0, "maintenance_windows": [window]})
    try:
        [listed] = api(gw).get("/api/v1/maintenance-windows").json()
        assert (listed["origin"], listed["state"], listed["created_by"]) == ("config", "open", "config")
        r = api(gw).delete("/api/v1/maintenance-windows/night-cleaning", headers=token("cc"))
        assert r.status_code == 409 and "defined in gateway.yaml" in r.json()["detail"]
        up(mosquitto, "bin", "BIN-1", clock.now(), fill_pct=90.0)
        wait_for_kinds(gw, "bin_full")
        assert events(gw, kind="bin_full")[0]["suppressed_by"] == "maintenance:night-cleaning"
        # Wednesday 01:00 Shanghai: the window closes; the bin still full becomes live and is ticketed
        for step in range(1, 19):  # reporting every 5 minutes, so that it never goes offline
            clock.advance(300)
            up(mosquitto, "bin", "BIN-1", clock.now(), fill_pct=90.0)
            wait_until(lambda n=step: gw.metrics.readings >= n + 1, 10)
            if step < 18:
                assert categories(gw, "device:BIN-1") == []
        wait_until(lambda: categories(gw, "device:BIN-1") == ["bin_full"], 10)
        assert events(gw, kind="bin_full")[0]["suppressed_by"] is None
        wait_until(lambda: categories(gw, "device:BIN-1") == ["bin_full"], 10)
        assert events(gw, kind="bin_full")[0]["suppressed_by"] is None
        assert api(gw).get("/api/v1/maintenance-windows").json()[0]["state"] == "idle"
    finally:
        gw.stop()


def test_causes_survive_a_restart(mosquitto: Mosquitto, tmp_path: Path, clock: FakeClock) -> None:
    gw = make_gateway(tmp_path, mosquitto, clock)
    try:
        pub(mosquitto, "gridgate/edge/EB-1/status", "offline")
        wait_until(lambda: events(gw, kind="device_offline"), 10)
    finally:
        gw.stop()
    # a new gateway process: the edge box is still offline in the event store, so it still mutes
    gw = make_gateway(tmp_path, mosquitto, clock)
    try:
        pub(mosquitto, "gridgate/devices/manhole/MH-E1/status", "offline")
        wait_until(lambda: len(events(gw, kind="device_offline")) == 2, 10)
        by_source = {e["source"]: e for e in events(gw, kind="device_offline")}
        assert by_source["device:MH-E1"]["suppressed_by"] == by_source["edge:EB-1"]["id"]
        assert categories(gw, "device:MH-E1") == []
    finally:
        gw.stop()


def test_windows_and_their_audit_in_sqlite_and_postgresql(ticket_db_url: str) -> None:
    spec = WindowSpec(reason="仓库维修", grids=["G1"], weekdays=["mon", "sun"], start="22:00", end="06:00")
    first = MaintenanceWindows(ticket_db_url, [], ZoneInfo("Asia/Shanghai"))
    made = first.create(spec, "c" * 300, T0)
    assert made.created_by == "c" * 256
    second = MaintenanceWindows(ticket_db_url, [], ZoneInfo("Asia/Shanghai"))
    ended = second.end(made.id, "cc", T0 + 60)
    assert [(a.action, a.by) for a in ended.audit] == [("created", "c" * 256), ("ended", "cc")]
    first.refresh()
    [w] = first.list(T0 + 120)
    assert (w.state, w.reason, w.weekdays) == ("ended", "仓库维修", ["mon", "sun"])
    assert first.open_for(Target("BIN-1", "bin", "G1", None), T0 + 120) is None
    first.close()
    second.close()
