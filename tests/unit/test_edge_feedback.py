"""The feedback loop on real files: the bounded store, borderline sampling, false-alarm marks, and the
YOLO export that ultralytics' own dataset check accepts, with labels equal to the stored detections."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detectors.dataset import (
    DatasetError,
    FeedbackFrame,
    FrameEvent,
    assign_splits,
    export_dataset,
    read_frames,
)
from detectors.model import Detection, LabelPolicy
from detectors.rules import Highlight, RuleResult, Signal, SnapshotRequest
from detectors.tracking import TrackedObject
from detectors.train import offline_env
from edge.config import EdgeConfig
from edge.events import Draft, EventEmitter
from edge.evidence import FrameRing
from edge.feedback import (
    BorderlineDetection,
    BorderlinePolicy,
    BorderlineSampler,
    Budget,
    Feedback,
    FeedbackStore,
    split,
)
from gridgate.models import Severity

T0 = 1_780_000_000.0
W, H = 320, 180
CAR = (0.10, 0.50, 0.30, 0.80)
BIN = (0.70, 0.40, 0.80, 0.70)


class PolicyDetector:
    """Stands for detectors.model.Detector where only its label policy matters."""

    def __init__(self) -> None:
        self.policy = LabelPolicy()


def edge_cfg(tmp: Path, **feedback: object) -> EdgeConfig:
    fb = {"enabled": True, "dir": tmp / "fb", "listen_tickets": False, **feedback}
    return EdgeConfig(edge_id="edge-t", data_dir=tmp / "data", feedback=fb)


def car_object(box: tuple[float, float, float, float] = CAR) -> TrackedObject:
    return TrackedObject(7, "vehicle", 0.9, 0.9, box, None, "car", T0, 0.0)


def raise_draft(emitter: EventEmitter, t: float, key: str = "kerb:1") -> Draft:
    sig = Signal(
        "illegal_parking", "kerb", key, "raise", t, t - 60, Severity.major, 0.9, {"dwell_s": 60.0},
        highlights=(Highlight(CAR, "vehicle", 7),),
    )  # fmt: skip
    draft = emitter.on_signal(sig)
    assert draft is not None
    return draft


def image() -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    img[90:144, 32:96] = 240
    return img


def frame(camera: str, ts: float, name: str = "x.jpg") -> FeedbackFrame:
    return FeedbackFrame(
        image=name, width=W, height=H, edge_id="e", camera_id=camera,
        taken_at=datetime.fromtimestamp(ts, UTC), reasons=["borderline"],
    )  # fmt: skip


# ---- bounds ---------------------------------------------------------------------------------------


def test_budget_removes_the_oldest_beyond_files_or_bytes() -> None:
    b = Budget(max_files=3, max_bytes=1000)
    assert [b.add(k, 100) for k in "abc"] == [[], [], []]
    assert b.add("d", 100) == ["a"]  # fourth file
    assert b.add("e", 850) == ["b", "c"]  # bytes: 100 + 100 + 100 + 850 > 1000 until two go
    assert list(b.items) == ["d", "e"] and b.total_bytes == 950
    assert b.add("huge", 5000) == ["d", "e"]  # never the one just written


def test_store_on_disk_stays_bounded_and_reloads_in_order(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path, max_files=3, max_bytes=10**9)
    jpeg = b"\xff\xd8" + b"0" * 1000
    paths = [store.save(frame("cam-1", T0 + i), jpeg) for i in range(5)]
    on_disk = sorted(p.name for p in (tmp_path / "cam-1").iterdir())
    assert on_disk == sorted([p.name for p in paths[2:]] + [p.with_suffix(".jpg").name for p in paths[2:]])
    assert (store.saved, store.deleted, len(store)) == (5, 2, 3)
    again = FeedbackStore(tmp_path, max_files=2, max_bytes=10**9)  # a smaller cap after a restart
    assert len(again) == 2 and not paths[2].exists() and paths[4].exists()
    by_bytes = FeedbackStore(tmp_path, max_files=100, max_bytes=2 * len(jpeg) + 100)
    assert len(by_bytes) == 1 and paths[4].exists()  # two frames with sidecars are over the bytes
    # a crash between the two writes leaves a frame without its sidecar, or a .tmp: both go
    (tmp_path / "cam-1" / "orphan.jpg").write_bytes(jpeg)
    (tmp_path / "cam-1" / "cut.json.tmp").write_bytes(b"{")
    FeedbackStore(tmp_path, max_files=100, max_bytes=10**9)
    assert sorted(p.name for p in (tmp_path / "cam-1").iterdir()) == [
        paths[4].with_suffix(".jpg").name,
        paths[4].name,
    ]


def test_an_evicted_frame_is_no_longer_marked(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path, max_files=1, max_bytes=10**9)
    ev = FrameEvent(event_id="EV-1", kind="illegal_parking", zone="kerb", phase="new")
    store.save(frame("cam-1", T0).model_copy(update={"events": [ev]}), b"\xff\xd8")
    assert store.by_event.keys() == {ev.event_id}
    store.save(frame("cam-1", T0 + 1), b"\xff\xd8")  # pushes the first one out
    assert store.by_event == {} and store.mark_false_alarm([ev.event_id], "T", datetime.now(UTC)) == 0


# ---- borderline -----------------------------------------------------------------------------------


def test_borderline_policy_lets_through_marked_detections_between_low_and_min_score() -> None:
    policy = BorderlinePolicy(LabelPolicy(min_score={"vehicle": 0.4}), low=0.15)
    assert policy.lowest_score() == 0.15  # the model is asked for them
    sure = policy.make("car", 0.8, CAR)
    unsure = policy.make("car", 0.2, CAR)
    assert type(sure) is Detection and isinstance(unsure, BorderlineDetection)
    assert policy.make("car", 0.1, CAR) is None  # below the lower bound
    assert policy.make("car", 0.2, (0.1, 0.1, 0.1001, 0.1001)) is None  # too small for a vehicle
    real, borderline = split([sure, unsure])
    assert real == [sure] and borderline == [unsure]


def test_borderline_frames_are_sampled_per_camera() -> None:
    s = BorderlineSampler(every_s=60)
    taken = [("a", 0), ("a", 10), ("b", 10), ("a", 59), ("a", 60), ("a", 61)]
    assert [s.take(c, t) for c, t in taken] == [True, False, True, False, True, False]
    assert s.take("a", 5)  # frame time went back (a file camera looped): start again


def test_observe_keeps_event_frames_and_rate_limited_borderline_ones(tmp_path: Path) -> None:
    det = PolicyDetector()
    fb = Feedback.for_worker(edge_cfg(tmp_path, borderline_every_s=30), det)
    assert isinstance(det.policy, BorderlinePolicy)  # installed on the detector
    emitter = EventEmitter()
    car = Detection("vehicle", 0.9, CAR, "car")
    weak_bin = det.policy.make("bin", 0.2, BIN)
    assert isinstance(weak_bin, BorderlineDetection)
    kept = []
    for i in range(6):  # 10 s apart: borderline at 0 and 30; the event raised at 20
        t = T0 + 10 * i
        real, borderline = fb.split([car, weak_bin])
        drafts = [raise_draft(emitter, t)] if i == 2 else []
        kept.append(fb.observe("cam-1", t, image(), real, [car_object()], borderline, drafts))
    assert [len(p) for p in kept] == [1, 0, 1, 1, 0, 0]
    (sidecar,) = kept[2]
    doc = FeedbackFrame.model_validate_json(sidecar.read_bytes())
    assert doc.reasons == ["event_new"] and doc.events[0].phase == "new"
    eid = doc.events[0].event_id
    car_det, bin_det = doc.detections  # the borderline bin too: a label file holds every object
    assert bin_det.borderline and bin_det.events == [] and bin_det.score == 0.2
    assert car_det.box_px == (32.0, 90.0, 96.0, 144.0)
    assert (car_det.label, car_det.class_name, car_det.score, car_det.track_id) == ("vehicle", "car", 0.9, 7)
    assert car_det.events == [eid] and not car_det.borderline
    assert (doc.camera_id, doc.edge_id, doc.width, doc.height) == ("cam-1", "edge-t", W, H)
    assert doc.model_version is None  # this detector names no weights
    first = FeedbackFrame.model_validate_json(kept[0][0].read_bytes())
    assert first.reasons == ["borderline"] and [d.borderline for d in first.detections] == [False, True]
    assert (sidecar.parent / doc.image).read_bytes()[:2] == b"\xff\xd8"


def test_false_alarm_marks_frames_kept_before_and_after(tmp_path: Path) -> None:
    fb = Feedback.for_worker(edge_cfg(tmp_path), PolicyDetector())
    assert fb.store is not None
    emitter = EventEmitter()
    car = Detection("vehicle", 0.9, CAR, "car")
    (start,) = fb.observe("cam-1", T0, image(), [car], [car_object()], [], [raise_draft(emitter, T0)])
    (other,) = fb.observe(
        "cam-1", T0 + 1, image(), [car], [car_object()], [], [raise_draft(emitter, T0, "k:2")]
    )
    eid = FeedbackFrame.model_validate_json(start.read_bytes()).event_ids[0]
    assert fb.store.mark_false_alarm([eid, "not-ours"], "TICKET-1", datetime.now(UTC)) == 1
    marked = json.loads(start.read_text())
    assert marked["false_alarm"] is True and marked["false_alarm_tickets"] == ["TICKET-1"]
    assert json.loads(other.read_text())["false_alarm"] is False
    # the ticket was cancelled while the vehicle still stood there: its end frame comes later
    end_sig = Signal("illegal_parking", "kerb", "kerb:1", "clear", T0 + 90, T0, Severity.major, 0.9, {})
    end = emitter.on_signal(end_sig)
    assert end is not None
    (after,) = fb.observe("cam-1", T0 + 90, image(), [], [], [], [end])
    assert json.loads(after.read_text())["false_alarm_events"] == [eid]


def test_the_moment_a_vehicle_stopped_is_kept_once_its_event_exists(tmp_path: Path) -> None:
    fb = Feedback.for_worker(edge_cfg(tmp_path), PolicyDetector())
    emitter = EventEmitter()
    ring = FrameRing(4)
    car = Detection("vehicle", 0.9, CAR, "car")
    stopped = image()
    stopped[0, 0] = (1, 2, 3)  # tell the frames apart
    hl = (Highlight(CAR, "vehicle", 7),)

    def analyse(t: float, img: np.ndarray, rules: RuleResult, drafts: list[Draft]) -> list[Path]:
        ring.add(t, img)
        return fb.observe("cam-1", t, img, [car], [car_object()], [], drafts, rules, ring)

    assert analyse(T0, stopped, RuleResult(), []) == []
    one_later = RuleResult(snapshots=[SnapshotRequest("kerb:1", "kerb", "stopped", T0, hl)])
    one_later.snapshots.append(SnapshotRequest("kerb:2", "kerb", "stopped", T0, hl))
    assert analyse(T0 + 1, image(), one_later, []) == []  # held: no event yet
    assert analyse(T0 + 2, image(), RuleResult(forget=["kerb:2"]), []) == []  # that one drove off
    start, new = analyse(T0 + 60, image(), RuleResult(), [raise_draft(emitter, T0 + 60)])
    doc = FeedbackFrame.model_validate_json(start.read_bytes())
    assert doc.reasons == ["event_start"] and doc.taken_at.timestamp() == T0
    assert doc.events[0].phase == "start" and doc.detections[0].events == [doc.events[0].event_id]
    assert FeedbackFrame.model_validate_json(new.read_bytes()).events[0].phase == "new"
    kept = cv2.imread(str(start.with_suffix(".jpg")))
    assert kept is not None and tuple(kept[0, 0]) != tuple(image()[0, 0])  # the frame it stopped on
    assert fb._held == {}  # kerb:2 was forgotten, kerb:1 written


# ---- export ----------------------------------------------------------------------------------------


def kept_frames(tmp_path: Path, n_events: int = 4) -> tuple[Path, list[str]]:
    """Frames of `n_events` parking events and one borderline frame, as the worker keeps them."""
    fb = Feedback.for_worker(edge_cfg(tmp_path), PolicyDetector())
    emitter = EventEmitter()
    car = Detection("vehicle", 0.9, CAR, "car")
    weak_bin = BorderlineDetection("bin", 0.2, BIN, "bin")
    ids = []
    for i in range(n_events):
        t = T0 + 100 * i
        draft = raise_draft(emitter, t, f"kerb:{i}")
        ids.append(draft.event.event_id)
        fb.observe("cam-1", t, image(), [car], [car_object()], [], [draft])
    fb.observe("cam-2", T0 + 1000, image(), [car], [], [weak_bin], [])
    return tmp_path / "fb", ids


def labels_of(out: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines() for p in sorted((out / "labels").rglob("*.txt"))}


def test_export_is_a_dataset_ultralytics_accepts_with_the_stored_labels(tmp_path: Path) -> None:
    offline_env()  # before ultralytics is imported: no downloads, no update checks
    from ultralytics.data.utils import check_det_dataset

    src, ids = kept_frames(tmp_path)
    fb = FeedbackStore(src, 100, 10**9)
    fb.mark_false_alarm([ids[0]], "TICKET-1", datetime.now(UTC))
    out = tmp_path / "dataset"
    s = export_dataset(src, out, val_fraction=0.3)
    info = check_det_dataset(str(s.data_yaml), autodownload=False)
    assert info["nc"] == 5 and info["names"] == {0: "car", 1: "truck", 2: "water", 3: "bin", 4: "garbage"}
    assert (s.images["train"] + s.images["val"], s.images["val"] >= 1, s.images["train"] >= 1) == (
        5,
        True,
        True,
    )
    frames = {f"{f.camera_id}_{p.stem}.txt": f for p, f in read_frames(src)}
    labels = labels_of(out)
    assert set(labels) == set(frames)
    car_line = "0 0.200000 0.650000 0.200000 0.300000"  # CAR, normalised xywh, class `car`
    for name, f in frames.items():
        if f.false_alarm:
            assert labels[name] == []  # the false vehicle is gone: a negative
        elif f.camera_id == "cam-2":
            assert labels[name] == [car_line, "3 0.750000 0.550000 0.100000 0.300000"]  # + borderline bin
        else:
            assert labels[name] == [car_line]
    assert (s.boxes, s.false_alarm_frames, s.removed_boxes, s.borderline_boxes) == (5, 1, 1, 1)
    readme = (out / "README.txt").read_text()
    assert "CVAT" in readme and "Label Studio" in readme and str(s.data_yaml) in readme
    # the same frames split the same way again
    again = export_dataset(src, tmp_path / "again", val_fraction=0.3)
    assert labels_of(tmp_path / "again") == labels and again.images == s.images
    assert sorted(p.name for p in (out / "images" / "val").iterdir()) == sorted(
        p.name for p in (tmp_path / "again" / "images" / "val").iterdir()
    )


def test_export_refuses_to_overwrite_and_names_the_fix(tmp_path: Path) -> None:
    src, _ = kept_frames(tmp_path, 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("corrected")
    with pytest.raises(DatasetError, match="--overwrite"):
        export_dataset(src, tmp_path / "out")
    with pytest.raises(DatasetError, match="no kept frames"):
        export_dataset(tmp_path / "out", tmp_path / "new")
    found = export_dataset(src, tmp_path / "out", classes="found", overwrite=True)
    assert found.names == ["bin", "car"]


def test_splits_keep_an_event_together_and_never_leave_a_split_empty() -> None:
    groups = ["ev-a", "ev-a", "ev-b", "ev-c"]
    splits = assign_splits(groups, 0.0)
    assert splits[0] == splits[1] and set(splits) == {"train", "val"}
    assert assign_splits(["only", "only"], 0.5) in (["train", "train"], ["val", "val"])


def test_cli_writes_the_dataset(tmp_path: Path) -> None:
    from gridgate.cli import app

    src, _ = kept_frames(tmp_path, 2)
    out = tmp_path / "ds"
    res = CliRunner().invoke(app, ["detectors", "dataset", "--from", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "data.yaml").is_file() and len(list((out / "labels").rglob("*.txt"))) == 3
    bad = CliRunner().invoke(app, ["detectors", "dataset", "--from", str(src), "--out", str(out)])
    assert bad.exit_code == 2 and "--overwrite" in bad.output
