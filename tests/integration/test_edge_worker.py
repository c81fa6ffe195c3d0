"""The whole worker on a file camera, frame times driving time: a car parks in a no-parking zone
and leaves, another passes; one illegal_parking event (new ... end) with its pictures arrives at a
real Mosquitto. The detector here is a plain brightness-blob finder (the rules under test do not
care which model found the cars); the shipped YOLO model is exercised by the demo test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from gridgate.models import EdgeEventMessage
from tests.servers import Collector, Mosquitto, wait_until

pytestmark = pytest.mark.integration

W, H, FPS = 640, 360, 15
T0 = 1_780_000_000.0
PARKED = (0.10, 0.60, 0.22, 0.75)  # where the car stands, relative
ZONE = [[0.05, 0.55], [0.95, 0.55], [0.95, 0.95], [0.05, 0.95]]


def car_at(t: float) -> list[tuple[float, float, float, float]]:
    """The cars on screen at clip time t (relative boxes)."""
    cars = []
    x1, y1, x2, y2 = PARKED
    if 5 <= t < 8:  # drives in from the left and stops
        k = (t - 5) / 3
        cars.append((x1 - 0.3 * (1 - k), y1, x2 - 0.3 * (1 - k), y2))
    elif 8 <= t < 40:
        cars.append(PARKED)
    elif 40 <= t < 43:  # drives off to the right
        k = (t - 40) / 3
        cars.append((x1 + 0.9 * k, y1, x2 + 0.9 * k, y2))
    if 20 <= t < 23:  # a car passing through the zone, lower lane, never stopping
        k = (t - 20) / 3
        cars.append((-0.1 + 1.2 * k, 0.80, 0.02 + 1.2 * k, 0.92))
    return cars


def make_clip(path: Path, seconds: float = 52) -> Path:
    raw = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-"]
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p"]
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", *raw, *h264, "-y", str(path)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(int(seconds * FPS)):
        img = np.full((H, W, 3), 70, np.uint8)
        img[int(0.5 * H) :, :] = 95  # the road
        for x1, y1, x2, y2 in car_at(i / FPS):
            cv2.rectangle(img, (int(x1 * W), int(y1 * H)), (int(x2 * W), int(y2 * H)), (245, 245, 245), -1)
        proc.stdin.write(img.tobytes())
    proc.stdin.close()
    assert proc.wait(60) == 0
    return path


class BlobDetector:
    """Bright rectangles are vehicles."""

    def detect(self, frames: list[np.ndarray]) -> list[list[Any]]:
        from tests.unit.test_detectors_rules import Det

        out = []
        for img in frames:
            h, w = img.shape[:2]
            mask = (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) > 200).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            dets = []
            for i in range(1, n):
                x, y, bw, bh, area = stats[i]
                if area >= 150:
                    dets.append(Det("vehicle", 0.9, (x / w, y / h, (x + bw) / w, (y + bh) / h)))
            out.append(dets)
        return out


def edge_config(tmp_path: Path, mosquitto: Mosquitto | None, clip: Path, **capture: Any) -> Any:
    from edge.config import load_edge_config

    return load_edge_config(
        None,
        edge_id="edge-w",
        data_dir=str(tmp_path / "edge"),
        broker={"host": mosquitto.host, "port": mosquitto.port} if mosquitto else {"port": 1},
        publisher={"update_min_s": 5, "update_max_s": 10},
        cameras=[
            {
                "id": "cam-file",
                "url": str(clip),
                "location": {"lat": 31.2304, "lon": 121.4737},
                "detect_fps": 2,
                "refresh_s": 5,
                "capture": {"decode_fps": 5, "realtime": False, "start_time": T0, **capture},
                "zones": [
                    {
                        "name": "gate",
                        "type": "no_parking",
                        "points": ZONE,
                        "dwell_s": 20,
                        "absent_grace_s": 3,
                        "location": {"lat": 31.2305, "lon": 121.4738},
                    }
                ],
            }
        ],
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "street.mp4")


def test_parking_event_with_pictures_over_mqtt(clip: Path, mosquitto: Mosquitto, tmp_path: Path) -> None:
    from edge.worker import EdgeWorker

    cfg = edge_config(tmp_path, mosquitto, clip)
    with Collector.on(mosquitto, "gridgate/edge/edge-w/#") as sub:
        worker = EdgeWorker(cfg, BlobDetector()).start()
        worker.run_in_thread()
        try:
            wait_until(lambda: worker.cameras[0].capture.ended, 60, "the clip played to its end")
            wait_until(lambda: worker.queue.depth()[0] == 0, 10, "queue drained")
            sub.wait_for(lambda ms: any(b'"phase":"end"' in m.payload for m in ms), 10)
        finally:
            worker.stop()
    events = [EdgeEventMessage.model_validate(m.json()) for m in sub.on_topic("gridgate/edge/edge-w/events")]
    assert {e.kind for e in events} == {"illegal_parking"}
    assert len({e.event_id for e in events}) == 1  # one stay, one event: the passing car raised nothing
    phases = [e.phase for e in events]
    assert phases[0] == "new" and phases[-1] == "end" and phases.count("new") == 1
    assert all(p == "update" for p in phases[1:-1])
    new, end = events[0], events[-1]
    # frame time drives time: stopped at ~8 s, dwell 20 s -> raised at ~28 s of the clip
    assert 7.5 <= new.started_at.timestamp() - T0 <= 9.0
    assert 27.5 <= new.at.timestamp() - T0 <= 30.0
    assert new.measurements["dwell_s"] >= 20
    assert new.location.lat == pytest.approx(31.2305)  # the zone's own location
    assert 40 <= end.at.timestamp() - T0 <= 47 and end.measurements["reason"] in ("left", "moved")
    assert [s for s in [e.seq for e in events]] == sorted(e.seq for e in events)
    names = {r.name: r for r in new.evidence}
    assert set(names) == {"stopped.jpg", "exceeded.jpg"}
    assert names["stopped.jpg"].taken_at < names["exceeded.jpg"].taken_at
    assert "left.jpg" in {r.name for r in end.evidence}
    pictures = {
        name: m.payload
        for m in sub.on_topic("gridgate/edge/edge-w/evidence/#")
        if (name := m.topic.rsplit("/", 1)[-1]).endswith(".jpg")  # clip.mp4 and manifest.json: their own test
    }
    assert set(pictures) >= {"stopped.jpg", "exceeded.jpg", "left.jpg"}
    for name, data in pictures.items():
        assert data[:2] == b"\xff\xd8" and len(data) == {r.name: r.bytes for r in end.evidence}[name]
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[:2] == (H, W)
    on_disk = list((tmp_path / "edge" / "evidence" / "cam-file" / new.event_id).glob("*.jpg"))
    assert len(on_disk) == 3
    # stopped.jpg shows the car where it stands: its box region is bright
    stopped = cv2.imdecode(np.frombuffer(pictures["stopped.jpg"], np.uint8), cv2.IMREAD_GRAYSCALE)
    cx, cy = int((PARKED[0] + PARKED[2]) / 2 * W), int((PARKED[1] + PARKED[3]) / 2 * H)
    assert stopped[cy, cx] > 200


def soak_report(clip: Path, tmp_path: Path) -> dict[str, Any]:
    """Play the clip in a loop for 15 s and report state sizes and this process's RSS."""
    from bench.edge_soak import rss_mb
    from edge.worker import EdgeWorker

    cfg = edge_config(tmp_path, None, clip, loop=True)
    worker = EdgeWorker(cfg, BlobDetector()).start()
    worker.run_in_thread()
    try:
        wait_until(lambda: worker.cameras[0].counters.analysed >= 30, 30, "warm-up")
        ring = worker.cameras[0].clip_ring  # memory that is meant to fill: let it fill first
        if ring is not None:
            wait_until(
                lambda: ring.frames and ring.frames[-1].ts - ring.frames[0].ts >= ring.seconds - 1, 60, "ring"
            )
        rss0 = rss_mb()
        t_end = time.monotonic() + 15
        peak: dict[str, int] = {}
        quiet: list[dict[str, int]] = []  # sizes while the street has been empty for a while
        while time.monotonic() < t_end:
            sizes = worker.sizes()
            for k, v in sizes.items():
                peak[k] = max(peak.get(k, 0), v)
            pos = (worker.cameras[0].last_ts - T0) % 52
            if pos >= 50 or pos < 4:
                quiet.append(sizes)
            time.sleep(0.05)
        rss1 = rss_mb()
        loops = (worker.cameras[0].last_ts - T0) / 52
    finally:
        worker.stop()
    return {
        "rss_mb": [rss0, rss1],
        "peak": peak,
        "quiet": quiet,
        "loops": loops,
        "ring_frames_max": cfg.evidence.ring_frames,
    }


