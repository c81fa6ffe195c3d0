"""The evidence pack of a video event, end to end: a car parks in a no-parking zone of a rendered
clip; the edge worker raises one illegal_parking event whose folder holds the three pictures, a
`clip.mp4` of pre- and post-roll around the raise (read back by ffprobe) and a `manifest.json`
whose hashes hold on the edge box and on the gateway's copies received over a real Mosquitto."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from edge.worker import EdgeWorker
from gateway.service import Gateway
from gridgate.manifest import Manifest, verify_manifest
from gridgate.models import EdgeEventMessage, Event
from tests.integration.spine_helpers import gateway_config, start_gateway
from tests.integration.test_edge_worker import T0, BlobDetector, edge_config, make_clip
from tests.servers import Collector, InfluxDB1, Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration

NAMES = {"stopped.jpg", "exceeded.jpg", "left.jpg", "clip.mp4", "manifest.json"}


def probe_duration(path: Path) -> float:
    entries = "format=duration:stream=codec_name,pix_fmt"
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", entries, "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    doc = json.loads(out.stdout)
    assert doc["streams"][0]["codec_name"] == "h264" and doc["streams"][0]["pix_fmt"] == "yuv420p"
    return float(doc["format"]["duration"])


def test_parking_event_evidence_pack_reaches_the_gateway(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "street.mp4")
    gw = start_gateway(
        gateway_config(tmp_path, mosquitto, {"api": "v1", "url": influxdb1.url, "database": influx_db})
    )
    cfg = edge_config(tmp_path, mosquitto, clip)
    pre, post = cfg.evidence.clip.pre_s, cfg.evidence.clip.post_s
    worker = EdgeWorker(cfg, BlobDetector()).start()
    worker.run_in_thread()
    try:
        folders, events = delivered(worker, gw, tmp_path, 60)
        assert len(folders) == 1 and len(events) == 1 and events[0].kind == "illegal_parking"
        edge_folder = folders[0]
        event = events[0]
        assert {p.name for p in edge_folder.iterdir()} == NAMES
        # the clip: H.264, pre + post seconds around the raise (within a frame or two at decode_fps)
        assert event.id == edge_folder.name
        seconds = probe_duration(edge_folder / "clip.mp4")
        assert abs(seconds - (pre + post)) <= 2 / 5, seconds
        # the manifest names every file with its hash and capture times, and holds on the edge box
        manifest = Manifest.model_validate_json((edge_folder / "manifest.json").read_bytes())
        assert (manifest.edge_id, manifest.camera_id, manifest.event_id, manifest.kind) == (
            "edge-w",
            "cam-file",
            event.id,
            "illegal_parking",
        )
        by_name = {f.name: f for f in manifest.files}
        assert set(by_name) == NAMES - {"manifest.json"}
        c = by_name["clip.mp4"]
        assert c.first_frame_at is not None and c.last_frame_at is not None
        span = (c.last_frame_at - c.first_frame_at).total_seconds()
        assert abs(span - (pre + post)) <= 0.5
        assert 27.5 - pre <= c.first_frame_at.timestamp() - T0 <= 30.0 - pre
        assert by_name["stopped.jpg"].taken_at is not None
        assert verify_manifest(edge_folder) == []
        # the gateway's copies verify too, and it serves the clip and the manifest
        gw_folder = tmp_path / "data" / "evidence" / "edge-w" / event.id
        wait_until(lambda: (gw_folder / "manifest.json").is_file(), 10, "the manifest at the gateway")
        assert {p.name for p in gw_folder.iterdir() if not p.name.startswith(".")} == NAMES
        assert verify_manifest(gw_folder) == []
        ref = event.evidence["clip"]
        assert ref["name"] == "clip.mp4" and ref["bytes"] == c.bytes
        assert "clip.mp4" not in {s["name"] for s in event.evidence["snapshots"]}
        got = httpx.get(f"{gw.api_url}{ref['url']}")
        assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
        assert got.content == (edge_folder / "clip.mp4").read_bytes()
        got = httpx.get(f"{gw.api_url}/api/v1/evidence/edge-w/{event.id}/manifest.json")
        assert got.status_code == 200 and got.headers["content-type"] == "application/json"
        # one byte changed: verify_manifest names the file
        data = bytearray((gw_folder / "exceeded.jpg").read_bytes())
        data[len(data) // 2] ^= 0x01
        (gw_folder / "exceeded.jpg").write_bytes(bytes(data))
        problems = verify_manifest(gw_folder)
        assert len(problems) == 1 and problems[0].startswith("exceeded.jpg:"), problems
    finally:
        worker.stop()
        gw.stop()


def test_gateway_dead_letters_clips_and_manifests_it_cannot_keep(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "v1", "url": influxdb1.url, "database": influx_db},
        limits={"max_clip_bytes": 4096},
    )
    base = "gridgate/edge/box-1/evidence/E1"
    mp4 = b"\0\0\0\x18ftypisom" + b"\0" * 1000
    with Collector.on(mosquitto, "gridgate/dead-letter") as col:
        gw = start_gateway(cfg)
        try:
            pub(mosquitto, f"{base}/clip.mp4", mp4 + b"\0" * 4096)  # over limits.max_clip_bytes
            pub(mosquitto, f"{base}/clip.mp4", b"\0" * 1000)  # not an MP4
            pub(mosquitto, f"{base}/manifest.json", b'{"version": 1}')  # not a manifest
            pub(mosquitto, f"{base}/notes.txt", b"hello")  # neither picture, clip nor manifest
            pub(mosquitto, f"{base}/clip.mp4", mp4)  # this one is kept
            letters = col.wait_for(lambda ms: len(ms) >= 4, 10)
            stored = tmp_path / "data" / "evidence" / "box-1" / "E1" / "clip.mp4"
            wait_until(stored.is_file, 10, "the good clip stored")
        finally:
            gw.stop()
    by_detail = sorted((m.json()["reason"], m.json()["detail"]) for m in letters)
    assert by_detail[3] == ("too_large", "clip.mp4: 5108 bytes, the limit is 4096 (limits.max_clip_bytes)")
    assert [r for r, _ in by_detail[:3]] == ["bad_payload"] * 3
    details = " | ".join(d for _, d in by_detail)
    assert "no `ftyp` box" in details and "manifest.json is not a valid manifest" in details
    assert "must be a .jpg picture, clip.mp4 or manifest.json" in details
    assert stored.read_bytes() == mp4


def test_an_end_before_the_post_roll_waits_for_the_clip(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The car leaves (40-47 s) before the post-roll is over (28-30 + 20 s): the `end` waits for the clip,
    carries its reference, and the manifest comes after it, last."""
    caplog.set_level("INFO", logger="gridgate.edge.worker")
    clip = make_clip(tmp_path / "street.mp4")
    cfg = edge_config(tmp_path, mosquitto, clip)
    longer = cfg.evidence.clip.model_copy(update={"post_s": 20})
    cfg.evidence = cfg.evidence.model_copy(update={"clip": longer})
    with Collector.on(mosquitto, ["gridgate/edge/edge-w/events", "gridgate/edge/edge-w/evidence/#"]) as sub:
        worker = EdgeWorker(cfg, BlobDetector()).start()
        worker.run_in_thread()
        try:
            wait_until(lambda: worker.cameras[0].capture.ended, 60, "the clip played to its end")
            sub.wait_for(lambda ms: any(m.topic.endswith("/manifest.json") for m in ms), 30)
        finally:
            worker.stop()
    assert any("event=edge_end_waits_for_clip" in r.getMessage() for r in caplog.records)
    order = [m.topic.rsplit("/", 1)[-1] for m in sub.messages]
    end_at = next(i for i, m in enumerate(sub.messages) if b'"phase":"end"' in m.payload)
    assert order.index("clip.mp4") < end_at < order.index("manifest.json") == len(order) - 1
    end = EdgeEventMessage.model_validate(sub.messages[end_at].json())
    assert 40 <= end.at.timestamp() - T0 <= 47  # its frame time: when the car left, not when sent
    assert {r.name for r in end.evidence} == {"stopped.jpg", "exceeded.jpg", "left.jpg", "clip.mp4"}
    folder = tmp_path / "edge" / "evidence" / "cam-file" / end.event_id
    assert verify_manifest(folder) == []
    assert abs(probe_duration(folder / "clip.mp4") - 30) <= 2 / 5  # 10 s before, 20 after


def delivered(
    worker: EdgeWorker, gw: Gateway, tmp_path: Path, play_s: float
) -> tuple[list[Path], list[Event]]:
    """Once the clip has played: the evidence folders on the edge box, and the ended events the
    gateway stored from `cam-file` (after the edge queue drained and the points were flushed)."""
    wait_until(lambda: worker.cameras[0].capture.ended, play_s, "the clip played to its end")
    folders = wait_until(
        lambda: [p.parent for p in (tmp_path / "edge" / "evidence").rglob("manifest.json")],
        30,
        "the event's manifest written on the edge box",
    )
    wait_until(lambda: worker.queue.depth()[0] == 0, 20, "the edge queue drained")
    assert gw.flush(20)
    events = wait_until(
        lambda: [e for e in gw.store.query_events(source="camera:cam-file") if e.state == "cleared"],
        20,
        "the ended event stored by the gateway",
    )
    return folders, events
