"""Edge boxes in: video events, their snapshots, and the boxes' status and per-camera stats.

An edge box publishes `EdgeEventMessage`s (new / update / end) on `{p}/edge/{edge_id}/events`,
each snapshot as a raw JPEG on `{p}/edge/{edge_id}/evidence/{event_id}/{name}`, each camera's
latest annotated frame (retained JPEG) on `{p}/edge/{edge_id}/frames/{camera_id}`, and `online` /
`offline` (its Last Will) or a stats JSON on `{p}/edge/{edge_id}/status`. Video events become
gateway events like any sensor's (grid, alerts, store, tickets); stats become `edge_stats` points;
an offline box is a `device_offline` fault of source `edge:<id>`; the latest frame of each camera
is kept on disk (`{data_dir}/frames/{edge_id}/{camera_id}.jpg`) for /api/v1/cameras/{id}/frame.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from devices.codecs.errors import RejectReason
from gateway.pipeline import Pipeline
from gridgate.manifest import CLIP_NAME, MANIFEST_NAME, parse_manifest, verify_manifest
from gridgate.models import (
    CAMERA_FAULTS,
    EdgeEventMessage,
    EdgePhase,
    Event,
    EventClass,
    EventState,
    Point,
    Rejection,
    Severity,
    event_id_for,
    ns_from_s,
    utc,
)
from gridgate.plates import PLATE_COLOURS, PLATE_PICTURE, is_plate
from gridgate.topics import EdgeTopic, topic_level_problem

log = logging.getLogger("gridgate.edge")

SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
JPEG_MAGIC = b"\xff\xd8\xff"
SEEN_MAX = 20_000  # (event, phase, time) keys remembered to drop redelivered and replayed messages
EVENT_MAX_BYTES = 64 * 1024


def evidence_url(edge_id: str, event_id: str, name: str) -> str:
    return f"/api/v1/evidence/{edge_id}/{event_id}/{name}"


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """The latest frame the gateway holds for a camera."""

    path: Path
    edge_id: str
    received_at: datetime


def evidence_doc(msg: EdgeEventMessage) -> dict[str, Any]:
    """`snapshots` (the pictures) and, once the edge box wrote it, `clip` (the MP4 around the raise)."""
    refs = {
        ref.name: {
            "name": ref.name,
            "taken_at": ref.taken_at.isoformat(),
            "bytes": ref.bytes,
            "url": evidence_url(msg.edge_id, msg.event_id, ref.name),
        }
        for ref in msg.evidence
    }
    doc: dict[str, Any] = {"snapshots": [r for n, r in refs.items() if n != CLIP_NAME]}
    if CLIP_NAME in refs:
        doc["clip"] = refs[CLIP_NAME]
    plate = plate_of(msg)
    if plate is not None:  # read by the edge box: the text, how sure, the colour and its close-up
        conf = msg.measurements.get("plate_confidence")
        colour = msg.measurements.get("plate_colour")
        doc["plate"] = {
            "text": plate,
            "confidence": conf if isinstance(conf, float | int) and 0 <= conf <= 1 else None,
            "colour": colour if colour in PLATE_COLOURS else None,
            "crop": refs.get(PLATE_PICTURE),
        }
    return doc


def plate_of(msg: EdgeEventMessage) -> str | None:
    """The event's licence plate, only if it is one: whatever else an edge message carries there is
    not put on a ticket."""
    plate = msg.measurements.get("plate")
    return plate if isinstance(plate, str) and is_plate(plate) else None


def evidence_problem(name: str, payload: bytes, et: EdgeTopic) -> str | None:
    """What is wrong with one evidence file for its name, or None: a .jpg picture, the clip, the manifest."""
    if name == MANIFEST_NAME:
        try:
            m = parse_manifest(payload)
        except ValueError as exc:
            return f"manifest.json is not a valid manifest: {exc}"
        if (m.edge_id, m.event_id) != (et.edge_id, et.event_id):
            return f"manifest.json names edge {m.edge_id!r} event {m.event_id!r}, not the topic's"
        return None
    if name == CLIP_NAME:
        return None if payload[4:8] == b"ftyp" else "clip.mp4 must be an MP4 video (no `ftyp` box)"
    if name.endswith((".jpg", ".jpeg")):
        return None if payload.startswith(JPEG_MAGIC) else "evidence must be a JPEG image"
    return f"evidence {name!r} must be a .jpg picture, {CLIP_NAME} or {MANIFEST_NAME}"


def to_event(msg: EdgeEventMessage) -> Event:
    """The gateway event for one edge message (the edge's event id is kept from new to end)."""
    ended = msg.phase is EdgePhase.end
    value = msg.measurements.get("dwell_s", msg.measurements.get("water_ratio"))
    fault = msg.kind in CAMERA_FAULTS  # the camera itself: maintenance's, not the street's
    what = (
        f"camera {msg.camera_id}: {msg.kind.removeprefix('camera_')}"
        if fault
        else f"{msg.kind.replace('_', ' ')} in zone {msg.zone} of camera {msg.camera_id}"
    )
    plate = plate_of(msg)
    if plate is not None:
        what += f", plate {plate}"
    return Event(
        id=msg.event_id,
        kind=msg.kind,
        event_class=EventClass.fault if fault else EventClass.alarm,
        source=f"camera:{msg.camera_id}",
        location=msg.location,
        severity=msg.severity,
        state=EventState.cleared if ended else EventState.active,
        started_at=msg.started_at,
        ended_at=(msg.ended_at or msg.at) if ended else None,
        updated_at=msg.at,
        confidence=msg.confidence,
        value=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
        measurements={**msg.measurements, "zone": msg.zone, "edge_id": msg.edge_id},
        evidence=evidence_doc(msg),
        dedup_key=f"{msg.kind}:camera:{msg.camera_id}:{msg.zone}",
        message=what,
    )


def stats_points(edge_id: str, doc: dict[str, Any], time_ns: int) -> list[Point]:
    """`edge_stats` points: one per camera (tag camera_id) with every numeric figure it reports."""
    cameras = doc.get("cameras")
    rows: list[tuple[str, dict[str, Any]]] = []
    if isinstance(cameras, dict):
        rows = [(str(cam), v) for cam, v in cameras.items() if isinstance(v, dict)]
    elif isinstance(cameras, list):
        rows = [(str(v.get("camera_id", i)), v) for i, v in enumerate(cameras) if isinstance(v, dict)]
    box = {k: v for k, v in doc.items() if k != "cameras"}
    if any(_numeric(v) for v in box.values()):
        rows.append(("", box))
    points = []
    for camera_id, values in rows:
        fields: dict[str, float | int | bool | str] = {
            k: float(v) for k, v in values.items() if _numeric(v) and k != "camera_id"
        }
        # one level of nesting: per-label counts ({detections: {vehicle: 3}} -> detections_vehicle)
        # and the box's model versions ({models: {street: "street.pt@..."}} -> models_street)
        for k, v in values.items():
            if isinstance(v, dict):
                for sub, x in v.items():
                    if _numeric(x) or isinstance(x, str):
                        fields[f"{k}_{sub}"] = float(x) if _numeric(x) else str(x)[:200]
        if fields:
            tags = {"edge_id": edge_id} | ({"camera_id": camera_id} if camera_id else {})
            points.append(Point("edge_stats", tags, fields, time_ns))
    return points


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class EdgeIngest:
    """Handles every `{p}/edge/...` message; shares the pipeline's outputs (emit, reject, sink)."""

    def __init__(
        self,
        pipeline: Pipeline,
        evidence_dir: Path,
        max_evidence_bytes: int,
        frames_dir: Path | None = None,
        max_clip_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.pipeline = pipeline
        self.evidence_dir = evidence_dir
        self.frames_dir = frames_dir or evidence_dir.parent / "frames"
        self.max_evidence_bytes = max_evidence_bytes
        self.max_clip_bytes = max_clip_bytes
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.offline: dict[str, Event] = {}  # edge boxes whose Last Will said offline
        self.duplicates = 0
        self._now = 0.0  # receive time of the message being handled

    @classmethod
    def for_pipeline(cls, pipeline: Pipeline) -> EdgeIngest:
        """Pictures and clips under `storage.data_dir`, with `limits:` as the pipeline's config says."""
        cfg = pipeline.cfg
        data = cfg.storage.data_dir
        return cls(
            pipeline,
            data / "evidence",
            cfg.limits.max_evidence_bytes,
            data / "frames",
            cfg.limits.max_clip_bytes,
        )

    def max_bytes(self, et: EdgeTopic) -> tuple[int, str]:
        """The size limit of a message on this topic, and the setting that holds it."""
        if et.channel == "evidence" and et.name == CLIP_NAME:
            return self.max_clip_bytes, "limits.max_clip_bytes"
        if et.channel in ("evidence", "frames"):
            return self.max_evidence_bytes, "limits.max_evidence_bytes"
        return EVENT_MAX_BYTES, "the edge event message limit"

    def handle(self, topic: str, et: EdgeTopic, payload: bytes, now: float) -> None:
        """One edge message; bad ones go to the dead-letter topic like a sensor's."""
        self._now = now
        self.pipeline.metrics.messages_in += 1
        limit, setting = self.max_bytes(et)
        if len(payload) > limit:
            detail = f"{et.name or et.channel}: {len(payload)} bytes, the limit is {limit} ({setting})"
            self._reject(topic, RejectReason.too_large, detail, payload, et)
        elif et.channel == "events":
            self._event(topic, et, payload)
        elif et.channel == "evidence":
            self._evidence(topic, et, payload)
        elif et.channel == "frames":
            self._frame(topic, et, payload)
        else:
            self._status(topic, et, payload, now)

    def _reject(self, topic: str, reason: RejectReason, detail: str, payload: bytes, et: EdgeTopic) -> None:
        self.pipeline.reject(Rejection(topic, str(reason), detail, payload, f"edge:{et.edge_id}"), self._now)

    def _event(self, topic: str, et: EdgeTopic, payload: bytes) -> None:
        try:
            msg = EdgeEventMessage.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "(payload)"
            reason = RejectReason.not_json if first["type"] == "json_invalid" else RejectReason.wrong_type
            self._reject(topic, reason, f"{where}: {first['msg']}", payload, et)
            return
        if msg.edge_id != et.edge_id:
            self._reject(
                topic,
                RejectReason.bad_payload,
                f"edge_id {msg.edge_id!r} differs from the topic's",
                payload,
                et,
            )
            return
        # the kind becomes a level of {p}/alerts/{grid}/{kind}; ids name evidence topics and paths
        for field, value in (("kind", msg.kind), ("camera_id", msg.camera_id), ("event_id", msg.event_id)):
            problem = topic_level_problem(value)
            if problem is not None:
                self._reject(topic, RejectReason.bad_payload, f"{field}: {problem}", payload, et)
                return
        key = (msg.event_id, msg.phase.value, msg.at.isoformat())
        if key in self._seen:
            self.duplicates += 1  # QoS 1 redelivery or a replayed disk queue: already handled
            self.pipeline.metrics.messages_decoded += 1  # decoded, and applied once
            return
        self._seen[key] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        self.pipeline.metrics.messages_decoded += 1
        self.pipeline.emit([to_event(msg)])

    def _evidence(self, topic: str, et: EdgeTopic, payload: bytes) -> None:
        assert et.event_id is not None and et.name is not None
        bad = next((s for s in (et.edge_id, et.event_id, et.name) if not SAFE_SEGMENT.match(s)), None)
        if bad is not None:
            self._reject(topic, RejectReason.bad_payload, f"unsafe path segment {bad!r}", payload, et)
            return
        problem = evidence_problem(et.name, payload, et)
        if problem is not None:
            self._reject(topic, RejectReason.bad_payload, problem, payload, et)
            return
        folder = self.evidence_dir / et.edge_id / et.event_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{et.name}.part"
        tmp.write_bytes(payload)
        tmp.replace(folder / et.name)  # readers never see half a picture
        self.pipeline.metrics.messages_decoded += 1
        log.info(
            "event=evidence_stored edge=%s event_id=%s name=%s bytes=%d",
            et.edge_id,
            et.event_id,
            et.name,
            len(payload),
        )
        if et.name == MANIFEST_NAME:  # sent last: the files it names are here unless lost on the way
            problems = verify_manifest(folder)
            log.log(
                logging.WARNING if problems else logging.INFO,
                'event=evidence_manifest_checked edge=%s event_id=%s problems=%d first="%s"',
                et.edge_id,
                et.event_id,
                len(problems),
                problems[0] if problems else "",
            )

    def _frame(self, topic: str, et: EdgeTopic, payload: bytes) -> None:
        assert et.name is not None
        bad = next((s for s in (et.edge_id, et.name) if not SAFE_SEGMENT.match(s)), None)
        if bad is not None:
            self._reject(topic, RejectReason.bad_payload, f"unsafe path segment {bad!r}", payload, et)
            return
        if not payload.startswith(JPEG_MAGIC):
            self._reject(topic, RejectReason.bad_payload, "a camera frame must be a JPEG image", payload, et)
            return
        folder = self.frames_dir / et.edge_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{et.name}.jpg.part"
        tmp.write_bytes(payload)
        tmp.replace(folder / f"{et.name}.jpg")
        self.pipeline.metrics.messages_decoded += 1
        log.debug("event=camera_frame_stored edge=%s camera=%s bytes=%d", et.edge_id, et.name, len(payload))

    def camera_frame(self, camera_id: str) -> CameraFrame | None:
        """The newest frame of `camera_id` from any edge box, or None when none came yet."""
        if not SAFE_SEGMENT.match(camera_id) or not self.frames_dir.is_dir():
            return None
        found = [(p.stat().st_mtime, p) for p in self.frames_dir.glob(f"*/{camera_id}.jpg") if p.is_file()]
        if not found:
            return None
        mtime, path = max(found)
        return CameraFrame(path, path.parent.name, utc(mtime))

    def camera_frames(self) -> list[CameraFrame]:
        """The newest frame of every camera that sent one, by camera id."""
        if not self.frames_dir.is_dir():
            return []
        newest: dict[str, tuple[float, Path]] = {}
        for p in self.frames_dir.glob("*/*.jpg"):
            mtime = p.stat().st_mtime
            if p.stem not in newest or mtime > newest[p.stem][0]:
                newest[p.stem] = (mtime, p)
        return [CameraFrame(p, p.parent.name, utc(m)) for _, (m, p) in sorted(newest.items())]

    def evidence_path(self, edge_id: str, event_id: str, name: str) -> Path | None:
        if not all(SAFE_SEGMENT.match(s) for s in (edge_id, event_id, name)):
            return None
        path = self.evidence_dir / edge_id / event_id / name
        return path if path.is_file() else None

    def _status(self, topic: str, et: EdgeTopic, payload: bytes, now: float) -> None:
        text = payload.strip().lower()
        if text in (b"online", b"offline"):
            self._online(et.edge_id, text == b"online", now)
            return
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._reject(
                topic, RejectReason.not_json, "status must be online, offline or a stats object", payload, et
            )
            return
        if not isinstance(doc, dict):
            self._reject(topic, RejectReason.wrong_type, "stats must be a JSON object", payload, et)
            return
        status = doc.get("status")
        if status in ("online", "offline"):
            self._online(et.edge_id, status == "online", now)
        points = stats_points(et.edge_id, doc, ns_from_s(now))
        for point in points:
            self.pipeline.sink.add(point)
        self.pipeline.metrics.messages_decoded += 1

    def _online(self, edge_id: str, online: bool, now: float) -> None:
        """An edge box's Last Will: offline raises a maintenance fault, online clears it."""
        current = self.offline.get(edge_id)
        if online and current is not None:
            del self.offline[edge_id]
            cleared = current.model_copy(
                update={
                    "state": EventState.cleared,
                    "ended_at": utc(now),
                    "updated_at": utc(now),
                    "message": f"Edge box {edge_id} is back online",
                }
            )
            self.pipeline.emit([cleared])
        elif not online and current is None:
            ev = Event(
                id=event_id_for(f"edge:{edge_id}", "device_offline", now),  # the same if replayed
                kind="device_offline",
                event_class=EventClass.fault,
                source=f"edge:{edge_id}",
                severity=Severity.major,
                started_at=utc(now),
                measurements={"status": "offline"},
                message=f"Edge box {edge_id} is offline (its Last Will): its cameras are not analysed",
            )
            self.offline[edge_id] = ev
            self.pipeline.emit([ev])
