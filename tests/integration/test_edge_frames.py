"""What the detector sees, end to end: the edge worker's annotated live frame over a real Mosquitto
into the gateway's /api/v1/cameras/{id}/frame, and the model version and per-label counts in the
edge_stats the gateway writes to InfluxDB."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from detectors.clip import DEMO_LOCATION, DEMO_ZONES, write_clip
from detectors.model import DEFAULT_WEIGHTS
from edge.config import load_edge_config
from edge.scheduler import NullDetector, load_models
from edge.worker import EdgeWorker
from tests.integration.spine_helpers import gateway_config, start_gateway
from tests.servers import Collector, InfluxDB1, Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration

TOKEN = "viewer-token-0123456789abcdef"
T0 = 1_790_000_000.0


def test_live_frame_and_model_version_reach_the_gateway(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    clip = tmp_path / "street.mp4"
    write_clip(clip, duration_s=3, width=640, height=360)
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "v1", "url": influxdb1.url, "database": influx_db},
        auth={"tokens": [{"name": "viewer", "token": TOKEN, "role": "read_only"}]},
    )
    edge_cfg = load_edge_config(
        None,
        edge_id="box-9",
        data_dir=str(tmp_path / "edge"),
        broker={"host": mosquitto.host, "port": mosquitto.port},
        publisher={"snapshot_every_s": 0.2, "stats_interval_s": 600},
        model={"path": str(DEFAULT_WEIGHTS), "backend": "pytorch"},
        cameras=[
            {
                "id": "cam-3",
                "url": str(clip),
                "location": DEMO_LOCATION,
                "motion": {"enabled": False},
                "capture": {"decode_fps": 5, "realtime": False, "start_time": T0},
                "zones": DEMO_ZONES,
            }
        ],
    )
    api = httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"})
    with Collector.on(mosquitto, ["gridgate/dead-letter"]) as dead:
        gw = start_gateway(cfg)
        worker = EdgeWorker(edge_cfg, load_models(edge_cfg)).start()
        try:
            wait_until(worker.publisher.connected.is_set, 10, "the edge box connected")
            worker.run_in_thread()
            wait_until(lambda: worker.cameras[0].capture.ended, 60, "the clip played to its end")
            stats = worker.publish_stats()
            got = wait_until(
                lambda: (r := api.get(f"{gw.api_url}/api/v1/cameras/cam-3/frame")).status_code == 200 and r,
                10,
                "the camera's frame served by the gateway",
            )
            assert got.headers["content-type"] == "image/jpeg" and got.headers["x-edge-id"] == "box-9"
            picture = cv2.imdecode(np.frombuffer(got.content, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape == (360, 640, 3)
            assert picture[3:12, 6:80].mean() < 60  # the caption's dark band over the light sky: drawn

            missing = api.get(f"{gw.api_url}/api/v1/cameras/cam-404/frame")
            assert missing.status_code == 404 and "snapshot_every_s" in missing.json()["detail"]
            assert httpx.get(f"{gw.api_url}/api/v1/cameras/cam-3/frame").status_code == 401
            pub(mosquitto, "gridgate/edge/box-9/frames/cam-3", b"not a picture")
            dead.wait_for(lambda ms: len(ms) >= 1, 10)
            assert dead.messages[0].json()["reason"] == "bad_payload"
            kept = api.get(f"{gw.api_url}/api/v1/cameras/cam-3/frame")
            assert kept.status_code == 200 and kept.content.startswith(b"\xff\xd8\xff")  # not replaced

            sha = hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()[:12]
            assert stats.models == {"street": f"street.pt@{sha}"}
            counted = stats.cameras[0].detections
            assert counted.get("bin", 0) >= 1 and counted == stats.cameras[0].detections_period
            assert gw.flush(10)
            rows = influxdb1.rows("SELECT * FROM edge_stats GROUP BY *", influx_db)
            assert [r["models_street"] for r in rows if r.get("models_street")] == [f"street.pt@{sha}"]
            cam = next(r for r in rows if r.get("camera_id") == "cam-3")
            assert cam["detections_bin"] == counted["bin"]
        finally:
            worker.stop()
            gw.stop()


def test_demo_model_on_a_live_camera_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, duration_s=0.2, width=320, height=180)
    cameras = [
        {"id": "live", "url": "rtsp://127.0.0.1:9/none", "location": DEMO_LOCATION},
        {"id": "file", "url": str(clip), "location": DEMO_LOCATION},
    ]
    cfg = load_edge_config(None, data_dir=str(tmp_path / "edge"), cameras=cameras)
    worker = EdgeWorker(cfg, NullDetector())
    with caplog.at_level(logging.WARNING, logger="gridgate.edge.worker"):
        worker.start(publisher=False)
    worker.stop()
    warned = [r.getMessage() for r in caplog.records if "demo_model_on_live_camera" in r.getMessage()]
    assert len(warned) == 1 and "camera=live" in warned[0] and "synthetic" in warned[0]
