"""Camera health through the whole edge worker on encoded clips: a camera knocked sideways raises
`camera_moved` once (with the picture), mutes its zone's parking event while moved, and clears when
put back; the gateway files it as a maintenance fault. A camera whose stream never comes is lost."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from gateway.edge_ingest import to_event
from gridgate.models import EdgeEventMessage, EventClass
from tests.servers import wait_until
from tests.unit.test_detectors_rules import Det
from tests.unit.test_edge_camera_health import Street

pytestmark = pytest.mark.integration

W, H, FPS = 640, 360, 5
T0 = 1_780_000_000.0
ZONE = [[0.30, 0.62], [0.70, 0.62], [0.70, 0.98], [0.30, 0.98]]


class WhiteCarDetector:
    """The parked car is pure white; the street's traffic and signs are not."""

    def detect(self, frames: list[np.ndarray]) -> list[list[Any]]:
        out = []
        for img in frames:
            mask = (img.min(axis=2) >= 244).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            out.append(
                [
                    Det("vehicle", 0.9, (x / W, y / H, (x + w) / W, (y + h) / H))
                    for x, y, w, h, area in stats[1:n]
                    if area >= 800
                ]
            )
        return out


def render(path: Path, seconds: float, at: Any) -> Path:
    raw = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-"]
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", *raw, *h264, "-y", str(path)], stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    for i in range(int(seconds * FPS)):
        proc.stdin.write(at(i / FPS).tobytes())
    proc.stdin.close()
    assert proc.wait(120) == 0
    return path


def worker_for(tmp_path: Path, url: str, **health: Any) -> Any:
    from edge.config import load_edge_config
    from edge.worker import EdgeWorker

    cfg = load_edge_config(
        None,
        edge_id="edge-h",
        data_dir=str(tmp_path / "edge"),
        broker={"port": 1},
        cameras=[
            {
                "id": "cam-h",
                "url": url,
                "location": {"lat": 31.23, "lon": 121.47},
                "detect_fps": 2,
                "refresh_s": 5,
                "capture": {"decode_fps": 5, "realtime": False, "start_time": T0},
                "health": health,
                "zones": [{"name": "kerb", "type": "no_parking", "points": ZONE, "dwell_s": 15}],
            }
        ],
    )
    got: list[EdgeEventMessage] = []
    return EdgeWorker(cfg, WhiteCarDetector(), on_message=got.append), got


def play(tmp_path: Path, clip: Path, **health: Any) -> list[EdgeEventMessage]:
    worker, got = worker_for(tmp_path, str(clip), **health)
    worker.start(publisher=False)
    worker.run_in_thread()
    try:
        wait_until(lambda: worker.cameras[0].capture.ended, 120, "the clip played to its end")
        wait_until(lambda: worker.queue.depth()[0] >= len(got) > 0, 10, "messages queued")
    finally:
        worker.stop()
    return got


def test_a_knocked_camera_is_moved_mutes_its_zone_and_clears(tmp_path: Path) -> None:
    street = Street(7)
    assert WhiteCarDetector().detect([street.frame(t) for t in (0.0, 33.0, 66.0)]) == [[], [], []]

    def at(t: float) -> np.ndarray:
        moved = 40 <= t < 90
        img = street.frame(t, dx=0.10 if moved else 0.0)
        if 50 <= t < 85:  # a car parks on the kerb while the camera looks elsewhere
            cv2.rectangle(
                img, (int(0.42 * W), int(0.70 * H)), (int(0.58 * W), int(0.90 * H)), (250, 250, 250), -1
            )
        return img

    clip = render(tmp_path / "knocked.mp4", 130, at)
    got = play(tmp_path / "checked", clip)
    # the control: with the checks off the same clip raises the parking event the move muted
    assert {m.kind for m in play(tmp_path / "unchecked", clip, enabled=False)} == {"illegal_parking"}
    moved = [m for m in got if m.kind == "camera_moved"]
    assert [m.phase for m in moved] == ["new", "end"]
    new, end = moved
    assert 40 <= new.at.timestamp() - T0 < 60 and 90 <= end.at.timestamp() - T0 <= 110
    assert new.measurements["dx_share"] == pytest.approx(-0.10, abs=0.015)
    assert [r.name for r in new.evidence] == ["camera.jpg"]
    assert {m.kind for m in got} == {"camera_moved"}  # the parking was muted: the zone covered other ground
    ev = to_event(new)
    assert ev.event_class is EventClass.fault and ev.source == "camera:cam-h"
    assert ev.message == "camera cam-h: moved"
    # the reference the move was measured against is kept for the next start, for these zones
    assert (tmp_path / "checked" / "edge" / "health" / "cam-h.npz").exists()


def test_a_camera_whose_stream_never_comes_is_lost(tmp_path: Path) -> None:
    worker, got = worker_for(tmp_path, "rtsp://127.0.0.1:9/none", lost_after_s=2.0)
    worker.start(publisher=False)
    worker.run_in_thread()
    try:
        wait_until(lambda: any(m.kind == "camera_lost" for m in got), 15, "camera_lost raised")
    finally:
        worker.stop()
    lost = [m for m in got if m.kind == "camera_lost"]
    assert len(lost) == 1 and lost[0].phase == "new" and lost[0].zone == "camera"
    assert lost[0].measurements["no_frames_s"] >= 2.0
