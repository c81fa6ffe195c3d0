"""A street of manholes for cluster tests, a QoS 1 publisher and what the shared databases hold."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gridgate.config import GatewayConfig
from tests.integration.spine_helpers import GRID
from tests.servers import Mosquitto


def street(n: int) -> dict[str, Any]:
    """n manholes 200 m apart inside grid G1 (farther than the ticket dedup radius)."""
    return {
        "devices": [
            {
                "id": f"MH-{i:04d}",
                "type": "manhole",
                "lat": 30.201 + (i // 40) * 0.002,
                "lon": 120.101 + (i % 40) * 0.002,
                "reporting_interval_s": 3600,
                "ctwing_device_id": f"CT{i:04d}",
            }
            for i in range(n)
        ]
    }


def cluster_config(
    tmp: Path, broker: Mosquitto, db_url: str, influx: dict[str, Any], devices: int, **extra: Any
) -> GatewayConfig:
    (tmp / "devices.yaml").write_text(yaml.safe_dump(street(devices)))
    (tmp / "grids.geojson").write_text(json.dumps(GRID))
    tickets = {"database_url": db_url, "tick_s": 0.2, "rate_limit_per_grid_per_min": 100_000}
    tickets.update(extra.pop("tickets", {}))
    return GatewayConfig(
        broker={"host": "127.0.0.1", "port": broker.port, "client_id": "gg"},
        influx={"flush_interval_s": 0.2, **influx},
        storage={"data_dir": tmp / "data"},
        api={"host": "127.0.0.1", "port": 0},
        devices_file=tmp / "devices.yaml",
        grids_file=tmp / "grids.geojson",
        fallback_grid="outside",
        cluster={"database_url": db_url, "buckets": 8, "checkpoint_s": 0.2, "lease_check_s": 0.3},
        tickets=tickets,
        **extra,
    )


@dataclass
class Workload:
    """Each device: a calm reading, then its tilt alarm raised and kept (one alarm, one ticket each);
    the flapping device raises and clears `flaps` times. Every reading carries its own time."""

    devices: int
    readings_per_device: int
    flapper: str = "MH-0000"
    flaps: int = 10
    t0: int = field(default_factory=lambda: int(time.time()) - 3000)

    def messages(self) -> list[tuple[str, bytes]]:
        out = []
        for k in range(self.readings_per_device):
            for i in range(self.devices):
                device = f"MH-{i:04d}"
                if device == self.flapper:
                    tilt = 20.0 if (k // 2) % 2 == 0 and k < 4 * self.flaps else 2.0
                else:
                    tilt = 2.0 if k == 0 else 16.0 + k % 5
                body = {"ts": self.t0 + k, "tilt_deg": tilt, "battery_pct": 90}
                out.append((f"gridgate/devices/manhole/{device}/up", json.dumps(body).encode()))
        return out

    @property
    def flapper_raises(self) -> int:
        return len([k for k in range(min(self.readings_per_device, 4 * self.flaps)) if k % 4 == 0])

    @property
    def total(self) -> int:
        return self.devices * self.readings_per_device


class Publisher:
    """One paho client publishing QoS 1 as fast as the broker acknowledges (its own network thread)."""

    def __init__(self, broker: Mosquitto, client_id: str = "street") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, messages: list[tuple[str, bytes]], rate: float | None = None) -> None:
        infos = []
        start = time.monotonic()
        for i, (topic, payload) in enumerate(messages):
            infos.append(self.client.publish(topic, payload, qos=1))
            if rate:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        for info in infos:
            info.wait_for_publish(60)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def send_in_background(pub: Publisher, messages: list[tuple[str, bytes]], rate: float) -> threading.Thread:
    t = threading.Thread(target=pub.send, args=(messages, rate), daemon=True)
    t.start()
    return t


def pg(url: str) -> psycopg.Connection[Any]:
    from gateway.cluster.leases import conninfo

    return psycopg.connect(conninfo(url), autocommit=True)


def event_rows(url: str) -> list[tuple[str, str, str, str]]:
    """(id, kind, source, state) of every event in the shared event log."""
    with pg(url) as conn:
        return [tuple(r) for r in conn.execute("SELECT id, kind, source, state FROM events").fetchall()]


def ticket_rows(url: str) -> list[tuple[str, str, str]]:
    """(id, dedup_key, status) of every ticket."""
    with pg(url) as conn:
        return [tuple(r) for r in conn.execute("SELECT id, dedup_key, status FROM tickets").fetchall()]


ROUTING = {
    "defaults": {
        "sla": {"accept_s": 2, "on_site_s": 4, "resolve_s": 8},
        "escalation": ["worker", "grid_head", "leader"],
    },
    "fallback_team": "command_centre",
    "fault_team": "maintenance",
    "teams": {"command_centre": {"name": "Command centre"}, "maintenance": {"name": "Maintenance"}},
}


def write_config(path: Path, cfg: GatewayConfig) -> Path:
    """The config as a gateway.yaml for `python -m gridgate gateway -c`."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    return path


def lock_holders(url: str, prefix: str, kind: str) -> set[int]:
    """The keys of one kind of cluster lock held now (gateway/cluster/leases.py)."""
    from gateway.cluster.leases import key_space

    with pg(url) as conn:
        rows = conn.execute(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid = %s::bigint::oid",
            (key_space(prefix, kind),),
        ).fetchall()
    return {int(r[0]) for r in rows}


def audit_counts(url: str, action: str) -> Counter[tuple[str, str]]:
    """(ticket id, level or note) -> how many audit lines of this action."""
    with pg(url) as conn:
        rows = conn.execute(
            "SELECT ticket_id, CAST(detail AS TEXT) FROM ticket_audit WHERE action = %s", (action,)
        ).fetchall()
    return Counter((r[0], r[1]) for r in rows)
