"""The evidence pack's parts without a camera or broker: the clip ring's bounds, the clip's frame
slots and encoding, retention (ended events first, then the oldest open, and max_age_days), the
manifest and its verification, and the gateway's check of evidence files against hostile input."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.clip import ClipFrame, ClipRing, encode_mp4, frame_slots
from edge.config import EvidenceConfig
from edge.events import OpenEvent
from edge.evidence import EvidenceStore, Picture
from edge.evidence_pack import EvidencePacks
from gateway.edge_ingest import evidence_problem
from gridgate.manifest import Manifest, file_entry, parse_manifest, verify_manifest
from gridgate.models import Severity
from gridgate.topics import EdgeTopic

T0 = 1_780_000_000.0
DAY = 86_400.0


def noise(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# -- the clip ring ---------------------------------------------------------------------------------


def test_clip_ring_keeps_the_last_seconds_downscaled() -> None:
    ring = ClipRing(seconds=3.0, max_bytes=64 * 1024 * 1024, max_width=320, quality=70)
    for i in range(50):  # 10 s at 5 fps
        ring.add(T0 + i / 5, noise(1280, 720, i % 3))
    assert ring.frames[-1].ts - ring.frames[0].ts <= 3.0 and len(ring) == 16
    assert ring.bytes == sum(len(f.jpeg) for f in ring.frames)
    first = ring.frames[0].jpeg
    import cv2

    assert cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (180, 320)
    assert [f.ts for f in ring.between(T0 + 8.0, T0 + 9.0)] == pytest.approx(
        [T0 + 8 + k / 5 for k in range(6)]
    )


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=40),
    seconds=st.floats(0.5, 5.0),
    max_kb=st.integers(300, 2000),
)
def test_clip_ring_stays_within_seconds_and_bytes(steps: list[float], seconds: float, max_kb: int) -> None:
    ring = ClipRing(seconds=seconds, max_bytes=max_kb * 1024, max_width=640, quality=90)
    ts = T0
    for i, dt in enumerate(steps):
        ts += dt
        ring.add(ts, noise(640, 360, i))  # noise: ~200 KB a frame, so the byte cap bites too
        assert ring.bytes <= ring.max_bytes
        if ring.frames:
            assert ring.frames[-1].ts - ring.frames[0].ts <= seconds + 1e-9
            times = [f.ts for f in ring.frames]
            assert times == sorted(set(times))


@settings(max_examples=200)
@given(
    gaps=st.lists(st.floats(0.01, 3.0), max_size=60),
    fps=st.sampled_from([1.0, 2.5, 5.0, 15.0]),
)
def test_frame_slots_span_the_frames_at_constant_fps(gaps: list[float], fps: float) -> None:
    times = [T0]
    for g in gaps:
        times.append(times[-1] + g)
    slots = frame_slots(times, fps)
    assert len(slots) == int((times[-1] - times[0]) * fps + 1e-6) + 1
    assert slots[0] == 0 and slots == sorted(slots)
    for k, i in enumerate(slots):  # each slot shows the latest frame at or before it
        assert times[i] <= times[0] + k / fps + 1e-6
        assert i + 1 == len(times) or times[i + 1] > times[0] + k / fps - 1e-6
    assert frame_slots([], fps) == []


def test_encode_mp4_lasts_what_the_frames_span(tmp_path: Path) -> None:
    import cv2

    frames = []
    for i in [*range(0, 5), *range(8, 11)]:  # 0.0-2.0 s at 5 fps with three frames dropped
        _, buf = cv2.imencode(".jpg", noise(321, 181, i))  # odd sizes: scaled to even for yuv420p
        frames.append(ClipFrame(T0 + i / 5, buf.tobytes()))
    data = encode_mp4(frames, 5.0, 30)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    )
    assert float(json.loads(out.stdout)["format"]["duration"]) == pytest.approx(2.2, abs=0.21)
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # +faststart: index first
    with pytest.raises(ValueError, match="no frames"):
        encode_mp4([], 5.0, 30)


# -- retention ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def pic(kb: int) -> Picture:
    return Picture("stopped.jpg", T0, b"\xff\xd8" + b"\0" * (kb * 1024 - 2))


def test_retention_removes_ended_events_first_then_the_oldest_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = EvidenceStore(tmp_path / "ev", EvidenceConfig(max_bytes=1024 * 1024), wall=clock)
    for name in ("open-old", "ended-1", "open-mid", "ended-2"):
        clock.now += 10
        store.save("cam1", name, pic(250))
    store.mark_ended("cam1", "ended-1")
    store.mark_ended("cam1", "ended-2")
    left = lambda: sorted(p.name for p in (tmp_path / "ev" / "cam1").iterdir())  # noqa: E731
    assert left() == ["ended-1", "ended-2", "open-mid", "open-old"]  # 1000 KB: within the quota
    caplog.set_level("INFO", logger="gridgate.edge.evidence")
    clock.now += 10
    store.save("cam1", "open-new", pic(300))  # over: the ended ones go, oldest first
    assert left() == ["open-mid", "open-new", "open-old"]
    removed = [r.getMessage() for r in caplog.records if "event=evidence_removed" in r.getMessage()]
    assert len(removed) == 2 and "event_id=ended-1 reason=quota ended=True" in removed[0]
    assert "event_id=ended-2" in removed[1]
    clock.now += 10
    store.save("cam1", "open-newer", pic(300))  # no ended one left: the oldest open goes
    assert left() == ["open-mid", "open-new", "open-newer"]
    assert store.total_bytes <= 1024 * 1024 and store.deleted == 3
    # a restart knows which are ended by their manifest, and keeps the order by time
    (tmp_path / "ev" / "cam1" / "open-newer" / "manifest.json").write_bytes(b"{}")
    again = EvidenceStore(tmp_path / "ev", EvidenceConfig(max_bytes=1024 * 1024), wall=clock)
    assert again.total_bytes == store.total_bytes + 2
    again.save("cam1", "later", pic(300))
    assert left() == ["later", "open-mid", "open-new"]  # the ended one went before the older open


def test_retention_deletes_folders_past_max_age(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    cfg = EvidenceConfig(max_age_days=30)
    store = EvidenceStore(tmp_path / "ev", cfg, wall=clock)
    store.save("cam1", "E-old", pic(1))
    clock.now += 20 * DAY
    store.save("cam2", "E-young", pic(1))
    clock.now += 11 * DAY  # E-old is 31 days old, E-young 11
    caplog.set_level("INFO", logger="gridgate.edge.evidence")
    store.sweep()
    assert not (tmp_path / "ev" / "cam1").exists()  # the camera's empty folder goes too
    assert (tmp_path / "ev" / "cam2" / "E-young" / "stopped.jpg").is_file()
    assert any("event_id=E-old reason=age" in r.getMessage() for r in caplog.records)
    assert store.total_bytes == 1024


# -- the pack's shared state -----------------------------------------------------------------------


def test_an_end_waits_for_its_clip() -> None:
    packs = EvidencePacks()
    ev = OpenEvent("E1", "illegal_parking", "gate", T0, T0, Severity.major)
    assert packs.defer_end("E1", "args") is False  # no clip coming: send at once
    packs.clip_started(ev)
    assert packs.event("E1") is ev and packs.defer_end("E1", "end-args") is True
    packs.clip_written("E1", (T0, T0 + 20))
    assert packs.clip_finished("E1") == "end-args"
    assert packs.defer_end("E1", "again") is False  # the clip is done: no more waiting
    assert packs.finish("E1") == (T0, T0 + 20) and len(packs) == 0


# -- the manifest ----------------------------------------------------------------------------------


def write_pack(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "stopped.jpg").write_bytes(b"\xff\xd8" + bytes(range(256)) * 4)
    (folder / "clip.mp4").write_bytes(b"\0\0\0\x18ftypisom" + b"\1" * 5000)
    at = datetime.fromtimestamp(T0, UTC)
    m = Manifest(
        edge_id="edge-1",
        camera_id="cam1",
        event_id=folder.name,
        kind="illegal_parking",
        zone="gate",
        started_at=at,
        ended_at=at,
        created_at=at,
        files=[
            file_entry(folder / "stopped.jpg", taken_at=at),
            file_entry(folder / "clip.mp4", first_frame_at=at, last_frame_at=at),
        ],
    )
    (folder / "manifest.json").write_text(m.model_dump_json())


def test_verify_manifest_names_what_changed(tmp_path: Path) -> None:
    folder = tmp_path / "E1"
    write_pack(folder)
    assert verify_manifest(folder) == []
    data = bytearray((folder / "clip.mp4").read_bytes())
    data[100] ^= 0x01  # one bit of one byte
    (folder / "clip.mp4").write_bytes(bytes(data))
    assert verify_manifest(folder) == ["clip.mp4: SHA-256 differs from the manifest's (file changed)"]
    (folder / "clip.mp4").write_bytes(bytes(data) + b"x")
    assert verify_manifest(folder)[0].startswith("clip.mp4: 5013 bytes, the manifest says 5012")
    (folder / "clip.mp4").unlink()
    (folder / "added.jpg").write_bytes(b"\xff\xd8")
    assert verify_manifest(folder) == [
        f"clip.mp4: listed in the manifest but missing from {folder}",
        f"added.jpg: in {folder} but not listed in the manifest",
    ]
    (folder / "manifest.json").write_text('{"version": 1, "files": [{"name": "../../etc/passwd"}]}')
    (problem,) = verify_manifest(folder)
    assert "not a valid manifest" in problem and "edge_id" in problem
    (folder / "manifest.json").unlink()
    assert "no manifest" in verify_manifest(folder)[0]


@settings(max_examples=300)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_parse_manifest_refuses_hostile_input_with_a_value_error(data: bytes) -> None:
    try:
        parse_manifest(data)
    except ValueError as exc:
        assert str(exc)


@settings(max_examples=300)
@given(
    name=st.sampled_from(["clip.mp4", "manifest.json", "stopped.jpg", "x.jpeg", "notes.txt", "a.png"]),
    payload=st.binary(max_size=200),
)
def test_gateway_evidence_check_never_raises(name: str, payload: bytes) -> None:
    et = EdgeTopic("edge-1", "evidence", "E1", name)
    problem = evidence_problem(name, payload, et)
    if name in ("notes.txt", "a.png"):
        assert problem is not None and "must be a .jpg picture" in problem
    if name == "clip.mp4":
        assert (problem is None) == (payload[4:8] == b"ftyp")


def test_gateway_refuses_a_manifest_of_another_event(tmp_path: Path) -> None:
    write_pack(tmp_path / "E1")
    data = (tmp_path / "E1" / "manifest.json").read_bytes()
    assert (
        evidence_problem("manifest.json", data, EdgeTopic("edge-1", "evidence", "E1", "manifest.json"))
        is None
    )
    problem = evidence_problem("manifest.json", data, EdgeTopic("edge-1", "evidence", "E2", "manifest.json"))
    assert problem is not None and "not the topic's" in problem


def test_cli_evidence_verify(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridgate.cli import app

    folder = tmp_path / "E1"
    write_pack(folder)
    runner = CliRunner()
    ok = runner.invoke(app, ["evidence", "verify", str(folder)])
    assert ok.exit_code == 0, ok.output
    (folder / "stopped.jpg").write_bytes(b"\xff\xd8changed")
    bad = runner.invoke(app, ["evidence", "verify", str(folder)])
    assert bad.exit_code == 1 and "stopped.jpg" in bad.output
    assert runner.invoke(app, ["evidence", "verify", str(tmp_path / "nope")]).exit_code == 2
