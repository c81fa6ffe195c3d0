"""Run the box's models on a picture, a folder, a video file or a live stream and show what they find:
annotated pictures (or an MP4 for a video or stream) and a per-label summary.

Behind `gridgate detectors predict` and `gridgate edge probe --detect`. Frames of a video or stream
go through the same tracker as on the edge box, so the track ids drawn are the ones the rules see.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from detectors.annotate import annotate
from detectors.tracking import Tracker, TrackerConfig
from detectors.zones import DetectionLike, Zone

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class SourceError(Exception):
    """A source that cannot be read; the message names it and what to give instead."""


class FrameDetector(Protocol):
    def detect(self, frames: list[np.ndarray]) -> Sequence[Sequence[DetectionLike]]: ...


@dataclass(slots=True)
class LabelSummary:
    count: int = 0
    max_score: float = 0.0
    score_sum: float = 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.count if self.count else 0.0


@dataclass(slots=True)
class Summary:
    """What a run found: detections per label over every frame, and the files written."""

    frames: int = 0
    labels: dict[str, LabelSummary] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, detections: Sequence[DetectionLike]) -> None:
        self.frames += 1
        for d in detections:
            s = self.labels.setdefault(d.label, LabelSummary())
            s.count += 1
            s.max_score = max(s.max_score, float(d.score))
            s.score_sum += float(d.score)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            k: {"count": v.count, "max_score": round(v.max_score, 3), "mean_score": round(v.mean_score, 3)}
            for k, v in sorted(self.labels.items())
        }


def source_type(source: str) -> str:
    """`folder`, `image`, `stream` (rtsp/http/device) or `video` (a file)."""
    low = source.lower()
    if low.startswith(("rtsp://", "rtsps://", "http://", "https://", "device:", "/dev/video")):
        return "stream"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise SourceError(f"{source}: no such file or folder (give an image, a folder, a video or a URL)")
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"


def _open(source: str) -> cv2.VideoCapture:
    if source.startswith("device:") or source.startswith("/dev/video"):
        dev = source.split(":", 1)[1] if source.startswith("device:") else source.removeprefix("/dev/video")
        cap = cv2.VideoCapture(int(dev) if dev.isdigit() else source)
    else:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{source}: OpenCV could not open it (check the URL, the path and the codec)")
    return cap


def read_frames(source: str, limit: int) -> Iterator[tuple[np.ndarray, float]]:
    """Up to `limit` BGR frames of a video file or stream with their time in seconds from the start."""
    cap = _open(source)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    t0 = time.monotonic()
    try:
        for n in range(limit):
            ok, img = cap.read()
            if not ok:
                return
            yield img, (n / fps if fps > 0 else time.monotonic() - t0)
    finally:
        cap.release()


def source_fps(source: str) -> float:
    cap = _open(source)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return fps if 0 < fps <= 120 else 10.0


def _images(source: str, kind: str) -> list[Path]:
    if kind == "image":
        return [Path(source)]
    found = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise SourceError(f"{source}: no pictures in it ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def predict(
    source: str,
    detector: FrameDetector,
    out: Path,
    zones: Sequence[Zone] = (),
    frames: int = 100,
    tracking: TrackerConfig | None = None,
) -> Summary:
    """Detect on every picture of `source` (or its first `frames` frames) and write annotated copies
    into `out`: `{stem}.jpg` per picture, `{stem}.mp4` for a video or stream."""
    kind = source_type(source)
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    t0 = time.perf_counter()
    if kind in ("image", "folder"):
        for path in _images(source, kind):
            img = cv2.imread(str(path))
            if img is None:
                raise SourceError(f"{path}: not a picture OpenCV can read")
            dets = list(detector.detect([img])[0])
            summary.add(dets)
            target = out / f"{path.stem}.jpg"
            if not cv2.imwrite(
                str(target), annotate(img, dets, zones, f"{path.name}: {len(dets)} detections")
            ):
                raise SourceError(f"could not write {target}")
            summary.outputs.append(target)
    else:
        stem = Path(source).stem if kind == "video" else "stream"
        target = out / f"{stem}.mp4"
        tracker = Tracker(tracking)
        writer: cv2.VideoWriter | None = None
        try:
            for img, ts in read_frames(source, frames):
                dets = list(detector.detect([img])[0])
                summary.add(dets)
                ids = {o.box: o.track_id for o in tracker.update(dets, ts).objects}
                drawn = annotate(
                    img, dets, zones, f"{ts:7.2f} s: {len(dets)} detections", [ids.get(d.box) for d in dets]
                )
                if writer is None:
                    h, w = drawn.shape[:2]
                    fps = source_fps(source) if kind == "video" else 10.0
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise SourceError(f"could not write {target} (OpenCV has no MP4 writer here)")
                writer.write(drawn)
        finally:
            if writer is not None:
                writer.release()
        if summary.frames == 0:
            raise SourceError(f"{source}: opened but gave no frame")
        summary.outputs.append(target)
    summary.seconds = time.perf_counter() - t0
    return summary
