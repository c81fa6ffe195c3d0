"""The feedback loop on the edge box: keep the frames a person should label, and learn from tickets.

Kept (`feedback:` in cameras.yaml): the clean frames (nothing drawn) where each event began (a
vehicle came to rest: held until its stay becomes an event), was raised and ended, and now and then
(`borderline_every_s` per camera) a frame holding a borderline detection, one scoring between
`borderline_low` and its label's `model.min_score`, which the rules never see.
Each is a JPEG beside a JSON sidecar (`detectors.dataset.FeedbackFrame`: boxes in pixels, label,
model class, score, track id, camera, time, events, model version) under
`{feedback.dir}/{camera_id}/`, bounded by `max_files` and `max_mb` (oldest first).

When a ticket ends as a false alarm, `edge.ticket_listener` hears it and `FeedbackStore` marks the
frames of its events (`false_alarm: true`); `gridgate detectors dataset` then leaves those boxes out.

Pure parts (`BorderlinePolicy`, `BorderlineSampler`, `Budget`, `build_frame`) hold no I/O and no
clock; `FeedbackStore` does the files and `Feedback` joins them for the worker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from detectors.dataset import FeedbackFrame, FrameDetection, FrameEvent, Reason
from detectors.model import Box, Detection, LabelPolicy
from detectors.model import model_version as detectors_model_version
from detectors.rules import Highlight, RuleResult
from detectors.zones import DetectionLike, box_iou
from edge.config import EdgeConfig, FeedbackConfig
from edge.events import Draft
from edge.evidence import FrameRing
from gridgate.models import EdgePhase, utc

log = logging.getLogger("gridgate.edge.feedback")

SUBJECT_IOU = 0.5  # a highlighted box and a detection this alike are the same object


# ---- pure: borderline detections ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BorderlineDetection(Detection):
    """A detection below its label's min_score: kept for labelling, never given to the rules."""


class BorderlinePolicy(LabelPolicy):
    """The detector's own label policy, that also lets through (marked) borderline detections.

    The model is asked for scores down to `low`; what the inner policy refuses but scores at least
    `low` (and passes the area filter) comes out as a `BorderlineDetection` for `split()` to take.
    """

    def __init__(self, inner: LabelPolicy, low: float) -> None:
        super().__init__(inner.class_map, inner.min_score, inner.min_area_ratio, inner.unmapped)
        self.low = low

    def lowest_score(self) -> float:
        return min(super().lowest_score(), self.low)

    def make(
        self,
        class_name: str,
        score: float,
        box: Box,
        polygon: tuple[tuple[float, float], ...] | None = None,
        track_id: int | None = None,
        model: str = "",
    ) -> Detection | None:
        det = super().make(class_name, score, box, polygon, track_id, model)
        if det is not None:
            return det
        label = self.label(class_name)
        if label is None or score < self.low:
            return None
        area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
        if area < self.min_area_ratio.get(label, 0.0):
            return None
        return BorderlineDetection(label, float(score), box, class_name, polygon, track_id, model)


def split(dets: Sequence[DetectionLike]) -> tuple[list[DetectionLike], list[BorderlineDetection]]:
    """(what the tracker and rules get, the borderline detections)."""
    real: list[DetectionLike] = []
    borderline: list[BorderlineDetection] = []
    for d in dets:
        if isinstance(d, BorderlineDetection):
            borderline.append(d)
        else:
            real.append(d)
    return real, borderline


