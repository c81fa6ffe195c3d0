"""Per-label detection counts and model versions: counted on the edge box, fields on the gateway."""

from __future__ import annotations

from datetime import UTC, datetime

from edge.stats import CameraCounters, CameraStats, EdgeStats
from gateway.edge_ingest import stats_points


def test_counts_since_start_and_per_period() -> None:
    c = CameraCounters()
    c.count(["vehicle", "vehicle", "water"])
    c.new_period()
    c.count(["vehicle"])
    assert c.labels == {"vehicle": 3, "water": 1}
    assert c.labels_period == {"vehicle": 1}


def test_stats_points_carry_counts_and_model_versions() -> None:
    cam = CameraStats(
        camera_id="cam-7", connected=True, fps_in=5.0, fps_analysed=2.0, inference_ms_p50=40.0,
        inference_ms_p95=55.0, latency_ms_p95=80.0, reconnects_1h=0, stalls_1h=0, dropped_frames=0,
        frames_in=50, analysed=20, tracks=2, active_events=0,
        detections={"vehicle": 12, "water": 3}, detections_period={"vehicle": 2},
    )  # fmt: skip
    st = EdgeStats(
        edge_id="box-1", at=datetime(2026, 12, 1, tzinfo=UTC), uptime_s=60.0, queue_depth=0, queue_bytes=0,
        queue_dropped=0, evidence_bytes=0, broker_connected=True,
        models={"coco": "yolo11n.pt@0123456789ab", "street": "street.pt@a0564af6103c+2"}, cameras=[cam],
    )  # fmt: skip
    points = stats_points("box-1", st.model_dump(mode="json"), 1)
    by_camera = {p.tags.get("camera_id", ""): p.fields for p in points}
    assert by_camera["cam-7"]["detections_vehicle"] == 12.0
    assert by_camera["cam-7"]["detections_period_vehicle"] == 2.0
    assert by_camera["cam-7"]["detections_water"] == 3.0
    assert by_camera[""]["models_coco"] == "yolo11n.pt@0123456789ab"
    assert by_camera[""]["models_street"] == "street.pt@a0564af6103c+2"
