"""Camera capture: one reader thread per camera that keeps only the newest frame.

Two backends (`capture.backend`, measured in bench/edge.py):
- `ffmpeg`: an ffmpeg subprocess decodes, decimates (`fps=`) and scales before Python sees a
  frame; decoding runs outside the interpreter, so cameras decode on every core.
- `opencv`: `cv2.VideoCapture` with its FFmpeg backend, in-process; frames not needed are only
  grabbed, never converted.

Every stream is opened with timeouts (OpenCV's default wait is 30 s), reopened with capped
exponential backoff, and watched: no frame for `stall_s` and the stream is torn down and reopened.
Frame time: files use the stream position (so tests drive time from the clip), live streams the
wall clock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from edge.config import CaptureConfig

log = logging.getLogger("gridgate.edge.capture")

SourceKind = Literal["rtsp", "http", "file", "device"]
FFMPEG = shutil.which("ffmpeg")
_CV_ENV_LOCK = threading.Lock()  # OPENCV_FFMPEG_CAPTURE_OPTIONS is read at open time, process-wide


class CaptureError(Exception):
    """A stream could not be opened or read; the message names the camera and the URL."""


@dataclass(slots=True)
class Frame:
    camera_id: str
    image: np.ndarray  # BGR, HxWx3
    ts: float  # frame time, epoch seconds
    seq: int  # per camera, increasing from 1
    received: float  # time.monotonic() when the reader got it: latency is measured from here


def source_kind(url: str) -> SourceKind:
    low = url.lower()
    if low.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if low.startswith(("http://", "https://")):
        return "http"
    if low.startswith("device:") or low.startswith("/dev/video"):
        return "device"
    return "file"


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


class _Source:
    """One open stream. `read()` blocks; returns (image, position seconds or None) or None at the end."""

    def read(self) -> tuple[np.ndarray, float | None] | None:
        raise NotImplementedError

    def abort(self) -> None:
        """Called from the watchdog thread: make a blocked `read()` return soon."""

    def close(self) -> None:
        raise NotImplementedError


_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*\S+\s+pts_time:(\S+).*?\bs:(\d+)x(\d+)")


@functools.cache
def _showinfo_checksum_option() -> bool:
    """Whether this ffmpeg's showinfo can skip its per-plane checksums, mean and deviation (4.4+)."""
    if FFMPEG is None:
        return False
    try:
        done = subprocess.run(
            [FFMPEG, "-hide_banner", "-h", "filter=showinfo"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"checksum" in done.stdout + done.stderr


def ffmpeg_filters(cfg: CaptureConfig) -> str:
    """The capture's `-vf`: decimate to decode_fps (not in key-frame mode), scale to `width`, and
    showinfo for each frame's time. Bilinear scaling and showinfo without checksums (which also
    computes each plane's mean and deviation) cost 14 % less CPU than the defaults on a 720p stream;
    swscale widens its bilinear filter when it shrinks, so it does not alias."""
    filters = [] if cfg.keyframes_only else [f"fps={cfg.decode_fps:g}"]
    if cfg.width:
        filters.append(f"scale={cfg.width}:-2:flags=bilinear")
    filters.append("showinfo=checksum=0" if _showinfo_checksum_option() else "showinfo")
    return ",".join(filters)


class FFmpegSource(_Source):
    """`ffmpeg ... -vf fps=F,scale=W:-2,showinfo -f rawvideo pipe:1`; showinfo on stderr gives each
    frame's size and stream time."""

    def __init__(self, url: str, kind: SourceKind, cfg: CaptureConfig, name: str) -> None:
        if FFMPEG is None:
            raise CaptureError(
                f"camera {name}: ffmpeg is not installed (apt-get install ffmpeg); "
                "or set capture.backend: opencv"
            )
        self.name = name
        argv = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "info", "-nostats"]
        us = str(int(cfg.read_timeout_s * 1_000_000))
        if kind == "rtsp":
            argv += ["-rtsp_transport", cfg.rtsp_transport, "-timeout", us]
        elif kind == "http":
            argv += ["-rw_timeout", us, "-reconnect", "0"]
        elif kind == "device":
            argv += ["-f", "v4l2"]
        if kind == "file":
            if cfg.realtime:
                argv += ["-re"]
            if cfg.loop:
                argv += ["-stream_loop", "-1"]
        if cfg.keyframes_only:
            argv += ["-skip_frame", "nokey"]
        if cfg.decode_threads:
            argv += ["-threads", str(cfg.decode_threads)]
        if kind == "file" and cfg.start_offset_s:
            argv += ["-ss", f"{cfg.start_offset_s:.3f}"]
        device = url.split(":", 1)[1] if url.startswith("device:") else url
        if kind == "device" and device.isdigit():
            device = f"/dev/video{device}"
        argv += [
            *("-i", device, "-an", "-sn", "-vf", ffmpeg_filters(cfg)),
            # each filtered frame written once: the rawvideo muxer is constant-rate by default and
            # repeats frames to fill gaps (30 copies of every key frame at GOP 30), so stdout would
            # no longer line up with showinfo's frame count (-vsync: ffmpeg 4.4 to 7.x)
            "-vsync",
            "passthrough",
            "-pix_fmt",
            "bgr24",
            "-f",
            "rawvideo",
            "pipe:1",
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self._infos: deque[tuple[int, float, int, int]] = deque(maxlen=256)
        self._info_cond = threading.Condition()
        self.tail: deque[str] = deque(maxlen=20)
        self._err = threading.Thread(target=self._stderr, name=f"ffmpeg-err-{name}", daemon=True)
        self._err.start()
        self.n = 0
        self.offset = cfg.start_offset_s if kind == "file" else 0.0

    def _stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            m = _SHOWINFO.search(line)
            if m:
                with self._info_cond:
                    self._infos.append(
                        (int(m[1]), float(m[2]) if m[2] != "NOPTS" else float("nan"), int(m[3]), int(m[4]))
                    )
                    self._info_cond.notify_all()
            elif "showinfo" not in line and line.strip():
                self.tail.append(line)
        with self._info_cond:
            self._info_cond.notify_all()

    def _info(self, n: int) -> tuple[float, int, int] | None:
        with self._info_cond:
            while True:
                while self._infos and self._infos[0][0] < n:
                    self._infos.popleft()
                if self._infos and self._infos[0][0] == n:
                    _, pts, w, h = self._infos.popleft()
                    return pts, w, h
                if not self._err.is_alive():
                    return None
                self._info_cond.wait(0.5)

    def read(self) -> tuple[np.ndarray, float | None] | None:
        info = self._info(self.n)
        if info is None:
            return None
        pts, w, h = info
        size = w * h * 3
        assert self.proc.stdout is not None
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            k = self.proc.stdout.readinto(view[got:])
            if not k:
                return None
            got += k
        self.n += 1
        pos = (
            None if pts != pts else pts + self.offset
        )  # -ss restarts the clock at 0: report the file position
        return np.frombuffer(buf, np.uint8).reshape(h, w, 3), pos

    def error_text(self) -> str:
        return " | ".join(self.tail)[-500:]

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        self.abort()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


class OpenCVSource(_Source):
    """cv2.VideoCapture (FFmpeg backend) with open/read timeouts; grabs every frame, converts only
    those due at `decode_fps`."""

    def __init__(self, url: str, kind: SourceKind, cfg: CaptureConfig, name: str) -> None:
        import cv2

        self.cv2 = cv2
        self.cfg = cfg
        self.kind = kind
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(cfg.read_timeout_s * 1000),
        ]
        if cfg.decode_threads:
            params += [cv2.CAP_PROP_N_THREADS, cfg.decode_threads]
        if kind == "device":
            dev = url.split(":", 1)[1] if url.startswith("device:") else url.removeprefix("/dev/video")
            self.cap = cv2.VideoCapture(int(dev) if dev.isdigit() else url, cv2.CAP_ANY)
        else:
            with _CV_ENV_LOCK:
                old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                if kind == "rtsp":
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{cfg.rtsp_transport}"
                try:
                    self.cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
                finally:
                    if old is None:
                        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                    else:
                        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old
        if not self.cap.isOpened():
            self.cap.release()
            raise CaptureError(f"camera {name}: OpenCV could not open {redact(url)}")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if kind == "file" and cfg.start_offset_s:
            self.cap.set(cv2.CAP_PROP_POS_MSEC, cfg.start_offset_s * 1000.0)
        self._aborted = False
        self._next_due: float | None = None
        self._t0 = time.monotonic()
        self._pos0: float | None = None  # position of the first frame: real-time pacing counts from it
        self._loop_offset = 0.0
        self._last_pos = 0.0

    def read(self) -> tuple[np.ndarray, float | None] | None:
        cv2 = self.cv2
        step = 1.0 / self.cfg.decode_fps
        while not self._aborted:
            if not self.cap.grab():
                if self.kind == "file" and self.cfg.loop and self._last_pos > 0:
                    self._loop_offset += self._last_pos + (1.0 / self.fps if self.fps > 0 else 0.0)
                    self._last_pos = 0.0
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                return None
            if self.kind == "file":
                pos = self._loop_offset + self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                self._last_pos = pos - self._loop_offset
                if self.cfg.realtime:
                    if self._pos0 is None:
                        self._pos0, self._t0 = pos, time.monotonic()
                    ahead = (pos - self._pos0) - (time.monotonic() - self._t0)
                    if ahead > 0:
                        time.sleep(ahead)
            else:
                pos = time.monotonic()
            if self._next_due is not None and pos < self._next_due:
                continue
            self._next_due = (self._next_due or pos) + step
            if self._next_due < pos:  # fell behind: do not burst to catch up
                self._next_due = pos + step
            ok, img = self.cap.retrieve()
            if not ok:
                return None
            if self.cfg.width and img.shape[1] != self.cfg.width:
                h = round(img.shape[0] * self.cfg.width / img.shape[1] / 2) * 2
                img = cv2.resize(img, (self.cfg.width, h), interpolation=cv2.INTER_AREA)
            return img, (pos if self.kind == "file" else None)
        return None

    def abort(self) -> None:
        # releasing from another thread while read() runs would crash; the read timeout ends it
        self._aborted = True

    def close(self) -> None:
        self.cap.release()


@dataclass(slots=True)
class CaptureStats:
    frames: int = 0  # frames that reached Python
    taken: int = 0  # frames the worker took
    dropped: int = 0  # frames replaced by a newer one before the worker took them
    opens: int = 0
    failures: int = 0


class Capture:
    """Reads one camera in a thread; `take()` returns the newest frame not yet taken."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        cfg: CaptureConfig,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.camera_id = camera_id
        self.url = url
        self.cfg = cfg
        self.kind = source_kind(url)
        self.wall = wall
        self.stats = CaptureStats()
        self.reconnect_times: deque[float] = deque()  # monotonic, last hour
        self.stall_times: deque[float] = deque()
        self.connected = False
        self.ended = False  # a file that reached its end (loop: false)
        self.last_error = ""
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._source: _Source | None = None
        self._source_lock = threading.Lock()
        self._progress = time.monotonic()
        self._seq = 0
        self._base: float | None = None  # epoch of a file's position 0
        self._threads: list[threading.Thread] = []
        self.fps_window: deque[float] = deque(maxlen=256)  # monotonic receive times

    # -- public -------------------------------------------------------------------------------

    def start(self) -> Capture:
        if self.kind == "file" and not Path(self.url).exists():
            raise CaptureError(
                f"camera {self.camera_id}: file {self.url} does not exist (check cameras[].url)"
            )
        for target, name in ((self._run, "capture"), (self._watchdog, "watchdog")):
            t = threading.Thread(target=target, name=f"{name}-{self.camera_id}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        with self._source_lock:
            if self._source is not None:
                self._source.abort()
        for t in self._threads:
            t.join(timeout=10)

    def take(self, timeout: float = 0.0) -> Frame | None:
        """The newest frame not taken yet (waiting up to `timeout`), or None."""
        with self._cond:
            if self._latest is None and timeout > 0:
                self._cond.wait_for(lambda: self._latest is not None or self._stop.is_set(), timeout)
            frame, self._latest = self._latest, None
            if frame is not None:
                self.stats.taken += 1
                self._cond.notify_all()
            return frame

    def has_frame(self) -> bool:
        return self._latest is not None

    def reconnects_last_hour(self) -> int:
        return self._recent(self.reconnect_times)

    def stalls_last_hour(self) -> int:
        return self._recent(self.stall_times)

    def fps_in(self, window_s: float = 10.0) -> float:
        now = time.monotonic()
        n = sum(1 for t in self.fps_window if now - t <= window_s)
        return n / window_s

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _recent(times: deque[float]) -> int:
        cutoff = time.monotonic() - 3600
        while times and times[0] < cutoff:
            times.popleft()
        return len(times)

    def _open(self) -> _Source:
        cls = FFmpegSource if self.cfg.backend == "ffmpeg" else OpenCVSource
        return cls(self.url, self.kind, self.cfg, self.camera_id)

    def _deliver(self, image: np.ndarray, pos: float | None) -> None:
        now = time.monotonic()
        self._progress = now
        self._seq += 1
        if pos is not None:
            if self._base is None:
                self._base = self.cfg.start_time if self.cfg.start_time is not None else self.wall() - pos
            ts = self._base + pos
        else:
            ts = self.wall()
        frame = Frame(self.camera_id, image, ts, self._seq, now)
        self.stats.frames += 1
        self.fps_window.append(now)
        lossless = self.kind == "file" and not self.cfg.realtime
        with self._cond:
            if lossless:
                self._cond.wait_for(lambda: self._latest is None or self._stop.is_set())
            elif self._latest is not None:
                self.stats.dropped += 1
            self._latest = frame
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = self.cfg.reconnect_min_s
        first = True
        while not self._stop.is_set():
            if not first:
                self.reconnect_times.append(time.monotonic())
            first = False
            self._progress = time.monotonic()
            try:
                source = self._open()
            except Exception as exc:
                self.stats.failures += 1
                self.last_error = str(exc)
                log.warning(
                    "event=capture_open_failed camera=%s url=%s retry_in_s=%.1f error=%r",
                    self.camera_id,
                    redact(self.url),
                    backoff,
                    str(exc),
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            with self._source_lock:
                self._source = source
            self.stats.opens += 1
            got = 0
            try:
                while not self._stop.is_set():
                    item = source.read()
                    if item is None:
                        break
                    if got == 0:
                        self.connected = True
                        backoff = self.cfg.reconnect_min_s
                        log.info(
                            "event=capture_open camera=%s url=%s backend=%s size=%dx%d",
                            self.camera_id,
                            redact(self.url),
                            self.cfg.backend,
                            item[0].shape[1],
                            item[0].shape[0],
                        )
                    got += 1
                    self._deliver(*item)
            except Exception as exc:
                self.last_error = str(exc)
                log.warning("event=capture_read_failed camera=%s error=%r", self.camera_id, str(exc))
            finally:
                self.connected = False
                with self._source_lock:
                    self._source = None
                detail = source.error_text() if isinstance(source, FFmpegSource) else ""
                source.close()
            if self._stop.is_set():
                break
            if self.kind == "file" and got > 0 and not self.cfg.loop:
                self.ended = True
                log.info("event=capture_end camera=%s frames=%d", self.camera_id, self.stats.frames)
                break
            if got == 0:
                self.stats.failures += 1
                self.last_error = detail or self.last_error or "no frame"
                log.warning(
                    "event=capture_no_frames camera=%s url=%s retry_in_s=%.1f detail=%r",
                    self.camera_id,
                    redact(self.url),
                    backoff,
                    self.last_error,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
            else:
                log.warning(
                    "event=capture_lost camera=%s url=%s frames=%d detail=%r",
                    self.camera_id,
                    redact(self.url),
                    got,
                    detail,
                )
                self._stop.wait(self.cfg.reconnect_min_s)

    def _watchdog(self) -> None:
        period = min(1.0, self.cfg.stall_s / 4)
        while not self._stop.wait(period):
            if self.ended:
                return
            lossless = self.kind == "file" and not self.cfg.realtime
            if lossless and self._latest is not None:
                self._progress = time.monotonic()  # waiting on the worker, not on the stream
                continue
            idle = time.monotonic() - self._progress
            if idle < self.cfg.stall_s:
                continue
            with self._source_lock:
                source = self._source
            if source is None:
                continue  # between attempts: the backoff owns the timing
            self.stall_times.append(time.monotonic())
            log.warning(
                "event=capture_stalled camera=%s url=%s idle_s=%.1f action=reopen",
                self.camera_id,
                redact(self.url),
                idle,
            )
            self._progress = time.monotonic()
            source.abort()


def probe(url: str, out: Path, timeout_s: float = 10.0) -> dict[str, object]:
    """Open a stream, read one frame, save it to `out`; returns resolution, fps and timing."""
    import cv2

    from edge.diagnose import diagnose

    cfg = CaptureConfig(backend="opencv", open_timeout_s=timeout_s, read_timeout_s=timeout_s, realtime=False)
    kind = source_kind(url)
    t0 = time.monotonic()
    try:
        src = OpenCVSource(url, kind, cfg, "probe")
    except CaptureError:
        raise CaptureError(f"probe: {diagnose(url, timeout_s)}") from None
    try:
        opened = time.monotonic() - t0
        item = src.read()
        if item is None:
            why = diagnose(url, timeout_s)
            raise CaptureError(
                f"probe: {redact(url)} opened but gave no frame within {timeout_s:.0f} s; {why}"
            )
        img = item[0]
        out.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out), img):
            raise CaptureError(f"probe: could not write {out} (use a .jpg or .png name)")
        return {
            "url": redact(url),
            "kind": kind,
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "fps": round(src.fps, 2),
            "codec": _fourcc(src.cap.get(cv2.CAP_PROP_FOURCC)),
            "open_s": round(opened, 3),
            "first_frame_s": round(time.monotonic() - t0, 3),
            "saved": str(out),
        }
    finally:
        src.close()


def _fourcc(v: float) -> str:
    code = int(v)
    s = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return s if s.isprintable() and s.strip() else ""
