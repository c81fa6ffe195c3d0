"""Ingest replicas and the lead dispatcher on one Mosquitto and one PostgreSQL (gateway/cluster/)."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.cluster.dispatch import lead
from gateway.cluster.ingest import IngestReplica
from tests.integration.cluster_helpers import (
    Publisher,
    Workload,
    cluster_config,
    event_rows,
    send_in_background,
    ticket_rows,
)
from tests.servers import InfluxDB1, Mosquitto, PostgreSQL, wait_until

pytestmark = pytest.mark.integration


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
    dispatcher = threading.Thread(target=lead, args=(cfg, stop), daemon=True)
    dispatcher.start()
    a = IngestReplica(cfg).start()
    b = IngestReplica(cfg).start()
    replicas = [a, b]
    try:
        wait_until(lambda: len(a.owned() | b.owned()) == 9 and a.owned() and b.owned(), timeout=20)
        pub = Publisher(mosquitto)
        messages = work.messages()
        sender = send_in_background(pub, messages, rate=600)
        wait_until(lambda: a.checkpoints + b.checkpoints > 10, timeout=20)
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
    assert keys and max(keys.values()) == 1, keys
