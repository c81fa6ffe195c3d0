"""Issue 4's proof: the shipped model on the synthetic demo clip, frame times driving time, through
the edge worker and a real Mosquitto into the gateway, stored as every other event."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from detectors.clip import DEMO_LOCATION, DEMO_ZONES, TIMELINE, write_clip
from detectors.model import DEFAULT_WEIGHTS, Detector
from edge.config import load_edge_config
from edge.worker import EdgeWorker
from tests.integration.spine_helpers import gateway_config, start_gateway
from tests.servers import InfluxDB1, Mosquitto, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_790_000_000.0  # the clip's first frame, as wall time


def test_shipped_model_on_demo_clip_reaches_the_gateway(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    clip = tmp_path / "street.mp4"
    write_clip(clip, width=640, height=360)  # the scenes the model was trained at; zones are relative
    cfg = gateway_config(tmp_path, mosquitto, {"api": "v1", "url": influxdb1.url, "database": influx_db})
    edge_cfg = load_edge_config(
        None,
        edge_id="edge-demo",
        data_dir=str(tmp_path / "edge"),
        broker={"host": mosquitto.host, "port": mosquitto.port},
        model={"path": str(DEFAULT_WEIGHTS), "backend": "pytorch"},
        cameras=[
            {
                "id": "demo-street",
                "url": str(clip),
                "location": DEMO_LOCATION,
                "detect_fps": 2,
                "refresh_s": 5,
                "capture": {"decode_fps": 5, "realtime": False, "start_time": T0},
                "zones": DEMO_ZONES,
            }
        ],
    )
    gw = start_gateway(cfg)
    worker = EdgeWorker(edge_cfg, Detector.from_config(edge_cfg.model)).start()
    worker.run_in_thread()
    try:
        wait_until(lambda: worker.cameras[0].capture.ended, 600, "the clip played to its end")
        wait_until(lambda: worker.queue.depth()[0] == 0, 30, "the edge queue drained")
        assert gw.flush(20)
        events = wait_until(
            lambda: (
                [e for e in gw.store.query_events(source="camera:demo-street") if e.state == "cleared"]
                and gw.store.query_events(source="camera:demo-street")
            ),
            20,
            "the camera's events stored by the gateway",
        )
    finally:
        worker.stop()
    try:
        by_kind: dict[str, list] = {}
        for e in events:
            by_kind.setdefault(e.kind, []).append(e)
        assert set(by_kind) == {"illegal_parking", "ponding", "bin_overflow"}
        assert all(len(v) == 1 for v in by_kind.values()), by_kind  # one each; the passing car raised none
        parking = by_kind["illegal_parking"][0]
        dwell = next(z["dwell_s"] for z in DEMO_ZONES if z["type"] == "no_parking")
        stopped = parking.started_at.timestamp() - T0
        assert TIMELINE.park_arrive[0] <= stopped <= TIMELINE.park_arrive[1] + 5
        assert parking.measurements["dwell_s"] >= dwell
        assert parking.grid_id == "G1"  # located by the zone's position
        for e in events:
            snaps = e.evidence["snapshots"]
            assert snaps, f"{e.kind} has no snapshot"
            got = httpx.get(f"{gw.api_url}{snaps[0]['url']}")
            assert got.status_code == 200 and got.content[:2] == b"\xff\xd8"
        # stored in the time series as every sensor event is
        rows = influxdb1.rows("SELECT * FROM events WHERE source_type = 'camera' GROUP BY *", influx_db)
        assert {r["kind"] for r in rows} == {"illegal_parking", "ponding", "bin_overflow"}
        states = {(r["kind"], r["state"]) for r in rows}
        assert {("illegal_parking", "active"), ("illegal_parking", "cleared")} <= states
        # nothing before the dwell: the first `active` point is at least dwell_s after the car stopped
        first = min(r["time"] for r in rows if r["kind"] == "illegal_parking" and r["state"] == "active")
        assert first / 1e9 - T0 >= stopped + dwell - 1
        print(json.dumps({e.kind: [e.started_at.timestamp() - T0, e.value] for e in events}))
    finally:
        gw.stop()
