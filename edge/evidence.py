"""Evidence: JPEGs with the zone, boxes and track ids drawn, the event's clip and its manifest, kept
on the edge box under a size cap and an age limit and sent to the gateway over MQTT with the event.

Layout on disk: `{data_dir}/evidence/{camera_id}/{event_id}/{name}` (name e.g. `stopped.jpg`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from detectors.rules import Highlight
from edge.config import EvidenceConfig
from gridgate.manifest import MANIFEST_NAME
from gridgate.models import EvidenceRef, utc

log = logging.getLogger("gridgate.edge.evidence")

ZONE_COLOUR = (0, 200, 255)  # BGR amber
BOX_COLOUR = (0, 0, 255)


def render(
    image: np.ndarray,
    highlights: Sequence[Highlight],
    zone_points: Sequence[tuple[float, float]] | None,
    caption: str,
    max_width: int,
    quality: int,
) -> bytes:
    """Draw the zone, the highlighted objects and a caption; encode as JPEG."""
    img = image
    if img.shape[1] > max_width:
        h = round(img.shape[0] * max_width / img.shape[1])
        img = cv2.resize(img, (max_width, h), interpolation=cv2.INTER_AREA)
    else:
        img = img.copy()
    h, w = img.shape[:2]
    thick = max(1, w // 640)
    if zone_points:
        pts = np.array([[x * w, y * h] for x, y in zone_points], np.int32)
        cv2.polylines(img, [pts], True, ZONE_COLOUR, thick + 1, cv2.LINE_AA)
    for hl in highlights:
        x1, y1, x2, y2 = (int(hl.box[0] * w), int(hl.box[1] * h), int(hl.box[2] * w), int(hl.box[3] * h))
        cv2.rectangle(img, (x1, y1), (x2, y2), BOX_COLOUR, thick + 1)
        tag = hl.label if hl.track_id is None else f"{hl.label} #{hl.track_id}"
        cv2.putText(
            img,
            tag,
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * thick,
            BOX_COLOUR,
            thick,
            cv2.LINE_AA,
        )
    cv2.rectangle(img, (0, 0), (w, 22 * thick), (0, 0, 0), -1)
    cv2.putText(
        img,
        caption,
        (6, 16 * thick),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5 * thick,
        (255, 255, 255),
        thick,
        cv2.LINE_AA,
    )
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def caption_for(camera_id: str, zone: str, name: str, ts: float) -> str:
    return f"{camera_id} / {zone} / {name} / {datetime.fromtimestamp(ts, UTC).strftime('%Y-%m-%d %H:%M:%S')}Z"


class FrameRing:
    """The last few analysed frames of one camera, to picture a moment already past."""

    def __init__(self, size: int) -> None:
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=size)

    def add(self, ts: float, image: np.ndarray) -> None:
        self.frames.append((ts, image))

    def at(self, ts: float) -> tuple[float, np.ndarray] | None:
        """The frame at `ts`, else the latest before it, else the oldest kept."""
        best = None
        for t, img in self.frames:
            if t <= ts + 1e-6:
                best = (t, img)
        if best is None and self.frames:
            best = self.frames[0]
        return best


@dataclass(frozen=True, slots=True)
class Picture:
    name: str
    taken_at: float
    data: bytes  # JPEG, or MP4 for the clip


class HeldPictures:
    """Pictures taken before an event exists (`stopped`), per occurrence key; bounded (LRU)."""

    def __init__(self, max_keys: int = 256) -> None:
        self.max_keys = max_keys
        self.by_key: OrderedDict[str, dict[str, Picture]] = OrderedDict()

    def put(self, key: str, pic: Picture) -> None:
        self.by_key.setdefault(key, {})[pic.name] = pic
        self.by_key.move_to_end(key)
        while len(self.by_key) > self.max_keys:
            self.by_key.popitem(last=False)

    def pop(self, key: str) -> list[Picture]:
        return sorted(self.by_key.pop(key, {}).values(), key=lambda p: p.taken_at)

    def forget(self, key: str) -> None:
        self.by_key.pop(key, None)

    def __len__(self) -> int:
        return len(self.by_key)


@dataclass(slots=True)
class EventFolder:
    """One event's evidence on disk: ended once its manifest is written."""

    path: Path
    bytes: int
    files: int
    touched: float  # newest file's mtime
    ended: bool


