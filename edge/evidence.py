"""Evidence pictures: JPEGs with the zone, boxes and track ids drawn, kept on the edge box under a
size cap (oldest deleted first) and sent to the gateway over MQTT with the event.

Layout on disk: `{data_dir}/evidence/{camera_id}/{event_id}/{name}` (name e.g. `stopped.jpg`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from detectors.rules import Highlight
from edge.config import EvidenceConfig
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
    jpeg: bytes


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


class EvidenceStore:
    """Pictures on disk under a total size cap; the oldest go first."""

    def __init__(self, root: Path, cfg: EvidenceConfig) -> None:
        self.root = root
        self.cfg = cfg
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: deque[tuple[Path, int]] = deque()
        self.total_bytes = 0
        self.deleted = 0
        existing = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                p = Path(dirpath) / f
                try:
                    st = p.stat()
                except OSError:
                    continue
                existing.append((st.st_mtime, p, st.st_size))
        for _m, p, size in sorted(existing):
            self._files.append((p, size))
            self.total_bytes += size
        self._enforce()

    def save(self, camera_id: str, event_id: str, pic: Picture) -> EvidenceRef:
        path = self.root / camera_id / event_id / pic.name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(pic.jpeg)
        os.replace(tmp, path)
        with self._lock:
            self._files.append((path, len(pic.jpeg)))
            self.total_bytes += len(pic.jpeg)
            self._enforce()
        return EvidenceRef(name=pic.name, taken_at=utc(pic.taken_at), bytes=len(pic.jpeg))

    def _enforce(self) -> None:
        while self.total_bytes > self.cfg.max_bytes and self._files:
            p, size = self._files.popleft()
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("event=evidence_delete_failed path=%s error=%r", p, str(exc))
            self.total_bytes -= size
            self.deleted += 1
            with contextlib.suppress(OSError):
                p.parent.rmdir()  # only succeeds once the event's folder is empty
