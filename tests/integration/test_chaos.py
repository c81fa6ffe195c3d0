"""Crash safety, attacked: SIGKILL the whole gateway (workers included) under 1,000 messages/s.

The gateway runs as `gridgate gateway` in its own process group against real Mosquitto (persistent
session, queue limits raised) and real InfluxDB 1.x. A publisher sends QoS 1 readings, each with
its own timestamp, at a steady rate; the gateway is killed mid-run and started again while the
publisher goes on. Every message the broker accepted must end up as exactly one point in
InfluxDB; no alarm may be raised twice (every active alert of a device carries the same id); no
problem may get two tickets. A separate steady run with workers checks that healthy devices are
never declared offline.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from tests.integration.spine_helpers import GRID
from tests.servers import Collector, InfluxDB1, Mosquitto, _http, _Server, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRIDGATE = str(Path(sys.executable).parent / "gridgate")
DEVICES = 40
FLOODED = range(0, 8)  # over the water_high threshold from the first reading
RISING = range(8, 14)  # cross it after the crash
INTERVAL_S = 2.0


def write_setup(tmp: Path, broker: Mosquitto, influx: InfluxDB1, db: str, workers: int) -> tuple[Path, int]:
    devices = [
        {
            "id": f"WG-{i:03d}",
            "type": "water_gauge",
            "lat": 30.21 + i * 0.001,
            "lon": 120.15,
            "reporting_interval_s": INTERVAL_S,
        }
        for i in range(DEVICES)
    ]
    (tmp / "devices.yaml").write_text(yaml.safe_dump({"devices": devices}))
    (tmp / "grids.geojson").write_text(json.dumps(GRID))
    api_port = free_port()
    cfg = {
        "broker": {"host": "127.0.0.1", "port": broker.port, "client_id": f"chaos-{workers}"},
        "influx": {"api": "v1", "url": influx.url, "database": db, "flush_interval_s": 0.25},
        "storage": {"data_dir": str(tmp / "data")},
        "api": {"host": "127.0.0.1", "port": api_port},
        "ingest": {"workers": workers},
        "devices_file": str(tmp / "devices.yaml"),
        "grids_file": str(tmp / "grids.geojson"),
        "offline_check_s": 0.5,
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, api_port


class GatewayProcess(_Server):
    """`gridgate gateway -c FILE` in its own process group; ready once /healthz says MQTT is up."""

    name = "gateway"
    binary = GRIDGATE
    start_timeout = 60.0

    def __init__(self, base_dir: Path, config: Path, api_port: int) -> None:
        super().__init__(base_dir, api_port)
        self.config = config

    def argv(self) -> list[str]:
        return [GRIDGATE, "gateway", "-c", str(self.config)]

    def ready(self) -> bool:
        status, body = _http("GET", f"http://127.0.0.1:{self.port}/healthz", timeout=2)
        return status == 200 and json.loads(body)["mqtt_connected"]

    def crash(self, whole_group: bool) -> None:
        """SIGKILL the gateway: with its worker processes at once (nothing flushed anywhere), or alone
        (its workers are orphaned: they must notice, write what they hold, and exit quietly)."""
        proc, self.proc = self.proc, None
        assert proc is not None and proc.poll() is None, "the gateway died before it was killed"
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not _group_alive(proc.pid), 30, "the orphaned workers to exit")

    def get(self, path: str) -> Any:
        status, body = _http("GET", f"http://127.0.0.1:{self.port}{path}")
        assert status == 200, (path, status, body[:300])
        return json.loads(body)


class Publisher(threading.Thread):
    """QoS 1 readings at a steady rate, round robin over the devices; counts what the broker acked."""

    def __init__(
        self, broker: Mosquitto, rate: float, seconds: float, level: Any, devices: int = DEVICES
    ) -> None:
        super().__init__(daemon=True)
        self.rate, self.seconds, self.level, self.devices = rate, seconds, level, devices
        self.acked = 0
        self.sent: dict[str, list[int]] = defaultdict(list)  # device -> timestamps (ms) of its readings
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chaos-publisher")
        self.client.max_inflight_messages_set(1000)
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.elapsed = 0.0

    def _on_publish(self, *_args: Any) -> None:
        self.acked += 1

    def run(self) -> None:
        t0 = time.monotonic()
        n = 0
        last_ms: dict[str, int] = {}
        while (elapsed := time.monotonic() - t0) < self.seconds:
            due = int(elapsed * self.rate)
            while n < due:
                i = n % self.devices
                device = f"WG-{i:03d}"
                ms = max(int(time.time() * 1000), last_ms.get(device, 0) + 1)
                last_ms[device] = ms
                payload = {"ts": ms / 1000, "water_level_cm": self.level(i, elapsed)}
                info = self.client.publish(
                    f"gridgate/devices/water_gauge/{device}/up", json.dumps(payload), qos=1
                )
                assert info.rc == mqtt.MQTT_ERR_SUCCESS
                self.sent[device].append(ms)
                n += 1
            time.sleep(0.002)
        self.elapsed = time.monotonic() - t0

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())

    def close(self) -> None:
        wait_until(lambda: self.acked >= self.total, 30, "PUBACKs for every published reading")
        self.client.loop_stop()
        self.client.disconnect()


def stored_points(influx: InfluxDB1, db: str) -> int:
    rows = influx.rows("SELECT COUNT(water_level_cm) FROM telemetry", db)
    return int(rows[0]["count"]) if rows else 0


def level(i: int, elapsed: float) -> float:
    if i in FLOODED:
        return 22.0
    if i in RISING and elapsed > 5.0:
        return 18.0
    return 3.0 + (i % 5) / 10


@pytest.mark.parametrize(("workers", "whole_group"), [(0, True), (2, True), (2, False)])
def test_sigkill_under_load_loses_nothing_and_duplicates_nothing(
    mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    influx_db: str,
    tmp_path: Path,
    workers: int,
    whole_group: bool,
) -> None:
    config, api_port = write_setup(tmp_path, mosquitto, influxdb1, influx_db, workers)
    gateway = GatewayProcess(tmp_path, config, api_port)
    with Collector.on(mosquitto, ["gridgate/alerts/#", "gridgate/tickets/#"]) as col:
        gateway.start()
        try:
            pub = Publisher(mosquitto, rate=1000, seconds=9.0, level=level)
            pub.start()
            # crash once the flooded gauges' alarms are out and the gateway is busy
            col.wait_for(lambda ms: len({m.json()["source"] for m in ms if "/alerts/" in m.topic}) >= 8, 15)
            wait_until(lambda: pub.total >= 3000, 10, "3 s of load")
            gateway.crash(whole_group)
            killed_at = pub.total
            time.sleep(0.5)  # the publisher goes on: the broker queues for the gateway's session
            gateway.start()
            pub.join()
            pub.close()
            total = pub.total
            assert total >= 7000 and killed_at < total - 2000
            wait_until(lambda: stored_points(influxdb1, influx_db) >= total, 90, f"{total} points stored")
            time.sleep(1.0)  # nothing more may arrive: a duplicate would be a second point
            assert stored_points(influxdb1, influx_db) == total
            # each reading exactly once, at its own time (to the millisecond, no float noise)
            rows = influxdb1.rows(
                "SELECT water_level_cm FROM telemetry WHERE device_id = 'WG-000'", influx_db
            )
            assert [int(r["time"]) for r in rows] == [ms * 1_000_000 for ms in pub.sent["WG-000"]]

            # alarms: one id per device from raise to the end, raised for the flooded and the rising
            col.wait_for(
                lambda ms: (
                    {m.json()["source"] for m in ms if "/alerts/" in m.topic}
                    >= {f"device:WG-{i:03d}" for i in [*FLOODED, *RISING]}
                ),
                20,
            )
            ids: dict[str, set[str]] = defaultdict(set)
            for m in col.on_topic("gridgate/alerts/+/water_high"):
                ev = m.json()
                ids[ev["source"]].add(ev["id"])
            assert {s for s, v in ids.items() if len(v) > 1} == set(), ids
            assert set(ids) == {f"device:WG-{i:03d}" for i in [*FLOODED, *RISING]}

            # tickets: one per flooded or rising gauge, never two
            alarmed = len(FLOODED) + len(RISING)
            tickets = wait_until(
                lambda: len(t := gateway.get("/api/v1/tickets?limit=100")) >= alarmed and t,
                20,
                "a ticket for every alarm",
            )
            time.sleep(1.0)
            tickets = gateway.get("/api/v1/tickets?limit=100")
            keys = sorted(t["dedup_key"] for t in tickets)
            assert keys == sorted(f"water_high:device:WG-{i:03d}" for i in [*FLOODED, *RISING])
            health = gateway.get("/healthz")
            metrics = _http("GET", f"http://127.0.0.1:{api_port}/metrics")[1].decode()
            print(
                f"\nchaos workers={workers} kill={'group' if whole_group else 'main'}: "
                f"published={total} killed_after={killed_at} "
                f"stored={stored_points(influxdb1, influx_db)} lost=0 duplicates=0 "
                f"replayed={_metric(metrics, 'gridgate_journal_replayed')} "
                f"redeliveries_skipped={_metric(metrics, 'gridgate_redeliveries_skipped')} "
                f"health={health['status']}"
            )
            if whole_group:  # the crash really lost memory state
                assert _metric(metrics, "gridgate_journal_replayed") > 0
        finally:
            if gateway.running:
                gateway.stop(timeout=30)
    assert "Traceback" not in gateway.log_path.read_text(), gateway.log_tail(4000)


def test_workers_never_declare_healthy_devices_offline(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    """Workers own a share of the devices each: silence is judged only where a device's readings go."""
    config, api_port = write_setup(tmp_path, mosquitto, influxdb1, influx_db, workers=2)
    gateway = GatewayProcess(tmp_path, config, api_port)
    with Collector.on(mosquitto, ["gridgate/maintenance/#"]) as col, gateway:
        # every device but the last one reports twice per interval for four intervals
        pub = Publisher(
            mosquitto,
            rate=(DEVICES - 1) / (INTERVAL_S / 2),
            seconds=4 * INTERVAL_S + 3,
            level=level,
            devices=DEVICES - 1,
        )
        pub.start()
        pub.join()
        pub.close()
        offline = col.wait_for(lambda ms: ms, 10)  # the silent device, WG-039, and only it
        time.sleep(1.0)
        sources = {m.json()["source"] for m in col.messages if m.json()["kind"] == "device_offline"}
        assert sources == {f"device:WG-{DEVICES - 1:03d}"}, offline


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
