"""A licence plate end to end: a rendered clip of a red car carrying plate 苏E·8K2N6 that parks in a
no-parking zone past the dwell and drives off. The edge worker (real PP-OCRv4 models from the
rapidocr-onnxruntime wheel) reads the plate when the car comes to rest and when the dwell is
exceeded, and never otherwise; one illegal_parking event and one ticket carry the plate, its
confidence and colour; the evidence pack holds the three pictures, `plate.jpg`, a clip ffprobe reads
with the configured duration and a manifest whose hashes verify on the edge box and the gateway.
The same car hidden by a van and found again under a new tracker id stays one event by its plate."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from detectors.plates_render import plate_image
from edge.config import HealthConfig
from edge.worker import EdgeWorker
from gridgate.manifest import verify_manifest
from gridgate.models import EdgeEventMessage
from tests.integration.spine_helpers import gateway_config, start_gateway
from tests.integration.test_edge_evidence_pack import delivered, probe_duration
from tests.integration.test_edge_worker import T0, edge_config
from tests.servers import InfluxDB1, Mosquitto, wait_until
from tests.ticket_helpers import ROUTING_FILE

pytest.importorskip("rapidocr_onnxruntime")
pytestmark = pytest.mark.integration

W, H, FPS = 640, 360, 5
PLATE = "苏E8K2N6"
CAR = (0.28, 0.42, 0.62, 0.9)  # parked, relative
NAMES = {"stopped.jpg", "exceeded.jpg", "left.jpg", "plate.jpg", "clip.mp4", "manifest.json"}


def car_box(t: float) -> tuple[float, float, float, float] | None:
    x1, y1, x2, y2 = CAR
    if t < 2:
        return None
    if t < 5:  # drives in from the left and stops
        k = (t - 5) / 3 * 0.5
        return (x1 + k, y1, x2 + k, y2)
    if t < 36:
        return CAR
    if t < 39:  # drives off to the right
        k = (t - 36) / 3 * 0.6
        return (x1 + k, y1, x2 + k, y2)
    return None


COVERED = (14.0, 16.0)  # a grey van passes in front of the parked car
SIGN_FROM = 16.0  # then a red sign stands against it: the detector's blob becomes car + sign


def frame_at(t: float, plate: np.ndarray, switch: bool = False) -> np.ndarray:
    """The clip's frame at time `t`; `switch`: the van and the sign make the tracker lose the car and
    find it again under a new id, with a box too unlike the old one for any overlap rule."""
    img = np.full((H, W, 3), 70, np.uint8)
    img[H // 2 :, :] = 95  # the road
    box = car_box(t)
    if box is None:
        return img
    if switch and COVERED[0] <= t < COVERED[1]:
        cv2.rectangle(img, (round(0.2 * W), round(0.3 * H)), (round(0.7 * W), H - 1), (120, 120, 120), -1)
        return img
    if switch and t >= SIGN_FROM and box == CAR:
        cv2.rectangle(img, (round(CAR[2] * W), 0), (W - 1, round(CAR[3] * H)), (30, 30, 210), -1)
    x1, y1, x2, y2 = (round(box[0] * W), round(box[1] * H), round(box[2] * W), round(box[3] * H))
    cv2.rectangle(img, (x1, y1), (x2, y2), (40, 40, 200), -1)
    cv2.rectangle(img, (x1 + 20, y1 + 10), (x2 - 20, y1 + 60), (90, 60, 50), -1)  # the windscreen
    # the plate, 120 px wide, a little askew on the bumper
    cx, cy, pw, ph = (x1 + x2) / 2, y2 - 30, 120, 38
    quad = np.array(
        [
            [cx - pw / 2, cy - ph / 2],
            [cx + pw / 2, cy - ph / 2 + 4],
            [cx + pw / 2, cy + ph / 2 + 3],
            [cx - pw / 2, cy + ph / 2],
        ],
        np.float32,
    )
    src = np.array(
        [[0, 0], [plate.shape[1], 0], [plate.shape[1], plate.shape[0]], [0, plate.shape[0]]], np.float32
    )
    m = cv2.getPerspectiveTransform(src, quad)
    warped = cv2.warpPerspective(plate, m, (W, H), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full(plate.shape[:2], 255, np.uint8), m, (W, H)) > 127
    img[mask] = warped[mask]
    return img


def make_clip(path: Path, seconds: float = 46, switch: bool = False) -> Path:
    plate = plate_image(PLATE, "blue", 1.0)
    raw = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-"]
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-g", "30", "-pix_fmt", "yuv420p"]
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", *raw, *h264, "-y", str(path)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(int(seconds * FPS)):
        proc.stdin.write(frame_at(i / FPS, plate, switch).tobytes())
    proc.stdin.close()
    assert proc.wait(60) == 0
    return path


class RedCarDetector:
    """The red blob is the vehicle (the rules and the plate reader do not care which model found it)."""

    def detect(self, frames: list[np.ndarray]) -> list[list[Any]]:
        from tests.unit.test_detectors_rules import Det

        out = []
        for img in frames:
            b, g, r = (img[..., i].astype(np.int16) for i in range(3))
            mask = ((r > 150) & (g < 90) & (b < 90)).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            dets = []
            for i in range(1, n):
                x, y, bw, bh, area = stats[i]
                if area >= 400:
                    dets.append(Det("vehicle", 0.9, (x / W, y / H, (x + bw) / W, (y + bh) / H)))
            out.append(dets)
        return out


def test_parked_car_plate_reaches_event_ticket_and_evidence_pack(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "street.mp4")
    tickets = {"routing_file": ROUTING_FILE, "offline_grace_s": 0, "tick_s": 0.1, "update_coalesce_s": 0}
    gw = start_gateway(
        gateway_config(
            tmp_path, mosquitto, {"api": "v1", "url": influxdb1.url, "database": influx_db}, tickets=tickets
        )
    )
    cfg = edge_config(tmp_path, mosquitto, clip)
    cfg.cameras[0] = cfg.cameras[0].model_copy(update={"health": HealthConfig(enabled=False)})  # a flat scene
    pre, post = cfg.evidence.clip.pre_s, cfg.evidence.clip.post_s
    worker = EdgeWorker(cfg, RedCarDetector()).start()
    assert worker.cameras[0].plates is not None  # on by default: a no_parking zone, the OCR installed
    worker.run_in_thread()
    try:
        folders, events = delivered(worker, gw, tmp_path, 90)
        assert gw.tickets is not None
        wait_until(lambda: gw.tickets.store.count_tickets() == 1, 15, "the ticket of the parking event")
    finally:
        worker.stop()
        gw.stop()
    # read when it came to rest (twice: it crept on after the first, unread, rest), at the dwell exceeded,
    # and once as a new stay when it drove off within the zone; never on each of the analyses
    assert worker.plate_reader is not None and worker.plate_reader.reads == 4
    assert worker.cameras[0].counters.analysed >= 20
    assert len(folders) == 1 and len(events) == 1
    event, folder = events[0], folders[0]
    assert event.kind == "illegal_parking" and event.id == folder.name
    assert event.measurements["plate"] == PLATE and event.measurements["plate_colour"] == "blue"
    assert event.measurements["plate_confidence"] >= cfg.cameras[0].plates.min_confidence
    assert PLATE in event.message
    plate_doc = event.evidence["plate"]
    assert plate_doc["text"] == PLATE and plate_doc["crop"]["name"] == "plate.jpg"
    (ticket,) = gw.tickets.store.list_tickets()
    (tev,) = gw.tickets.events(ticket.id)
    assert tev.event_id == event.id and tev.evidence["plate"]["text"] == PLATE
    # the pack: three pictures, the plate close-up, the clip and the manifest, verified on both sides
    assert {p.name for p in folder.iterdir()} == NAMES
    close_up = cv2.imread(str(folder / "plate.jpg"))
    assert close_up is not None and close_up.shape[1] > 2.5 * close_up.shape[0]
    assert abs(probe_duration(folder / "clip.mp4") - (pre + post)) <= 2 / FPS
    assert verify_manifest(folder) == []
    gw_folder = tmp_path / "data" / "evidence" / "edge-w" / event.id
    assert {p.name for p in gw_folder.iterdir() if not p.name.startswith(".")} == NAMES
    assert verify_manifest(gw_folder) == []


def test_same_plate_after_a_track_switch_is_one_event(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A van hides the parked car for 2 s and a red sign then merges with its blob: the tracker gives it
    a new id on a box no overlap rule links to the old one. Its plate does: one stay, one event, counted
    from when the car first stopped."""
    caplog.set_level("INFO", logger="gridgate.edge.plates")
    clip = make_clip(tmp_path / "street.mp4", switch=True)
    cfg = edge_config(tmp_path, mosquitto, clip)
    zone = cfg.cameras[0].zones[0].model_copy(update={"absent_grace_s": 10})
    cfg.cameras[0] = cfg.cameras[0].model_copy(
        update={"health": HealthConfig(enabled=False), "zones": [zone]}
    )
    messages: list[EdgeEventMessage] = []
    worker = EdgeWorker(cfg, RedCarDetector(), on_message=messages.append).start(publisher=False)
    worker.run_in_thread()
    try:
        wait_until(lambda: worker.cameras[0].capture.ended, 90, "the clip played to its end")
        wait_until(lambda: any(m.phase == "end" for m in messages), 30, "the event ended")
    finally:
        worker.stop()
    assert any("event=plate_same_stay" in r.getMessage() for r in caplog.records)
    new = [m for m in messages if m.phase == "new"]
    assert len(new) == 1 and {m.event_id for m in messages} == {new[0].event_id}
    assert new[0].measurements["plate"] == PLATE
    assert new[0].started_at.timestamp() - T0 < 6  # from when it stopped (5 s), not from the new id (16 s)
    assert new[0].measurements["track_id"] != 1  # the stay follows the car under its new id
