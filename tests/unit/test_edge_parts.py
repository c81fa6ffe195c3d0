"""Edge parts without video or broker: disk queue, motion gate, event phases, evidence retention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detectors.rules import Highlight, Signal
from edge.config import EvidenceConfig, MotionConfig
from edge.events import EventEmitter
from edge.evidence import EvidenceStore, FrameRing, HeldPictures, Picture, render
from edge.motion import MotionGate
from edge.queue import DiskQueue, Outgoing
from edge.stats import CameraCounters, percentile
from gridgate.models import EdgeEventMessage, Location, Severity

T0 = 1_800_000_000.0


# -- disk queue ------------------------------------------------------------------------------------


def test_queue_keeps_order_and_seq_across_restart(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite")
    seqs = [q.put([], lambda s: Outgoing("t/events", json.dumps({"seq": s}).encode())) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    rows = q.peek(0, 10)
    q.ack([rows[0].id, rows[1].id])
    q.close()
    q = DiskQueue(tmp_path / "q.sqlite")  # a restart: what was not acknowledged is still there, in order
    rows = q.peek(0, 10)
    assert [json.loads(r.payload)["seq"] for r in rows] == [3, 4, 5]
    assert q.depth()[0] == 3
    assert q.put([], lambda s: Outgoing("t/events", b"x")) == 6  # seq never goes back
    assert [r.id for r in q.peek(rows[0].id, 2)] == [rows[1].id, rows[2].id]


def test_queue_evidence_before_event_atomically(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite")
    q.put([Outgoing("t/evidence/e1/a.jpg", b"jpeg", "evidence")], lambda s: Outgoing("t/events", b"ev"))
    assert [r.kind for r in q.peek(0, 10)] == ["evidence", "event"]

    def broken(seq: int) -> Outgoing:
        raise ValueError("bad message")

    with pytest.raises(ValueError):
        q.put([Outgoing("t/evidence/e2/a.jpg", b"jpeg", "evidence")], broken)
    assert q.depth()[0] == 2  # the picture of a message that failed is not left behind


def test_queue_cap_drops_pictures_first(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q.sqlite", max_bytes=1024 * 1024)
    for i in range(6):
        q.put(
            [Outgoing(f"t/evidence/e{i}/a.jpg", b"\0" * 300_000, "evidence")],
            lambda s: Outgoing("t/events", b"e"),
        )
    kinds = [r.kind for r in q.peek(0, 100)]
    assert kinds.count("event") == 6  # every event message kept
    assert q.depth()[1] <= 1024 * 1024 and q.dropped >= 3


# -- motion gate -----------------------------------------------------------------------------------


def scene(shift: int = 0) -> np.ndarray:
    img = np.full((360, 640, 3), 90, np.uint8)
    img[200:260, 100 + shift : 180 + shift] = 230  # a car
    return img


def test_motion_gate_rates() -> None:
    gate = MotionGate(MotionConfig(hold_s=0), detect_fps=2, refresh_s=10)
    still = scene()
    decisions = [gate.decide(still, T0 + i * 0.2) for i in range(100)]  # 20 s still at 5 fps
    detect_times = [T0 + i * 0.2 for i, d in enumerate(decisions) if d.detect]
    assert detect_times[0] == T0  # first frame
    assert [round(t - T0, 1) for t in detect_times] == [0.0, 10.0]  # then once per refresh_s
    assert not any(d.motion for d in decisions[1:])
    moving = [gate.decide(scene(shift=i * 6), T0 + 20 + i * 0.2) for i in range(1, 26)]  # 5 s of motion
    assert all(d.motion for d in moving)
    assert sum(d.detect for d in moving) == 10  # detect_fps 2 over 5 s


def test_motion_ignores_noise() -> None:
    gate = MotionGate(MotionConfig(), detect_fps=2, refresh_s=100)
    rng = np.random.default_rng(1)
    gate.decide(scene(), T0)
    for i in range(1, 10):
        noisy = np.clip(scene().astype(np.int16) + rng.integers(-6, 7, (360, 640, 3)), 0, 255).astype(
            np.uint8
        )
        assert not gate.decide(noisy, T0 + i).motion


# -- event phases ----------------------------------------------------------------------------------


def sig(action: str, t: float, significant: bool = False, sev: Severity = Severity.major) -> Signal:
    return Signal("ponding", "road", "road:1", action, t, T0, sev, 0.9, {"water_ratio": 0.2}, significant)  # type: ignore[arg-type]


def test_emitter_new_update_end_rates() -> None:
    em = EventEmitter(update_min_s=5, update_max_s=60, new_id=lambda: "EV1")
    phases = []
    d = em.on_signal(sig("raise", T0))
    assert d is not None and d.phase == "new"
    for i in range(1, 150):  # holds every second for 150 s, one significant at 2 s
        d = em.on_signal(sig("hold", T0 + i, significant=(i == 2)))
        if d is not None:
            phases.append((d.phase, i))
    # the significant change waits for update_min_s; then heartbeats every update_max_s
    assert phases == [("update", 5), ("update", 65), ("update", 125)]
    d = em.on_signal(sig("clear", T0 + 150))
    assert d is not None and d.phase == "end"
    msg = d.build(7, "edge-1", "cam1", Location(lat=31.2, lon=121.4))
    assert isinstance(msg, EdgeEventMessage) and msg.ended_at is not None and msg.seq == 7
    assert em.on_signal(sig("hold", T0 + 151)) is None and not em.open


def test_emitter_severity_change_is_significant() -> None:
    em = EventEmitter(update_min_s=5, update_max_s=60)
    em.on_signal(sig("raise", T0))
    assert em.on_signal(sig("hold", T0 + 6, sev=Severity.critical)).phase == "update"  # type: ignore[union-attr]


# -- evidence --------------------------------------------------------------------------------------


def test_render_and_retention(tmp_path: Path) -> None:
    jpeg = render(
        scene(),
        [Highlight((0.15, 0.55, 0.3, 0.75), "vehicle", 4)],
        [(0.1, 0.5), (0.5, 0.5), (0.5, 0.9)],
        "cam1",
        1280,
        85,
    )
    assert jpeg[:2] == b"\xff\xd8"
    store = EvidenceStore(tmp_path / "ev", EvidenceConfig(max_bytes=1024 * 1024))
    pic = Picture("stopped.jpg", T0, b"\xff\xd8" + b"\0" * 400_000)
    refs = [store.save("cam1", f"E{i}", pic) for i in range(5)]
    assert refs[0].name == "stopped.jpg" and refs[0].bytes == 400_002
    assert store.total_bytes <= 1024 * 1024
    left = sorted(p.parent.name for p in (tmp_path / "ev").rglob("*.jpg"))
    assert left == ["E3", "E4"]  # the oldest went first, their folders too
    assert not (tmp_path / "ev" / "cam1" / "E0").exists()
    again = EvidenceStore(
        tmp_path / "ev", EvidenceConfig(max_bytes=1024 * 1024)
    )  # restart: counts what is there
    assert again.total_bytes == store.total_bytes


def test_frame_ring_and_held_pictures_bounded() -> None:
    ring = FrameRing(3)
    for i in range(5):
        ring.add(T0 + i, scene(i))
    assert len(ring.frames) == 3
    assert ring.at(T0 + 3.5)[0] == T0 + 3  # type: ignore[index]
    assert ring.at(T0)[0] == T0 + 2  # type: ignore[index]  # gone: the oldest kept
    held = HeldPictures(max_keys=2)
    for k in "abc":
        held.put(k, Picture("stopped.jpg", T0, b"x"))
    assert len(held) == 2 and held.pop("a") == [] and len(held.pop("c")) == 1


def test_percentiles() -> None:
    c = CameraCounters(window=100)
    for i in range(1, 101):
        c.record(float(i), 1.0)
    assert percentile(c.inference_ms, 50) == pytest.approx(50.5, abs=0.5)
    assert percentile(c.inference_ms, 95) == pytest.approx(95, abs=1)
    assert percentile([], 50) is None
