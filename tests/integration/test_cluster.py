"""Ingest replicas and the lead dispatcher on one Mosquitto and one PostgreSQL (gateway/cluster/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.sync.client import connect

from gateway.cluster.dispatch import lead
from gateway.cluster.ingest import IngestReplica
from gateway.service import Gateway
from tests.integration.cluster_helpers import (
    ROUTING,
    Publisher,
    Workload,
    audit_counts,
    cluster_config,
    event_rows,
    lock_holders,
    pg,
    send_in_background,
    ticket_rows,
    write_config,
)
from tests.integration.test_tickets_webhook import Receiver
from tests.servers import Collector, InfluxDB1, Mosquitto, PostgreSQL, free_port, wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CT_SECRET = "ctwing-push-secret-0123456789"


def telemetry_count(influxdb1: InfluxDB1, db: str) -> int:
    rows = influxdb1.rows("SELECT count(tilt_deg) FROM telemetry", db)
    return int(rows[0]["count"]) if rows else 0


def test_replicas_share_the_devices_and_hand_them_over_without_loss_or_duplicate(
    tmp_path: Path, mosquitto: Mosquitto, postgresql: PostgreSQL, influxdb1: InfluxDB1, influx_db: str
) -> None:
    """Two replicas split the buckets; a third joins mid-run, one leaves: every reading stored once,
    every alarm raised once (one event id per alarm), one ticket per device."""
    url = postgresql.create_database("cluster_inproc")
    influx: dict[str, Any] = {"api": "v1", "url": influxdb1.url, "database": influx_db}
    work = Workload(devices=60, readings_per_device=30)
    cfg = cluster_config(tmp_path, mosquitto, url, influx, work.devices)
    stop = threading.Event()
    leading: list[Gateway] = []
    dispatcher = threading.Thread(target=lead, args=(cfg, stop, "info", leading.append), daemon=True)
    dispatcher.start()
    port = free_port()
    a = IngestReplica(
        cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"metrics_port": port})})
    )
    a.start()
    b = IngestReplica(cfg).start()
    replicas = [a, b]
    try:
        wait_until(lambda: len(a.owned() | b.owned()) == 9 and a.owned() and b.owned(), timeout=20)
        pub = Publisher(mosquitto)
        messages = work.messages()
        sender = send_in_background(pub, messages, rate=600)
        wait_until(lambda: a.checkpoints + b.checkpoints > 10, timeout=20)
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert f"gridgate_cluster_buckets_owned {float(len(a.owned()))}" in scrape
        assert "gridgate_messages_in" in scrape
        c = IngestReplica(cfg).start()  # joins: takes its share from the others
        replicas.append(c)
        wait_until(lambda: len(c.owned()) >= 2, timeout=20)
        b.stop()  # leaves: its buckets go to the others, saved and acknowledged
        replicas.remove(b)
        sender.join(timeout=60)
        pub.close()
        wait_until(lambda: telemetry_count(influxdb1, influx_db) >= work.total, timeout=30)

        def alarms_done() -> bool:
            return len([r for r in event_rows(url) if r[1] == "manhole_tilt"]) >= work.devices - 1 + (
                work.flapper_raises
            )

        wait_until(alarms_done, timeout=30)

        # the lead dispatcher's API shows the devices as the replicas saved them
        def shown() -> dict[str, Any]:
            devices = httpx.get(f"{leading[0].api_url}/api/v1/devices?limit=500").json()
            return {d["id"]: d for d in devices}

        wait_until(lambda: shown()["MH-0005"]["active_alarms"], timeout=10)
        assert shown()["MH-0005"]["last_seen"] is not None
    finally:
        for r in replicas:
            r.stop()
        stop.set()
        dispatcher.join(timeout=30)
    assert telemetry_count(influxdb1, influx_db) == work.total
    tilt = [r for r in event_rows(url) if r[1] == "manhole_tilt"]
    per_device = Counter(source for _, _, source, _ in tilt)
    assert per_device.pop(f"device:{work.flapper}") == work.flapper_raises
    assert set(per_device.values()) == {1}, per_device
    assert len(per_device) == work.devices - 1
    tickets = ticket_rows(url)
    keys = Counter(key for _, key, _ in tickets)
    assert len(keys) == work.devices and max(keys.values()) == 1, keys.most_common(3)


class Processes:
    """`python -m gridgate gateway --role ...` children, each logging to its own file."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.tmp = tmp
        self.config = config
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, role: str) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "gridgate", "gateway", "-c", str(self.config), "--role", role],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.tmp,
        )

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
def test_three_replicas_two_dispatchers_survive_sigkill_mid_storm(
    tmp_path: Path, mosquitto: Mosquitto, postgresql: PostgreSQL, influxdb1: InfluxDB1, influx_db: str
) -> None:
    """An alarm storm from 120 devices and a flapping one, through three ingest replicas and two
    dispatchers as separate processes; one replica and the leading dispatcher are killed with SIGKILL
    mid-run (and not restarted). Afterwards: every reading stored once, one event id per alarm, one
    ticket per dedup key, each SLA escalation once, each webhook delivered (a second copy only of a
    POST in flight at the kill)."""
    url = postgresql.create_database("cluster_sigkill")
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump(ROUTING))
    work = Workload(devices=120, readings_per_device=40)
    with Receiver() as hook:
        hook.failing = False
        cfg = cluster_config(
            tmp_path,
            mosquitto,
            url,
            {"api": "v1", "url": influxdb1.url, "database": influx_db},
            work.devices,
            tickets={
                "routing_file": str(routing),
                "rate_limit_per_grid_per_min": 100_000,
                "webhooks": [{"name": "platform", "url": hook.url, "backoff_base_s": 0.2}],
            },
        )
        procs = Processes(tmp_path, write_config(tmp_path / "gateway.yaml", cfg))
        alerts = Collector.on(mosquitto, "gridgate/alerts/#").start()
        try:
            for i in range(3):
                procs.start(f"ingest{i}", "ingest")
            procs.start("dispatch0", "dispatch")
            procs.start("dispatch1", "dispatch")
            wait_until(lambda: len(lock_holders(url, "gridgate", "bucket")) == 9, timeout=60)
            wait_until(lambda: lock_holders(url, "gridgate", "leader") == {0}, timeout=60)
            wait_until(lambda: len(lock_holders(url, "gridgate", "member")) == 3, timeout=60)
            leader = next(n for n in ("dispatch0", "dispatch1") if "dispatcher_leading" in procs.log(n))
            pub = Publisher(mosquitto)
            sender = send_in_background(pub, work.messages(), rate=400)
            # mid-storm, with tickets open and escalating on both sides of the kill
            wait_until(lambda: sum(audit_counts(url, "escalate").values()) >= 20, timeout=60)
            procs.kill("ingest1")
            procs.kill(leader)
            sender.join(timeout=120)
            pub.close()
            wait_until(lambda: telemetry_count(influxdb1, influx_db) >= work.total, timeout=90)
            wait_until(lambda: len(ticket_rows(url)) >= work.devices, timeout=60)
            # each ticket breaches accept and on-site (2, 4 s): worker -> grid head -> leader
            wait_until(lambda: sum(audit_counts(url, "escalate").values()) >= 2 * work.devices, timeout=60)
            time.sleep(2)  # anything extra that was going to come
        finally:
            procs.stop_all()
            alerts.stop()
        survivor = "dispatch1" if leader == "dispatch0" else "dispatch0"
        assert "dispatcher_leading" in procs.log(survivor)
    assert telemetry_count(influxdb1, influx_db) == work.total
    tilt = [r for r in event_rows(url) if r[1] == "manhole_tilt"]
    per_device = Counter(source for _, _, source, _ in tilt)
    assert per_device.pop(f"device:{work.flapper}") == work.flapper_raises
    assert set(per_device.values()) == {1} and len(per_device) == work.devices - 1, per_device
    # on the alert topics: the same ids (a change the dead leader published but had not saved may be
    # published again by the next, with its id: a consumer keeps one)
    raised = {
        m.json()["id"]
        for m in alerts.on_topic("gridgate/alerts/+/manhole_tilt")
        if m.json()["state"] == "active"
    }
    assert raised == {event_id for event_id, *_ in tilt}
    tickets = ticket_rows(url)
    keys = Counter(key for _, key, _ in tickets)
    assert len(keys) == work.devices and max(keys.values()) == 1, keys.most_common(3)
    escalations = audit_counts(url, "escalate")
    assert len(escalations) == 2 * work.devices and max(escalations.values()) == 1, escalations.most_common(3)
    # webhooks: every change in the shared outbox delivered; HTTP has no exactly-once, so a POST in
    # flight at the kill may come again, with its Idempotency-Key (the platform keeps one copy)
    with pg(url) as conn:
        rows = conn.execute("SELECT change_id, status FROM webhook_outbox").fetchall()
    assert {status for _, status in rows} == {"delivered"}
    assert set(hook.accepted) == {change for change, _ in rows}
    again = [key for key, a in hook.accepted.items() if a["copies"] > 1]
    assert len(again) <= 3, again


