"""The feedback loop across real parts: an edge event through Mosquitto becomes a ticket, a person
cancels it as a false alarm, the edge box hears the change and marks its kept frames; the shipped
model yields borderline detections through the feedback policy; an export fine-tunes a model."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from detectors.dataset import FeedbackFrame, export_dataset
from detectors.model import Detection
from detectors.rules import Highlight, Signal
from detectors.tracking import TrackedObject
from detectors.zones import box_iou
from edge.config import EdgeConfig
from edge.events import EventEmitter
from edge.feedback import BorderlineDetection, BorderlinePolicy, Feedback
from gateway.service import Gateway
from gateway.tickets.states import TicketStatus
from gridgate.models import Location, Severity
from tests.integration.spine_helpers import gateway_config
from tests.servers import Mosquitto, pub, wait_until
from tests.ticket_helpers import ROUTING_FILE

pytestmark = pytest.mark.integration

CAR = (0.10, 0.50, 0.30, 0.80)
KERB = Location(lat=30.2400, lon=120.1500)


def test_a_ticket_cancelled_as_false_alarm_marks_the_edge_frames(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    tickets = {"routing_file": ROUTING_FILE, "offline_grace_s": 0, "tick_s": 0.1, "update_coalesce_s": 0}
    (tmp_path / "gw").mkdir()
    token = "centre-token-0123456789abcdef"
    gw_cfg = gateway_config(
        tmp_path / "gw",
        mosquitto,
        {"api": "none"},
        tickets=tickets,
        auth={"tokens": [{"name": "centre", "token": token, "role": "command_centre"}]},
    )
    edge = EdgeConfig(
        edge_id="edge-fb",
        data_dir=tmp_path / "edge",
        broker={"host": "127.0.0.1", "port": mosquitto.port},
        feedback={"enabled": True, "borderline_low": None},
    )
    feedback = Feedback.for_worker(edge, object())
    assert feedback.store is not None and feedback.listener is not None
    emitter = EventEmitter()
    now = time.time()
    drafts = [
        emitter.on_signal(
            Signal(
                "illegal_parking", "kerb", key, "raise", now, now - 60, Severity.major, 0.9, {},
                highlights=(Highlight(CAR, "vehicle", 3),),
            )
        )
        for key in ("kerb:1", "kerb:2")
    ]  # fmt: skip
    frame = np.full((180, 320, 3), 80, np.uint8)
    car = Detection("vehicle", 0.9, CAR, "car")
    track = TrackedObject(3, "vehicle", 0.9, 0.9, CAR, None, "car", now, 60.0)
    kept = []
    for d in drafts:
        assert d is not None
        kept += feedback.observe("cam-1", now, frame, [car], [track], [], [d])
    false_id = drafts[0].event.event_id
    feedback.start()
    try:
        wait_until(feedback.listener.connected.is_set, 10, "the edge's ticket listener connected")
        with Gateway(gw_cfg) as gw:
            assert gw.tickets is not None
            msg = drafts[0].build(1, edge.edge_id, "cam-1", KERB)
            pub(mosquitto, f"gridgate/edge/{edge.edge_id}/events", msg.model_dump_json())
            wait_until(lambda: gw.tickets.store.count_tickets() == 1, 15, "the ticket of the edge event")
            (ticket,) = gw.tickets.store.list_tickets()
            assert [e.event_id for e in gw.tickets.events(ticket.id)] == [false_id]
            api = httpx.Client(base_url=gw.api_url or "", headers={"Authorization": f"Bearer {token}"})
            url = f"/api/v1/tickets/{ticket.id}"
            refused = api.post(f"{url}/accept", json={"resolution": "false_alarm"})
            assert refused.status_code == 422 and "is for resolve, close or cancel" in refused.text
            assert api.post(f"{url}/cancel", json={"resolution": "nonsense"}).status_code == 422
            done = api.post(
                f"{url}/cancel", json={"note": "nobody parked there", "resolution": "false_alarm"}
            )
            assert done.status_code == 200 and done.json()["status"] == TicketStatus.cancelled

            def marked() -> bool:
                return bool(json.loads(kept[0].read_text())["false_alarm"])

            wait_until(marked, 10, "the edge frames marked false alarm")
    finally:
        feedback.stop()
    first = FeedbackFrame.model_validate_json(kept[0].read_bytes())
    assert first.false_alarm_tickets == [ticket.id] and first.false_alarm_events == [false_id]
    assert json.loads(kept[1].read_text())["false_alarm"] is False
    s = export_dataset(feedback.store.root, tmp_path / "ds")
    labels = sorted(p.read_text() for p in (tmp_path / "ds" / "labels").rglob("*.txt"))
    assert labels == ["", "0 0.200000 0.650000 0.200000 0.300000\n"] and s.removed_boxes == 1


def test_the_shipped_model_gives_borderline_detections_through_the_feedback_policy(tmp_path: Path) -> None:
    from detectors.model import Detector
    from detectors.synth import synth_sample

    img, truth = synth_sample(0, 3, 640, 360)
    assert truth
    # thresholds nothing reaches: every detection the model makes is borderline for the rules
    det = Detector(min_score=dict.fromkeys(("vehicle", "water", "bin", "garbage"), 0.999))
    edge = EdgeConfig(data_dir=tmp_path, feedback={"enabled": True, "listen_tickets": False})
    feedback = Feedback.for_worker(edge, det)
    assert (
        feedback.model_version is not None
        and feedback.model_version == det.version
        and det.version.startswith("street.pt@")
    )
    (dets,) = det.detect([img])
    real, borderline = feedback.split(dets)
    assert real == [] and borderline and all(isinstance(d, BorderlineDetection) for d in borderline)
    (path,) = feedback.observe("cam-1", 1_780_000_000.0, img, real, [], borderline, [])
    doc = FeedbackFrame.model_validate_json(path.read_bytes())
    assert len(doc.detections) == len(borderline) and all(d.borderline for d in doc.detections)
    assert doc.model_version == feedback.model_version and doc.taken_at == datetime.fromtimestamp(
        1_780_000_000.0, UTC
    )


@pytest.mark.slow
def test_fine_tune_one_epoch_on_an_exported_dataset(tmp_path: Path) -> None:
    from detectors.synth import synth_sample
    from detectors.train import SHIPPED_PT, main

    edge = EdgeConfig(data_dir=tmp_path, feedback={"enabled": True, "listen_tickets": False})
    feedback = Feedback.for_worker(edge, object())
    emitter = EventEmitter()
    for i in range(6):
        img, _ = synth_sample(0, i, 320, 180)
        dets = [Detection("vehicle", 0.9, CAR, "car")]
        sig = Signal("illegal_parking", "kerb", f"k:{i}", "raise", 1e9 + i, 1e9, Severity.major, 0.9, {})
        feedback.observe("cam-1", 1e9 + i, img, dets, [], [], [emitter.on_signal(sig)])  # type: ignore[list-item]
    s = export_dataset(tmp_path / "feedback", tmp_path / "ds")
    started = time.monotonic()
    argv = ["--data", str(s.data_yaml), "--model", str(SHIPPED_PT), "--out", str(tmp_path / "run")]
    assert main([*argv, "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0"]) == 0
    assert (tmp_path / "run" / "run" / "weights" / "best.pt").is_file()
    assert time.monotonic() - started < 60
    assert not (tmp_path / "run" / "dataset").exists()  # nothing rendered: trained on the export


def test_the_worker_keeps_the_frames_of_its_parking_event(tmp_path: Path) -> None:
    from edge.config import FeedbackConfig
    from edge.worker import EdgeWorker
    from tests.integration.test_edge_worker import PARKED, T0, BlobDetector, H, W, edge_config, make_clip

    clip = make_clip(tmp_path / "street.mp4")
    cfg = edge_config(tmp_path, None, clip)
    cfg = cfg.model_copy(update={"feedback": FeedbackConfig(enabled=True, listen_tickets=False)})
    worker = EdgeWorker(cfg, BlobDetector()).start(publisher=False)
    worker.run_in_thread()
    try:
        wait_until(lambda: worker.cameras[0].capture.ended, 60, "the clip played to its end")
        wait_until(lambda: worker.cameras[0].emitter.open == {}, 10, "the stay ended")
    finally:
        worker.stop()
    assert worker.feedback.store is not None
    sidecars = sorted(worker.feedback.store.root.rglob("*.json"))
    frames = [FeedbackFrame.model_validate_json(p.read_bytes()) for p in sidecars]
    frames.sort(key=lambda f: f.taken_at)
    assert [f.reasons for f in frames] == [["event_start"], ["event_new"], ["event_end"]]
    start, new, _ = frames
    assert len({f.events[0].event_id for f in frames}) == 1 and new.events[0].kind == "illegal_parking"
    # it came to rest at ~8 s of the clip and stood there for the 20 s dwell
    assert 7.5 <= start.taken_at.timestamp() - T0 <= 9.0
    assert 27.5 <= new.taken_at.timestamp() - T0 <= 30.0 and (new.width, new.height) == (W, H)
    expected = (PARKED[0] * W, PARKED[1] * H, PARKED[2] * W, PARKED[3] * H)
    (car,) = new.detections
    assert all(abs(a - b) <= 2 for a, b in zip(car.box_px, expected, strict=True)), car.box_px
    (arriving,) = start.detections  # still rolling the last metres into its place
    rel = (arriving.box_px[0] / W, arriving.box_px[1] / H, arriving.box_px[2] / W, arriving.box_px[3] / H)
    assert box_iou(rel, PARKED) > 0.5
    for f, c in ((start, arriving), (new, car)):
        assert c.events == [f.events[0].event_id] and c.track_id == car.track_id is not None


def test_borderline_frames_come_from_every_model_of_a_box_with_several(tmp_path: Path) -> None:
    from detectors.ensemble import ModelSet
    from detectors.model import Detector

    models = ModelSet([Detector(name="street"), Detector(name="copy", class_map={"car": "ignore"})])
    edge = EdgeConfig(data_dir=tmp_path, feedback={"enabled": True, "listen_tickets": False})
    feedback = Feedback.for_worker(edge, models)
    assert feedback.borderline
    assert all(isinstance(m.policy, BorderlinePolicy) for m in models.models)
    assert feedback.model_version == ",".join(f"{m.name}={m.version}" for m in models.models)