@pytest.mark.slow
def test_short_soak_bounded_state(clip: Path, tmp_path: Path) -> None:
    """The clip in a loop (broker away, so the queue grows on disk, not in memory): per-track state
    stays bounded and memory stays flat. The worker runs in a fresh interpreter, as on an edge box:
    inside the test process, memory the rest of the suite left behind moves RSS on its own.
    bench/edge_soak.py runs the long version."""
    code = (
        "import json, sys; from pathlib import Path; "
        "from tests.integration.test_edge_worker import soak_report; "
        "print(json.dumps(soak_report(Path(sys.argv[1]), Path(sys.argv[2]))))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, str(clip), str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    peak, quiet, (rss0, rss1) = report["peak"], report["quiet"], report["rss_mb"]
    print(json.dumps({k: v for k, v in report.items() if k != "quiet"} | {"quiet_samples": len(quiet)}))
    assert report["loops"] > 1.5 and quiet
    for sizes in quiet:  # nothing left behind once the cars have gone
        assert sizes["tracks"] == sizes["parking_candidates"] == sizes["parking_track_links"] == 0, sizes
        assert sizes["held_pictures"] == sizes["open_events"] == 0, sizes
    assert peak["parking_candidates"] <= 10 and peak["tracks"] <= 12 and peak["held_pictures"] <= 2
    assert peak["ring_frames"] <= report["ring_frames_max"]
    assert rss1 - rss0 < 60, f"RSS grew from {rss0:.0f} to {rss1:.0f} MB"
