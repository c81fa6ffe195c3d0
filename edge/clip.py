"""The event clip: a per-camera ring of recent frames (small JPEGs in memory, bounded by seconds and
bytes) and an ffmpeg encoder thread that turns a window of it into `clip.mp4` (H.264, yuv420p,
`+faststart`), so the analysis loop never waits on encoding.
"""

from __future__ import annotations

import logging
import math
import queue
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.config import ClipConfig
from edge.images import shrink_to_width

log = logging.getLogger("gridgate.edge.clip")


@dataclass(frozen=True, slots=True)
class ClipFrame:
    ts: float
    jpeg: bytes


class ClipRing:
    """The last `seconds` of one camera's frames, JPEG-compressed, never more than `max_bytes`."""

    def __init__(self, seconds: float, max_bytes: int, max_width: int, quality: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.max_width = max_width
        self.quality = quality
        self.frames: deque[ClipFrame] = deque()
        self.bytes = 0

    @classmethod
    def for_config(cls, cfg: ClipConfig) -> ClipRing:
        return cls(cfg.pre_s + cfg.post_s + 1.0, cfg.ring_max_bytes, cfg.max_width, cfg.jpeg_quality)

    def add(self, ts: float, image: np.ndarray) -> None:
        if self.frames and ts <= self.frames[-1].ts:
            return  # a repeated or older frame (a file looping): the window stays in time order
        img = shrink_to_width(image, self.max_width)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("JPEG encoding of a clip frame failed")
        frame = ClipFrame(ts, buf.tobytes())
        self.frames.append(frame)
        self.bytes += len(frame.jpeg)
        while self.frames and (self.bytes > self.max_bytes or ts - self.frames[0].ts > self.seconds + 1e-9):
            self.bytes -= len(self.frames.popleft().jpeg)

    def between(self, start: float, end: float) -> list[ClipFrame]:
        return [f for f in self.frames if start - 1e-6 <= f.ts <= end + 1e-6]

    def __len__(self) -> int:
        return len(self.frames)


def frame_slots(times: Sequence[float], fps: float) -> list[int]:
    """For each slot of a constant `fps` from the first frame to the last, the frame shown in it (the
    latest at or before the slot): the clip lasts what the frames span, whatever was dropped."""
    if not times:
        return []
    n = math.floor((times[-1] - times[0]) * fps + 1e-6) + 1
    out, i = [], 0
    for k in range(n):
        t = times[0] + k / fps
        while i + 1 < len(times) and times[i + 1] <= t + 1e-6:
            i += 1
        out.append(i)
    return out


def encode_mp4(frames: Sequence[ClipFrame], fps: float, timeout_s: float) -> bytes:
    """The frames as an H.264 MP4 at a constant `fps`; raises RuntimeError with ffmpeg's words."""
    if not frames:
        raise ValueError("no frames to encode")
    slots = frame_slots([f.ts for f in frames], fps)
    with tempfile.TemporaryDirectory(prefix="gridgate-clip-") as tmp:
        out = Path(tmp) / "clip.mp4"
        argv = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "image2pipe", "-c:v", "mjpeg", "-framerate", f"{fps:g}", "-i", "pipe:0",
            "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast",
            "-pix_fmt", "yuv420p", "-r", f"{fps:g}", "-movflags", "+faststart", "-y", str(out),
        ]  # fmt: skip
        stdin = b"".join(frames[i].jpeg for i in slots)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            msg = f"ffmpeg took longer than {timeout_s:g} s (evidence.clip.encode_timeout_s)"
            raise RuntimeError(msg) from None
        if proc.returncode != 0:
            raise RuntimeError(
                f"ffmpeg exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}"
            )
        return out.read_bytes()


@dataclass(frozen=True, slots=True)
class ClipJob:
    camera_id: str
    event_id: str
    frames: list[ClipFrame]
    fps: float


ClipDone = Callable[[ClipJob, bytes | None], None]  # the MP4, or None when it could not be made


class ClipWriter:
    """One background thread encoding clips in order; `done` runs on that thread."""

    def __init__(self, timeout_s: float, done: ClipDone) -> None:
        self.timeout_s = timeout_s
        self.done = done
        self._jobs: queue.Queue[ClipJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, job: ClipJob) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-clips", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def pending(self) -> int:
        return self._jobs.qsize()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                data: bytes | None = encode_mp4(job.frames, job.fps, self.timeout_s)
            except (RuntimeError, ValueError, OSError) as exc:
                log.warning(
                    "event=clip_failed camera=%s event_id=%s frames=%d error=%r",
                    job.camera_id,
                    job.event_id,
                    len(job.frames),
                    str(exc),
                )
                data = None
            try:
                self.done(job, data)
            except Exception:
                log.exception("event=clip_done_failed camera=%s event_id=%s", job.camera_id, job.event_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the clips already submitted, then end the thread."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None
