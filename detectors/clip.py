"""The demo camera clip: a car parks in a no-parking zone, a puddle grows, a bin overflows.

The clip is drawn with the same primitives the detector was trained on (`detectors.synth`), frame
by frame from clip time alone, so it is identical on every machine. `DEMO_ZONES` is the zone
geometry (relative 0-1 coordinates) of this camera, shared by the demo, the tests and
`DEMO_CAMERA_YAML`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.synth import Bin, Heap, Label, Layout, Puddle, Scene, Vehicle, draw_background, render

WIDTH, HEIGHT, FPS = 1280, 720, 15
DURATION_S = 120.0

DEMO_LAYOUT = Layout(
    far_walk_y=0.28,
    road_top_y=0.38,
    road_bottom_y=0.80,
    sky=(215, 190, 160),
    facade=(130, 140, 165),
    walk=(160, 163, 168),
    asphalt=(88, 88, 92),
    lanes=2,
    dashed=True,
)
BACKGROUND_SEED = 20240611


@dataclass(frozen=True)
class Timeline:
    """When things happen in the clip, in seconds of clip time."""

    pass_through: tuple[float, float] = (2.0, 8.0)  # a car crosses the no-parking zone without stopping
    park_arrive: tuple[float, float] = (12.0, 20.0)  # the parking car drives in and stops
    park_leave: tuple[float, float] = (110.0, 116.0)  # and drives off again
    truck_pass: tuple[float, float] = (35.0, 45.0)  # a truck in the far lane
    puddle_grow: tuple[float, float] = (30.0, 70.0)  # the puddle grows from nothing to full size
    bin_fill: tuple[float, float] = (50.0, 65.0)  # garbage piles up on and around the bin
    pedestrian: tuple[float, float] = (0.0, 60.0)


TIMELINE = Timeline()

# Geometry in pixels of the 1280x720 frame (everything scales with the frame).
PARK_X = 0.52  # left edge of the parked car, relative
CAR_H = 0.17  # near-lane car height, relative to frame height
FAR_CAR_H = 0.12
PUDDLE_CENTRE = (0.24, 0.665)
PUDDLE_RX, PUDDLE_RY = 0.17, 0.075  # relative to width, height at full size
BIN_BOX = (0.855, 0.95, 0.075, 0.2)  # x, bottom y, width (rel. width), height (rel. height)

DEMO_ZONES: list[dict[str, Any]] = [
    {
        "name": "kerb-no-parking",
        "type": "no_parking",
        "points": [[0.45, 0.66], [0.86, 0.66], [0.86, 0.83], [0.45, 0.83]],
        "dwell_s": 60,
    },
    {
        "name": "road-ponding",
        "type": "ponding",
        "points": [[0.04, 0.56], [0.44, 0.56], [0.44, 0.78], [0.04, 0.78]],
        "persist_s": 10,
        "clear_s": 10,
    },
    {
        "name": "bin-corner",
        "type": "bin_overflow",
        "points": [[0.80, 0.62], [0.98, 0.62], [0.98, 0.99], [0.80, 0.99]],
        "persist_s": 10,
        "clear_s": 10,
    },
]
DEMO_LOCATION = {"lat": 30.2533, "lon": 120.1331}  # inside grid G001 of config/grids.geojson

DEMO_CAMERA_YAML = """\
# cameras.yaml fragment for the demo clip (`gridgate detectors clip` writes var/demo/street.mp4)
cameras:
  - id: demo-street
    url: var/demo/street.mp4
    capture: {loop: true}
    location: {lat: 30.2533, lon: 120.1331}
    zones:
      - name: kerb-no-parking
        type: no_parking
        points: [[0.45, 0.66], [0.86, 0.66], [0.86, 0.83], [0.45, 0.83]]
        dwell_s: 60
      - name: road-ponding
        type: ponding
        points: [[0.04, 0.56], [0.44, 0.56], [0.44, 0.78], [0.04, 0.78]]
        persist_s: 10
        clear_s: 10
      - name: bin-corner
        type: bin_overflow
        points: [[0.80, 0.62], [0.98, 0.62], [0.98, 0.99], [0.80, 0.99]]
        persist_s: 10
        clear_s: 10