def test_an_api_replica_serves_and_acts_on_what_the_database_holds(
    tmp_path: Path, mosquitto: Mosquitto, postgresql: PostgreSQL, influxdb1: InfluxDB1, influx_db: str
) -> None:
    """`--role api` beside the lead dispatcher: it lists the leader's tickets, a person's action on
    either is seen by the other at once, and its WebSocket clients get the alerts and ticket changes."""
    url = postgresql.create_database("cluster_api")
    work = Workload(devices=8, readings_per_device=3)
    cfg = cluster_config(
        tmp_path,
        mosquitto,
        url,
        {"api": "v1", "url": influxdb1.url, "database": influx_db},
        work.devices,
        platforms={"ctwing": {"enabled": True, "secret": CT_SECRET}},
    )
    stop = threading.Event()
    leading: list[Gateway] = []
    dispatcher = threading.Thread(target=lead, args=(cfg, stop, "info", leading.append), daemon=True)
    dispatcher.start()
    replica = IngestReplica(cfg).start()
    api = Gateway(cfg, role="api").start()
    try:
        wait_until(lambda: leading and len(replica.owned()) == 9, timeout=20)
        leader = leading[0].api_url
        ws = connect((api.api_url or "").replace("http://", "ws://") + "/api/v1/stream")
        assert json.loads(ws.recv(5))["type"] == "hello"
        pub = Publisher(mosquitto)
        pub.send(work.messages())
        wait_until(lambda: len(ticket_rows(url)) == work.devices, timeout=20)
        listed = httpx.get(f"{api.api_url}/api/v1/tickets").json()
        assert len(listed) == work.devices
        first, second = sorted(t["id"] for t in listed)[:2]
        # a person accepts on the leader: the API replica shows it and streams the change
        assert httpx.post(f"{leader}/api/v1/tickets/{first}/accept", json={}).status_code == 200
        wait_until(
            lambda: (
                httpx.get(f"{api.api_url}/api/v1/tickets/{first}").json()["ticket"]["status"] == "accepted"
            ),
            10,
        )
        # and on the API replica: the leader's desk sees it (and will not escalate an accepted ticket)
        assert httpx.post(f"{api.api_url}/api/v1/tickets/{second}/accept", json={}).status_code == 200
        wait_until(
            lambda: httpx.get(f"{leader}/api/v1/tickets/{second}").json()["ticket"]["status"] == "accepted",
            10,
        )
        # the alarm clearing reaches the API replica's WebSocket clients, as both accepts did
        again = "gridgate/devices/manhole/MH-0003/up"
        pub.send([(again, json.dumps({"ts": work.t0 + 100, "tilt_deg": 1.0}).encode())])

        def cleared(m: dict[str, Any]) -> bool:
            return (
                m["type"] == "alert"
                and m["event"]["source"] == "device:MH-0003"
                and m["event"]["state"] == "cleared"
            )

        def accepted(m: dict[str, Any], ticket_id: str) -> bool:
            return (
                m["type"] == "ticket"
                and m["ticket"]["id"] == ticket_id
                and m["ticket"]["status"] == "accepted"
            )

        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
            any(map(cleared, seen)) and all(any(accepted(m, t) for m in seen) for t in (first, second))
        ):
            seen.append(json.loads(ws.recv(max(0.1, deadline - time.monotonic()))))
        assert any(map(cleared, seen))
        assert all(any(accepted(m, t) for m in seen) for t in (first, second))
        # a CTWing push to the API replica reaches the replica that owns the device, through the broker
        push = {
            "timestamp": (work.t0 + 200) * 1000,
            "messageType": "dataReport",
            "deviceId": "CT0005",
            "payload": {"tilt_deg": 3.0, "battery_pct": 77},
        }
        answer = httpx.post(f"{api.api_url}/ingest/ctwing/{CT_SECRET}", json=push)
        assert answer.status_code == 200 and answer.json()["accepted"] == 1
        q = "SELECT battery_pct FROM telemetry WHERE device_id = 'MH-0005' AND battery_pct = 77"
        wait_until(lambda: influxdb1.rows(q, influx_db), timeout=10)
        ws.close()
        pub.close()
    finally:
        api.stop()
        replica.stop()
        stop.set()
        dispatcher.join(timeout=30)
