"""Edge boxes into the gateway through a real broker: video events, snapshots, stats, Last Will."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.spine_helpers import gateway_config, start_gateway
from tests.servers import Collector, InfluxDB1, Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9"


def edge_event(phase: str, seq: int, at: datetime, **extra: Any) -> str:
    t0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    doc = {
        "edge_id": "box-1",
        "camera_id": "cam-7",
        "seq": seq,
        "phase": phase,
        "event_id": "01JEDGEPARKING0000000000001",
        "kind": "illegal_parking",
        "zone": "school-gate",
        "location": {"lat": 30.25, "lon": 120.15},
        "severity": "major",
        "confidence": 0.87,
        "started_at": t0.isoformat(),
        "at": at.isoformat(),
        "measurements": {"dwell_s": (at - t0).total_seconds(), "track_id": 12},
        "evidence": [{"name": "stopped.jpg", "taken_at": t0.isoformat(), "bytes": len(JPEG)}],
    }
    return json.dumps(doc | extra)


def test_edge_events_evidence_stats_and_last_will(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    cfg = gateway_config(tmp_path, mosquitto, {"api": "v1", "url": influxdb1.url, "database": influx_db})
    t0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    topics = ["gridgate/alerts/#", "gridgate/maintenance/#", "gridgate/dead-letter"]
    with Collector.on(mosquitto, topics) as col:
        gw = start_gateway(cfg)
        try:
            pub(mosquitto, "gridgate/edge/box-1/evidence/01JEDGEPARKING0000000000001/stopped.jpg", JPEG)
            pub(mosquitto, "gridgate/edge/box-1/events", edge_event("new", 1, t0 + timedelta(seconds=181)))
            pub(
                mosquitto, "gridgate/edge/box-1/events", edge_event("new", 1, t0 + timedelta(seconds=181))
            )  # again
            pub(mosquitto, "gridgate/edge/box-1/events", edge_event("update", 2, t0 + timedelta(seconds=240)))
            end = t0 + timedelta(seconds=600)
            pub(mosquitto, "gridgate/edge/box-1/events", edge_event("end", 3, end, ended_at=end.isoformat()))
            stats = {
                "cameras": [{"camera_id": "cam-7", "fps_in": 15.0, "fps_analysed": 2.0, "queue_depth": 0}]
            }
            pub(mosquitto, "gridgate/edge/box-1/status", json.dumps(stats))
            pub(mosquitto, "gridgate/edge/box-1/status", "offline")
            pub(mosquitto, "gridgate/edge/box-1/status", "online")
            # bad input from an edge box is rejected like a sensor's
            pub(mosquitto, "gridgate/edge/box-1/events", '{"edge_id": "box-1"}')
            pub(mosquitto, "gridgate/edge/box-1/evidence/01JEDGEPARKING0000000000001/x.jpg", b"not a jpeg")
            pub(mosquitto, "gridgate/edge/box-1/whatever", "x")
            col.wait_for(lambda ms: len([m for m in ms if m.topic == "gridgate/dead-letter"]) >= 3, 10)
            parking = [m.json() for m in col.on_topic("gridgate/alerts/+/illegal_parking")]
            assert [(p["state"], p["measurements"]["dwell_s"]) for p in parking] == [
                ("active", 181.0),
                ("active", 240.0),
                ("cleared", 600.0),
            ]
            first = parking[0]
            assert first["source"] == "camera:cam-7" and first["grid_id"] == "G1"
            assert first["id"] == "01JEDGEPARKING0000000000001"
            assert col.on_topic("gridgate/alerts/G1/illegal_parking")
            url = first["evidence"]["snapshots"][0]["url"]
            got = httpx.get(f"{gw.api_url}{url}")
            assert got.status_code == 200 and got.content == JPEG
            assert got.headers["content-type"] == "image/jpeg"
            assert httpx.get(f"{gw.api_url}/api/v1/evidence/box-1/nope/x.jpg").status_code == 404
            faults = [m.json() for m in col.on_topic("gridgate/maintenance/+/faults")]
            assert [(f["source"], f["state"]) for f in faults] == [
                ("edge:box-1", "active"),
                ("edge:box-1", "cleared"),
            ]
            reasons = sorted(m.json()["reason"] for m in col.on_topic("gridgate/dead-letter"))
            assert reasons == ["bad_payload", "unknown_topic", "wrong_type"]
            assert gw.flush(10)
            rows = influxdb1.rows("SELECT * FROM edge_stats GROUP BY *", influx_db)
            assert [(r["edge_id"], r["camera_id"], r["fps_in"], r["fps_analysed"]) for r in rows] == [
                ("box-1", "cam-7", 15.0, 2.0)
            ]
            events = influxdb1.rows(
                "SELECT * FROM events WHERE kind = 'illegal_parking' GROUP BY *", influx_db
            )
            assert sorted(e["state"] for e in events) == ["active", "active", "cleared"]
            stored = wait_until(
                lambda: httpx.get(f"{gw.api_url}/api/v1/events", params={"source": "camera:cam-7"}).json(), 5
            )
            assert stored[0]["state"] == "cleared"
        finally:
            gw.stop()
