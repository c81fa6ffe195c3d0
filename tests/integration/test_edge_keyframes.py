"""Key-frame mode (`capture.keyframes_only`) through real ffmpeg: each key frame of the stream
reaches the worker once, at its own position, and nothing else does.

The clip has B-frames (libx264's default), as most encoders' streams do: that is what made ffmpeg's
constant-rate rawvideo output repeat every key frame to fill the gap to the next one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge.capture import Capture
from edge.config import CaptureConfig
from tests.servers import wait_until

FPS, GOP, SECONDS = 15, 15, 6
W, H = 320, 180

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "ffmpeg"], capture_output=True).returncode != 0, reason="needs ffmpeg"
)


def level(i: int) -> int:
    """Frame i is a flat grey of this level, so a decoded picture says which frame it was."""
    return 20 + 2 * i


def write_numbered_clip(path: Path) -> Path:
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray"]
    argv += ["-s", f"{W}x{H}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "veryfast"]
    argv += ["-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    frames = b"".join(np.full((H, W), level(i), np.uint8).tobytes() for i in range(FPS * SECONDS))
    subprocess.run([*argv, "-y", str(path)], input=frames, check=True)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=has_b_frames", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(probe.stdout.strip()) > 0, "the clip must have B-frames, as camera streams often do"
    return path


def read_all(capture: Capture) -> list[tuple[float, float]]:
    """(position in the file, mean grey) of every frame until the file ends."""
    got: list[tuple[float, float]] = []
    base: float | None = None

    def drain() -> bool:
        nonlocal base
        while (frame := capture.take(timeout=0.2)) is not None:
            base = frame.ts if base is None else base
            got.append((round(frame.ts - base, 3), float(frame.image.mean())))
        return capture.ended

    wait_until(drain, timeout=60, what="the key-frame capture to reach the end of the file")
    drain()
    return got


@pytest.mark.parametrize("offset_s", [0.0, 2.5])
def test_each_key_frame_once_at_its_position(tmp_path: Path, offset_s: float) -> None:
    clip = write_numbered_clip(tmp_path / "numbered.mp4")
    cfg = CaptureConfig(
        backend="ffmpeg", keyframes_only=True, realtime=False, loop=False, start_offset_s=offset_s
    )
    capture = Capture("kf", str(clip), cfg).start()
    try:
        got = read_all(capture)
    finally:
        capture.stop()
    keys = [i for i in range(FPS * SECONDS) if i % GOP == 0 and i / FPS >= offset_s]
    assert [pos for pos, _ in got] == [round((i - keys[0]) / FPS, 3) for i in keys], got
    for (_, grey), i in zip(got, keys, strict=True):
        assert abs(grey - level(i)) <= 3, f"frame at {i / FPS:.1f} s is not key frame {i}: grey {grey:.1f}"
    assert capture.stats.dropped == 0