"""


def _ramp(t: float, span: tuple[float, float]) -> float:
    """0 before span, 1 after it, linear in between."""
    a, b = span
    return float(np.clip((t - a) / (b - a), 0.0, 1.0))


def _ease_out(u: float) -> float:
    return 1 - (1 - u) ** 2


class DemoClip:
    """Frames of the demo clip as a function of clip time."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT, timeline: Timeline = TIMELINE) -> None:
        self.width, self.height, self.tl = width, height, timeline
        self.layout = DEMO_LAYOUT
        self._background = draw_background(Scene(width, height, self.layout, BACKGROUND_SEED))
        rng = np.random.default_rng(BACKGROUND_SEED)
        self._noise = [rng.normal(0, 2.5, (height, width, 1)).astype(np.float32) for _ in range(4)]
        self._cache: dict[str, tuple[np.ndarray, list[Label]]] = {}

    def _near_y(self) -> float:
        return self.layout.lane_bottom_y(1) * self.height

    def scene(self, t: float) -> Scene:
        """What is on the street at clip time t."""
        w, h, tl = self.width, self.height, self.tl
        sc = Scene(w, h, self.layout, BACKGROUND_SEED)
        car_h = CAR_H * h
        car_w = car_h * 2.6
        near_y = self._near_y()
        # the car that only passes through the no-parking zone (right to left)
        if tl.pass_through[0] <= t <= tl.pass_through[1]:
            u = _ramp(t, tl.pass_through)
            x = w * 1.05 - u * (w * 1.1 + car_w)
            sc.vehicles.append(
                Vehicle("car", x, near_y, car_w * 0.95, car_h * 0.95, (40, 40, 170), False, style=1)
            )
        # the car that parks: drives in from the left, stops at PARK_X, later drives off to the right
        if tl.park_arrive[0] <= t <= tl.park_leave[1]:
            park_x = PARK_X * w
            if t < tl.park_arrive[1]:
                x = -car_w + _ease_out(_ramp(t, tl.park_arrive)) * (park_x + car_w)
            elif t < tl.park_leave[0]:
                x = park_x
            else:
                x = park_x + _ramp(t, tl.park_leave) ** 2 * (w - park_x + 10)
            sc.vehicles.append(Vehicle("car", x, near_y, car_w, car_h, (235, 235, 235), True, style=0))
        # a truck in the far lane
        if tl.truck_pass[0] <= t <= tl.truck_pass[1]:
            th = FAR_CAR_H * h * 1.9
            tw = th * 2.6
            x = w * 1.02 - _ramp(t, tl.truck_pass) * (w * 1.04 + tw)
            y = self.layout.lane_bottom_y(0) * h
            sc.vehicles.append(
                Vehicle("truck", x, y, tw, th, (40, 120, 200), False, (200, 200, 205), style=0)
            )
        # the puddle
        g = _ramp(t, tl.puddle_grow)
        if g > 0.02:
            s = 0.15 + 0.85 * g
            sc.puddles.append(
                Puddle(PUDDLE_CENTRE[0] * w, PUDDLE_CENTRE[1] * h, PUDDLE_RX * w * s, PUDDLE_RY * h * s, 7, 5)
            )
        # the bin, overflowing as garbage piles up
        bx, by, bw, bh = BIN_BOX[0] * w, BIN_BOX[1] * h, BIN_BOX[2] * w, BIN_BOX[3] * h
        fill = _ramp(t, tl.bin_fill)
        sc.bins.append(Bin(bx, by, bw, bh, (40, 110, 40), lid_open=fill > 0))
        pieces = round(fill * 22)
        if pieces > 0:
            sc.heaps.append(Heap(bx + bw * 0.5, by - bh * 0.92, bw * 1.0, bh * 0.32, pieces, 11))
        # a pedestrian walking along the far pavement
        if tl.pedestrian[0] <= t <= tl.pedestrian[1]:
            px = -20 + _ramp(t, tl.pedestrian) * (w + 40)
            sc.pedestrians.append((px, self.layout.road_top_y * h - 2, 0.17 * h, 3))
        return sc

    def frame(self, t: float) -> tuple[np.ndarray, list[Label]]:
        """The BGR frame at clip time t and the ground truth drawn in it (pixel outlines)."""
        k = round(t * FPS) % len(self._noise)
        scene = self.scene(t)
        key = f"{k}{scene!r}"
        hit = self._cache.get(key)
        if hit is None:
            # while nothing moves, frames repeat: most of the clip renders from this cache
            hit = render(scene, self._background, self._noise[k])
            if len(self._cache) >= 2 * len(self._noise):
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = hit
        return hit[0].copy(), list(hit[1])


def _ffmpeg_writer(path: Path, width: int, height: int, fps: int) -> subprocess.Popen[bytes] | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    cmd = [
        ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
        "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
        "-crf", "26", "-maxrate", "3M", "-bufsize", "6M", "-g", str(2 * fps),
        "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    try:
        return subprocess.Popen(cmd, stdin=subprocess.PIPE)
    except OSError:
        return None


def write_frames(out: Path, frames: Iterable[np.ndarray], width: int, height: int, fps: int) -> str:
    """Write BGR frames as MP4 (H.264 through ffmpeg, else OpenCV's writer); returns the codec."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    proc = _ffmpeg_writer(out, width, height, fps)
    if proc is not None and proc.stdin is not None:
        for frame in frames:
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
        if proc.wait() == 0:
            return "h264"
        raise RuntimeError(f"ffmpeg could not write {out}")
    codec = "mp4v"
    for fourcc in ("avc1", "H264"):
        probe = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if probe.isOpened():
            probe.release()
            codec = fourcc
            break
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {out}: neither ffmpeg nor OpenCV's writer is usable")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return codec


def write_clip(
    out: Path, duration_s: float = DURATION_S, width: int = WIDTH, height: int = HEIGHT, fps: int = FPS
) -> str:
    """Write the demo clip as MP4 (H.264 through ffmpeg, else OpenCV's writer); returns the codec."""
    clip = DemoClip(width, height)
    frames = round(duration_s * fps)
    return write_frames(out, (clip.frame(i / fps)[0] for i in range(frames)), width, height, fps)