class BorderlineSampler:
    """At most one borderline frame per camera every `every_s` of frame time."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def take(self, camera_id: str, ts: float) -> bool:
        """True (and counted) if a borderline frame of this camera may be kept at `ts`."""
        last = self.last.get(camera_id)
        if last is not None and ts - last < self.every_s and ts >= last:
            return False
        self.last[camera_id] = ts
        return True


# ---- pure: the disk budget ---------------------------------------------------------------------


class Budget:
    """Kept items in the order they were written; `add` says which to delete to stay in bounds."""

    def __init__(self, max_files: int, max_bytes: int) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, int] = OrderedDict()
        self.total_bytes = 0

    def add(self, key: str, nbytes: int) -> list[str]:
        """Count `key`; the oldest keys to delete (never the one just added)."""
        self.total_bytes += nbytes - self.items.pop(key, 0)
        self.items[key] = nbytes
        evict: list[str] = []
        while len(self.items) > 1 and (len(self.items) > self.max_files or self.total_bytes > self.max_bytes):
            old, size = self.items.popitem(last=False)
            self.total_bytes -= size
            evict.append(old)
        return evict


# ---- pure: one kept frame ----------------------------------------------------------------------


def _subjects(highlights: Iterable[Highlight], objects: Sequence[Any]) -> list[Box]:
    """The boxes an event is about: its highlights, and the current box of each highlighted track."""
    boxes: list[Box] = []
    for hl in highlights:
        boxes.append(hl.box)
        boxes += [o.box for o in objects if hl.track_id is not None and o.track_id == hl.track_id]
    return boxes


def _same_object(box: Box, boxes: Sequence[Box]) -> bool:
    return any(box_iou(b, box) >= SUBJECT_IOU for b in boxes)


def build_frame(
    *,
    edge_id: str,
    camera_id: str,
    ts: float,
    width: int,
    height: int,
    image: str,
    reasons: Sequence[Reason],
    detections: Sequence[DetectionLike],
    objects: Sequence[Any],
    borderline: Sequence[DetectionLike],
    drafts: Sequence[Draft],
    model_version: str | None,
    start: bool = False,
) -> FeedbackFrame:
    """The sidecar of a frame: every detection in pixels, with its track and the events it caused.

    `start`: the frame is from the moment the drafts' occurrences began, not from the drafts' own.
    """
    events = [
        FrameEvent(
            event_id=d.event.event_id,
            kind=d.signal.kind,
            zone=d.signal.zone,
            phase="start" if start else "new" if d.phase == EdgePhase.new else "end",
        )
        for d in drafts
    ]
    subjects = {d.event.event_id: _subjects(d.signal.highlights, objects) for d in drafts}

    def one(det: DetectionLike, is_borderline: bool) -> FrameDetection:
        track = next((o.track_id for o in objects if box_iou(o.box, det.box) >= 0.999), None)
        x1, y1, x2, y2 = det.box
        return FrameDetection(
            box_px=(round(x1 * width, 1), round(y1 * height, 1), round(x2 * width, 1), round(y2 * height, 1)),
            label=det.label,
            class_name=getattr(det, "class_name", det.label),
            score=round(min(1.0, max(0.0, float(det.score))), 4),
            track_id=track,
            borderline=is_borderline,
            events=[eid for eid, boxes in subjects.items() if _same_object(det.box, boxes)],
        )

    return FeedbackFrame(
        image=image,
        width=width,
        height=height,
        edge_id=edge_id,
        camera_id=camera_id,
        taken_at=utc(ts),
        reasons=list(reasons),
        events=events,
        model_version=model_version,
        detections=[one(d, False) for d in detections] + [one(d, True) for d in borderline],
    )


# ---- I/O: the store ----------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class FeedbackStore:
    """Kept frames on disk (`{root}/{camera_id}/{stamp}.jpg` + `.json`), bounded, oldest out first.

    Thread-safe: the analysis loop saves, the ticket listener marks.
    """

    def __init__(self, root: Path, max_files: int, max_bytes: int, recent_false: int = 1000) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.budget = Budget(max_files, max_bytes)
        self.by_event: dict[str, set[Path]] = {}
        self._events_of: dict[Path, list[str]] = {}
        # false alarms heard before their event's last frame was kept (a ticket cancelled mid-event)
        self._false: OrderedDict[str, tuple[str, datetime]] = OrderedDict()
        self._recent_false = recent_false
        self.saved = 0
        self.deleted = 0
        self.marked = 0
        self._serial = 0
        found = []
        for leftover in self.root.glob("*/*.tmp"):  # a write cut short by a crash
            leftover.unlink(missing_ok=True)
        for jpeg in self.root.glob("*/*.jpg"):  # a frame whose sidecar never got written
            if not jpeg.with_suffix(".json").exists():
                jpeg.unlink(missing_ok=True)
        for sidecar in self.root.glob("*/*.json"):
            try:
                frame = FeedbackFrame.model_validate_json(sidecar.read_bytes())
            except (OSError, ValidationError) as exc:
                log.warning("event=feedback_sidecar_unreadable path=%s error=%r", sidecar, str(exc)[:200])
                continue
            found.append((sidecar.name, sidecar, frame))
        for _name, sidecar, frame in sorted(found, key=lambda x: (x[2].taken_at, x[0])):
            self._index(sidecar, frame)
            for old in self.budget.add(str(sidecar), self._size(sidecar, frame)):
                self._delete(Path(old))

    @staticmethod
    def _size(sidecar: Path, frame: FeedbackFrame) -> int:
        try:
            return sidecar.stat().st_size + (sidecar.parent / frame.image).stat().st_size
        except OSError:
            return 0

    def _index(self, sidecar: Path, frame: FeedbackFrame) -> None:
        self._events_of[sidecar] = frame.event_ids
        for eid in frame.event_ids:
            self.by_event.setdefault(eid, set()).add(sidecar)

    def _delete(self, sidecar: Path) -> None:
        for eid in self._events_of.pop(sidecar, []):
            paths = self.by_event.get(eid, set())
            paths.discard(sidecar)
            if not paths:
                self.by_event.pop(eid, None)
        for p in (sidecar.with_suffix(".jpg"), sidecar):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("event=feedback_delete_failed path=%s error=%r", p, str(exc))
        self.deleted += 1

    def save(self, frame: FeedbackFrame, jpeg: bytes) -> Path:
        """Write the frame and its sidecar (`frame.image` is set here); returns the sidecar path."""
        with self._lock:
            self._serial += 1
            folder = self.root / frame.camera_id
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{frame.taken_at.strftime('%Y%m%dT%H%M%S.%f')[:-3]}Z-{os.getpid()}-{self._serial:06d}"
            frame = frame.model_copy(update={"image": f"{stem}.jpg"})
            for eid in frame.event_ids:
                if eid in self._false:
                    frame = _marked(frame, [eid], *self._false[eid])
            sidecar = folder / f"{stem}.json"
            _write_atomic(folder / frame.image, jpeg)
            body = frame.model_dump_json(indent=1).encode()
            _write_atomic(sidecar, body)
            self._index(sidecar, frame)
            self.saved += 1
            for old in self.budget.add(str(sidecar), len(jpeg) + len(body)):
                self._delete(Path(old))
            return sidecar

    def mark_false_alarm(self, event_ids: Iterable[str], ticket_id: str, at: datetime) -> int:
        """Flag every kept frame of these events `false_alarm: true`; returns the frames marked."""
        event_ids = list(dict.fromkeys(event_ids))
        marked = 0
        with self._lock:
            for eid in event_ids:
                self._false[eid] = (ticket_id, at)
                self._false.move_to_end(eid)
            while len(self._false) > self._recent_false:
                self._false.popitem(last=False)
            paths = sorted({p for eid in event_ids for p in self.by_event.get(eid, ())})
            for sidecar in paths:
                try:
                    frame = FeedbackFrame.model_validate_json(sidecar.read_bytes())
                except (OSError, ValidationError) as exc:
                    log.warning("event=feedback_mark_failed path=%s error=%r", sidecar, str(exc)[:200])
                    continue
                ours = [e for e in event_ids if e in frame.event_ids]
                _write_atomic(sidecar, _marked(frame, ours, ticket_id, at).model_dump_json(indent=1).encode())
                marked += 1
            self.marked += marked
        return marked

    @property
    def total_bytes(self) -> int:
        return self.budget.total_bytes

    def __len__(self) -> int:
        return len(self.budget.items)


def _marked(frame: FeedbackFrame, event_ids: Sequence[str], ticket_id: str, at: datetime) -> FeedbackFrame:
    return frame.model_copy(
        update={
            "false_alarm": True,
            "false_alarm_events": sorted({*frame.false_alarm_events, *event_ids}),
            "false_alarm_tickets": sorted({*frame.false_alarm_tickets, ticket_id}),
            "marked_at": at,
        }
    )


# ---- the worker's side -------------------------------------------------------------------------


def model_version(detector: Any) -> str | None:
    """The version of what detected: `street.pt@1a2b3c4d5e6f` (`detectors.model.model_version`),
    `name=version` pairs for a box with several models, None for a stand-in without weights."""
    versions = getattr(detector, "versions", None)
    if isinstance(versions, dict) and versions:
        return (
            versions[next(iter(versions))]
            if len(versions) == 1
            else ",".join(f"{k}={v}" for k, v in versions.items())
        )
    version = getattr(detector, "version", None) or getattr(detector, "model_version", None)
    if version:
        return str(version)
    path = getattr(detector, "path", None)
    return detectors_model_version(Path(path)) if path is not None else None


@dataclass(slots=True)
class Moment:
    """An analysed frame, encoded, with what was detected on it: kept until its event exists."""

    ts: float
    jpeg: bytes
    width: int
    height: int
    detections: list[DetectionLike]
    objects: list[Any]
    borderline: list[DetectionLike]


# pictures the rules ask for before an event exists (the worker holds the same ones as evidence)
START_SNAPSHOTS = frozenset({"stopped"})
RECENT_ANALYSES = 16  # per camera: detections of the frames the evidence ring still holds
MAX_HELD = 64  # start moments waiting for their event, per box (the rest of a stay is cheap to lose)


class Feedback:
    """What the edge worker calls: `split` detections, `observe` each analysis, `start`/`stop`."""

    def __init__(self, cfg: FeedbackConfig, edge: EdgeConfig, detector: Any) -> None:
        self.cfg = cfg
        self.edge_id = edge.edge_id
        self.listener: Any = None
        self.store: FeedbackStore | None = None
        self.sampler = BorderlineSampler(cfg.borderline_every_s)
        self.model_version: str | None = None
        self.failures = 0
        self.borderline = False
        self._recent: dict[str, deque[tuple[float, list[DetectionLike], list[Any], list[DetectionLike]]]] = {}
        self._held: OrderedDict[tuple[str, str], Moment] = OrderedDict()
        if not cfg.enabled:
            return
        root = cfg.dir if cfg.dir is not None else Path(edge.data_dir) / "feedback"
        self.store = FeedbackStore(root, cfg.max_files, int(cfg.max_mb * 1024 * 1024))
        self.model_version = model_version(detector)
        if cfg.borderline_low is not None:
            for model in getattr(detector, "models", None) or [detector]:  # each model of a ModelSet
                policy = getattr(model, "policy", None)
                if isinstance(policy, LabelPolicy):
                    model.policy = BorderlinePolicy(policy, cfg.borderline_low)
                    self.borderline = True
            if not self.borderline:
                log.warning(
                    "event=feedback_borderline_unavailable detector=%s reason=no_label_policy "
                    "fix='borderline frames need detectors.model.Detector'",
                    type(detector).__name__,
                )
        if cfg.listen_tickets:
            from edge.ticket_listener import TicketListener

            self.listener = TicketListener(edge, self.store.mark_false_alarm)
        log.info(
            "event=feedback_enabled dir=%s frames=%d max_files=%d max_mb=%s borderline=%s model=%s",
            root,
            len(self.store),
            cfg.max_files,
            cfg.max_mb,
            self.borderline,
            self.model_version,
        )

    @classmethod
    def for_worker(cls, edge: EdgeConfig, detector: Any) -> Feedback:
        return cls(edge.feedback, edge, detector)

    def start(self, listen: bool = True) -> None:
        if self.listener is not None and listen:
            self.listener.start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()

    def split(
        self, dets: Sequence[DetectionLike]
    ) -> tuple[Sequence[DetectionLike], list[BorderlineDetection]]:
        """The detections for the tracker, and the borderline ones (none unless enabled)."""
        return split(dets) if self.borderline else (dets, [])

    def observe(
        self,
        camera_id: str,
        ts: float,
        image: np.ndarray,
        detections: Sequence[DetectionLike],
        objects: Sequence[Any],
        borderline: Sequence[DetectionLike],
        drafts: Sequence[Draft],
        rules: RuleResult | None = None,
        ring: FrameRing | None = None,
    ) -> list[Path]:
        """Keep what this analysis calls for; returns the sidecars written.

        - the frame, when an event started (`new`) or ended on it, or a borderline sample is due;
        - the frame of the moment an event's occurrence began (a vehicle came to rest: the rules'
          `stopped` picture, taken from `ring`), held until the occurrence becomes an event.
        """
        if self.store is None:
            return []
        recent = self._recent.setdefault(camera_id, deque(maxlen=RECENT_ANALYSES))
        recent.append((ts, list(detections), list(objects), list(borderline)))
        events = [d for d in drafts if d.phase != EdgePhase.update] if self.cfg.events else []
        saved: list[Path] = []
        try:
            if self.cfg.events and rules is not None and ring is not None:
                self._hold_starts(camera_id, rules, ring, recent)
            for d in events:
                m = self._held.pop((camera_id, d.signal.key), None) if d.phase == EdgePhase.new else None
                if m is not None:
                    saved += self._save(camera_id, m, ["event_start"], [d], start=True)
            reasons: list[Reason] = []
            if any(d.phase == EdgePhase.new for d in events):
                reasons.append("event_new")
            if any(d.phase == EdgePhase.end for d in events):
                reasons.append("event_end")
            if borderline and self.sampler.take(camera_id, ts):
                reasons.append("borderline")
            if reasons:
                h, w = image.shape[:2]
                now = Moment(ts, _jpeg(image, self.cfg.jpeg_quality), w, h, *recent[-1][1:])
                saved += self._save(camera_id, now, reasons, events)
        except Exception:  # the feedback loop must never stop the analysis
            self.failures += 1
            log.exception("event=feedback_save_failed camera=%s ts=%.3f", camera_id, ts)
        for key in rules.forget if rules is not None else ():
            self._held.pop((camera_id, key), None)
        return saved

    def _hold_starts(
        self,
        camera_id: str,
        rules: RuleResult,
        ring: FrameRing,
        recent: deque[tuple[float, list[DetectionLike], list[Any], list[DetectionLike]]],
    ) -> None:
        for snap in rules.snapshots:
            if snap.name not in START_SNAPSHOTS:
                continue
            found = ring.at(snap.at)
            seen = next((r for r in recent if found is not None and r[0] == found[0]), None)
            if found is None or seen is None:
                continue  # that frame or its detections are gone: nothing honest to keep
            h, w = found[1].shape[:2]
            self._held[(camera_id, snap.key)] = Moment(
                found[0], _jpeg(found[1], self.cfg.jpeg_quality), w, h, *seen[1:]
            )
            self._held.move_to_end((camera_id, snap.key))
            while len(self._held) > MAX_HELD:
                self._held.popitem(last=False)

    def _save(
        self, camera_id: str, m: Moment, reasons: list[Reason], drafts: Sequence[Draft], start: bool = False
    ) -> list[Path]:
        assert self.store is not None
        frame = build_frame(
            edge_id=self.edge_id,
            camera_id=camera_id,
            ts=m.ts,
            width=m.width,
            height=m.height,
            image="",
            reasons=reasons,
            detections=m.detections,
            objects=m.objects,
            borderline=m.borderline,
            drafts=drafts,
            model_version=self.model_version,
            start=start,
        )
        path = self.store.save(frame, m.jpeg)
        log.debug(
            "event=feedback_frame_kept camera=%s reasons=%s events=%s detections=%d path=%s",
            camera_id,
            ",".join(reasons),
            ",".join(frame.event_ids),
            len(frame.detections),
            path,
        )
        return [path]


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