class EvidenceStore:
    """Event folders on disk under a total size cap and an age limit.

    Over `max_bytes`, whole folders go: those of ended events first (oldest first), then the oldest
    of open events; folders untouched for `max_age_days` go too. One log line per folder removed.
    """

    def __init__(self, root: Path, cfg: EvidenceConfig, wall: Callable[[], float] = time.time) -> None:
        self.root = root
        self.cfg = cfg
        self.wall = wall
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._folders: dict[Path, EventFolder] = {}  # insertion order: oldest first
        self.total_bytes = 0
        self.deleted = 0  # folders removed
        found = []
        for folder in self.root.glob("*/*"):
            if folder.is_dir():
                files = [(p, p.stat()) for p in folder.iterdir() if p.is_file()]
                touched = max((st.st_mtime for _, st in files), default=folder.stat().st_mtime)
                size = sum(st.st_size for _, st in files)
                ended = (folder / MANIFEST_NAME).is_file()
                found.append(EventFolder(folder, size, len(files), touched, ended))
        for f in sorted(found, key=lambda f: f.touched):
            self._folders[f.path] = f
            self.total_bytes += f.bytes
        with self._lock:
            self._enforce(None)

    def folder(self, camera_id: str, event_id: str) -> Path:
        return self.root / camera_id / event_id

    def save(self, camera_id: str, event_id: str, pic: Picture) -> EvidenceRef:
        folder = self.folder(camera_id, event_id)
        path = folder / pic.name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{pic.name}.tmp"
        tmp.write_bytes(pic.data)
        os.replace(tmp, path)
        with self._lock:
            f = self._folders.setdefault(folder, EventFolder(folder, 0, 0, self.wall(), False))
            f.bytes += len(pic.data)
            f.files += 1
            f.touched = self.wall()
            self.total_bytes += len(pic.data)
            self._enforce(folder)
        return EvidenceRef(name=pic.name, taken_at=utc(pic.taken_at), bytes=len(pic.data))

    def mark_ended(self, camera_id: str, event_id: str) -> None:
        """The event ended (its manifest is saved): its folder is the first to go over quota."""
        with self._lock:
            f = self._folders.get(self.folder(camera_id, event_id))
            if f is not None:
                f.ended = True

    def sweep(self) -> None:
        """Delete what is past `max_age_days` (the worker calls this with its stats)."""
        with self._lock:
            self._enforce(None)

    def _enforce(self, keep: Path | None) -> None:
        oldest = self.wall() - self.cfg.max_age_days * 86_400
        for f in [f for f in self._folders.values() if f.touched < oldest and f.path != keep]:
            self._remove(f, "age")
        while self.total_bytes > self.cfg.max_bytes:
            candidates = [f for f in self._folders.values() if f.path != keep]
            victim = next((f for f in candidates if f.ended), None) or next(iter(candidates), None)
            if victim is None:
                break
            self._remove(victim, "quota")

    def _remove(self, f: EventFolder, reason: str) -> None:
        del self._folders[f.path]
        self.total_bytes -= f.bytes
        self.deleted += 1
        try:
            shutil.rmtree(f.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("event=evidence_delete_failed path=%s error=%r", f.path, str(exc))
        log.info(
            "event=evidence_removed camera=%s event_id=%s reason=%s ended=%s files=%d bytes=%d age_days=%.1f",
            f.path.parent.name,
            f.path.name,
            reason,
            f.ended,
            f.files,
            f.bytes,
            (self.wall() - f.touched) / 86_400,
        )
        with contextlib.suppress(OSError):
            f.path.parent.rmdir()  # the camera's folder, once empty
