"""The edge worker: capture -> motion gate -> the box's models (batched, merged) -> tracker -> zone
rules -> evidence -> events through the disk queue to MQTT, with per-camera stats on the status
topic and each camera's latest annotated frame on its frames topic every `snapshot_every_s`.

Threads: a reader (and its watchdog) per camera, the analysis loop (`run`), the inference lane it
hands each pass's due frames to (so that inference overlaps gating and analysis), the stats loop,
the publisher's sender and paho's network thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from detectors.annotate import annotate, to_jpeg
from detectors.model import is_demo_model
from detectors.rules import CameraRules, Signal, SnapshotRequest
from detectors.tracking import Tracker
from detectors.zones import DetectionLike, NoParkingZone, Zone
from edge.camera_health import (
    SEVERITY,
    CameraHealth,
    HealthChange,
    load_reference,
    save_reference,
    zones_digest,
)
from edge.capture import Capture, Frame, source_kind
from edge.clip import ClipJob, ClipRing, ClipWriter
from edge.config import CameraConfig, EdgeConfig
from edge.events import Draft, EventEmitter
from edge.evidence import EvidenceStore, FrameRing, HeldPictures, Picture, caption_for, render
from edge.evidence_pack import EvidencePacks, PendingClip, manifest_for
from edge.feedback import Feedback
from edge.motion import MotionGate
from edge.plates import PlateReader, RapidOcrEngine, plates_available
from edge.publisher import EdgePublisher
from edge.queue import DiskQueue, Outgoing
from edge.scheduler import BatchResult, DetectorLike, run_batch
from edge.stats import CameraCounters, CameraStats, EdgeStats, percentile
from edge.stay_plates import StayPlates
from gridgate.manifest import CLIP_NAME, MANIFEST_NAME
from gridgate.models import CAMERA_FAULTS, CAMERA_ZONE, EdgeEventMessage, EdgePhase, Location
from gridgate.topics import Topics

log = logging.getLogger("gridgate.edge.worker")

DETECTION_LOG_EVERY_S = 5.0  # debug lines of what a camera's analysis found, at most one this often


@dataclass(slots=True)
class Seen:
    """A camera's latest analysis: the frame and what was found on it (references, nothing drawn)."""

    ts: float
    image: np.ndarray
    detections: list[DetectionLike]
    track_ids: list[int | None]


@dataclass(slots=True)
class CameraRuntime:
    cfg: CameraConfig
    capture: Capture
    gate: MotionGate
    tracker: Tracker
    rules: CameraRules
    emitter: EventEmitter
    ring: FrameRing
    held: HeldPictures
    tz: ZoneInfo
    zones: dict[str, Zone]
    health: CameraHealth
    reference_path: Path  # the health check's reference view, kept across restarts
    zones_digest: str  # the zones the reference was taken for
    models: frozenset[str] | None = None  # the models its frames go through; None: all
    last_frame_wall: float = 0.0  # wall time of its last frame (camera_lost counts from here)
    muted_logged: bool = False  # one log line per moved spell for the zone events it mutes
    clip_ring: ClipRing | None = None  # recent frames for event clips; None: clips are off
    clips: list[PendingClip] = field(default_factory=list)  # raised, post-roll still coming
    plates: StayPlates | None = None  # plates of its parking stays; None: plates are off
    counters: CameraCounters = field(default_factory=CameraCounters)
    gated_out: int = 0
    last_ts: float = 0.0  # frame time of the last analysis
    seen: Seen | None = None
    frame_sent_at: float = float("-inf")  # monotonic
    detections_logged_at: float = float("-inf")  # monotonic

    def location(self, zone: str) -> Location:
        z = self.zones.get(zone)
        return z.location if z is not None and z.location is not None else self.cfg.location


class EdgeWorker:
    def __init__(
        self,
        cfg: EdgeConfig,
        detector: DetectorLike,
        publisher: EdgePublisher | None = None,
        wall: Callable[[], float] = time.time,
        on_message: Callable[[EdgeEventMessage], None] | None = None,
        plate_reader: PlateReader | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.topics = Topics(cfg.broker.topic_prefix)
        self.started = time.monotonic()
        data = Path(cfg.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.queue = (
            publisher.queue
            if publisher is not None
            else DiskQueue(data / "outbox.sqlite", cfg.publisher.queue_max_bytes)
        )
        self.publisher = publisher or EdgePublisher(
            cfg.broker, cfg.edge_id, cfg.client_id, self.queue, cfg.publisher.inflight
        )
        self.evidence = EvidenceStore(data / "evidence", cfg.evidence, wall=wall)
        self.packs = EvidencePacks()
        self.clip_writer = ClipWriter(cfg.evidence.clip.encode_timeout_s, self._clip_done)
        self.feedback = Feedback.for_worker(cfg, detector)  # frames to label; false alarms from tickets
        self.on_message = on_message
        self.wall = wall
        self.event_latency_ms: list[float] = []  # frame received -> event queued, last 1000
        self.cameras: list[CameraRuntime] = []
        self._wake = threading.Event()
        self.plate_reader = plate_reader
        for cam in cfg.cameras:
            if not cam.enabled:
                continue
            cap = Capture(cam.id, cam.url, cam.capture, wall=wall)
            digest = zones_digest([z.model_dump(mode="json") for z in cam.zones])
            reference_path = data / "health" / f"{cam.id}.npz"
            health = CameraHealth(cam.id, cam.health, cfg.tz(cam), load_reference(reference_path, digest))
            self.cameras.append(
                CameraRuntime(
                    cfg=cam,
                    capture=cap,
                    gate=MotionGate(cam.motion, cam.detect_fps, cam.refresh_s),
                    tracker=Tracker(cam.tracking),
                    rules=CameraRules(cam.zones, cfg.tz(cam)),
                    emitter=EventEmitter(cfg.publisher.update_min_s, cfg.publisher.update_max_s),
                    ring=FrameRing(cfg.evidence.ring_frames),
                    held=HeldPictures(),
                    tz=cfg.tz(cam),
                    zones={z.name: z for z in cam.zones},
                    health=health,
                    reference_path=reference_path,
                    zones_digest=digest,
                    models=frozenset(cam.models) if cam.models else None,
                    clip_ring=ClipRing.for_config(cfg.evidence.clip) if cfg.evidence.clip.enabled else None,
                    plates=self._stay_plates(cam),
                )
            )
        self._rr = 0
        self._lane = ThreadPoolExecutor(1, thread_name_prefix="inference-lane")
        self._pending: tuple[list[tuple[CameraRuntime, Frame]], Future[list[BatchResult]]] | None = None
        self.busy_s = 0.0  # time the analysis loop spent on frames (its load: busy_s / wall time)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _stay_plates(self, cam: CameraConfig) -> StayPlates | None:
        """The camera's plate reads: on where asked, by default where the OCR is installed and a
        no_parking zone reads plates; one reader (one OCR engine) serves every camera."""
        wanted = any(isinstance(z, NoParkingZone) and z.read_plates for z in cam.zones)
        on = cam.plates.enabled if cam.plates.enabled is not None else wanted and plates_available()
        if not on or not wanted:
            return None
        if self.plate_reader is None:
            self.plate_reader = PlateReader(RapidOcrEngine())
        return StayPlates(cam.id, self.plate_reader, cam.plates, cam.zones, self.cfg.evidence.jpeg_quality)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, publisher: bool = True) -> EdgeWorker:
        self._warn_demo_model()
        if publisher:
            self.publisher.start()
        self.feedback.start(listen=publisher)
        for rt in self.cameras:
            rt.last_frame_wall = self.wall()  # a camera that never sends a frame is lost too
            rt.capture.start()
        log.info(
            "event=edge_started edge_id=%s cameras=%d broker=%s data_dir=%s",
            self.cfg.edge_id,
            len(self.cameras),
            self.publisher.where,
            self.cfg.data_dir,
        )
        return self

    def _warn_demo_model(self) -> None:
        """The shipped street model knows synthetic scenes only: say so where it watches a real street."""
        for rt in self.cameras:
            kind = source_kind(rt.cfg.url)
            if kind == "file":
                continue
            demo = [
                m.label
                for m in self.cfg.model_list
                if is_demo_model(m.path) and (rt.models is None or m.label in rt.models)
            ]
            if demo:
                log.warning(
                    'event=demo_model_on_live_camera camera=%s source=%s model=%s hint="%s"',
                    rt.cfg.id,
                    kind,
                    ",".join(demo),
                    "street.pt was trained on synthetic scenes only and will miss or invent objects on a "
                    "real street: copy real weights onto the box (a COCO checkpoint such as yolo11n.pt "
                    "finds vehicles as it is) and list them under models: in cameras.yaml; check what "
                    "they see with `gridgate detectors predict`",
                )

    def run(self, stop: threading.Event | None = None) -> None:
        """The analysis loop, with stats every `stats_interval_s`, until `stop` is set."""
        stop = stop or self._stop
        next_stats = time.monotonic() + self.cfg.publisher.stats_interval_s
        while not stop.is_set() and not self._stop.is_set():
            t0 = time.perf_counter()
            if self.step() == 0:
                stop.wait(0.01)
            else:
                self.busy_s += time.perf_counter() - t0
            if time.monotonic() >= next_stats:
                self.publish_stats()
                next_stats = time.monotonic() + self.cfg.publisher.stats_interval_s
        if self._pending is not None:  # the last pass the lane took: its frames are analysed too
            before, self._pending = self._pending, None
            self._finish(*before)

    def run_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="edge-worker", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def stop(self) -> None:
        self._stop.set()
        for rt in self.cameras:
            rt.capture.stop()
        for t in self._threads:
            t.join(timeout=10)
        self._lane.shutdown(wait=True)
        for rt in self.cameras:
            self._cut_clips(rt, float("inf"))  # what post-roll there is
        self.clip_writer.stop()
        self.publisher.stop()
        self.feedback.stop()
        self.queue.close()

    # -- one scheduling pass ----------------------------------------------------------------------

    def step(self) -> int:
        """One pass: take each camera's newest frame and gate it, hand the due ones to the inference
        lane, and analyse what the lane finished for the pass before; returns frames taken in hand.

        The lane infers a pass's frames while this thread analyses the pass before and gates the
        next, so the cores never wait on each other (a camera's frames are still analysed in order:
        a pass's results are analysed before the next pass's are asked for)."""
        due = self._gather()
        before, self._pending = self._pending, None
        if due:
            self._pending = (due, self._lane.submit(self._infer, due))
        if before is not None:
            self._finish(*before)
        return len(due) + (len(before[0]) if before is not None else 0)

    def _gather(self) -> list[tuple[CameraRuntime, Frame]]:
        """Each camera's newest frame (a rotating start, so none starves): health, clip ring, gate."""
        due: list[tuple[CameraRuntime, Frame]] = []
        n = len(self.cameras)
        for i in range(n):
            rt = self.cameras[(self._rr + i) % n]
            frame = rt.capture.take()
            self._watch(rt, frame)
            if frame is None:
                if rt.capture.ended:
                    self._cut_clips(rt, float("inf"))  # the file ended: no more post-roll is coming
                continue
            if rt.clip_ring is not None:
                try:
                    rt.clip_ring.add(frame.ts, frame.image)
                except Exception:  # a clip frame must never cost the camera its analysis
                    log.exception("event=clip_frame_failed camera=%s ts=%.3f", rt.cfg.id, frame.ts)
                self._cut_clips(rt, frame.ts)
            decision = rt.gate.decide(frame.image, frame.ts)
            if decision.detect:
                due.append((rt, frame))
            else:
                rt.gated_out += 1
        self._rr = (self._rr + 1) % max(1, n)
        return due

    def _infer(self, due: list[tuple[CameraRuntime, Frame]]) -> list[BatchResult]:
        """On the inference lane: the due frames in batches of `max_batch`."""
        out = []
        for start in range(0, len(due), self.cfg.max_batch):
            chunk = due[start : start + self.cfg.max_batch]
            use = [rt.models for rt, _ in chunk]
            out.append(
                run_batch(
                    self.detector,
                    [f.image for _, f in chunk],
                    use if any(u is not None for u in use) else None,
                )
            )
        return out

    def _finish(self, due: list[tuple[CameraRuntime, Frame]], job: Future[list[BatchResult]]) -> None:
        """Analyse a pass's frames once the lane has their detections."""
        dets = [d for result in job.result() for d in zip(result.detections, repeat(result.ms_per_frame))]
        for (rt, frame), (found, ms) in zip(due, dets, strict=True):
            try:
                self.analyse(rt, frame, found, ms)
            except Exception:  # one camera's bad moment must not stop the others
                log.exception("event=analysis_failed camera=%s ts=%.3f", rt.cfg.id, frame.ts)

    def _watch(self, rt: CameraRuntime, frame: Frame | None) -> None:
        """Camera health: lost while no frame comes, and every `sample_s` a look at the picture."""
        if frame is None:
            if not rt.capture.ended:
                self._health(rt, rt.health.idle(self.wall(), rt.last_frame_wall), None)
            return
        rt.last_frame_wall = self.wall()
        changes = rt.health.frame_arrived(rt.last_frame_wall)
        if rt.health.due(frame.ts):
            try:
                changes += rt.health.check(frame.image, frame.ts)
            except Exception:  # a health check must never cost the camera its analysis
                log.exception("event=camera_health_failed camera=%s ts=%.3f", rt.cfg.id, frame.ts)
            ref = rt.health.reference
            if ref is not None and rt.health.reference_is_new:
                rt.health.reference_is_new = False
                try:
                    save_reference(rt.reference_path, rt.zones_digest, ref)
                except OSError as exc:
                    log.warning("event=camera_reference_not_saved camera=%s error=%r", rt.cfg.id, str(exc))
        self._health(rt, changes, frame)

    def _health(self, rt: CameraRuntime, changes: list[HealthChange], frame: Frame | None) -> None:
        """Health changes become camera fault events (zone `camera`) with the picture that shows them."""
        for c in changes:
            key = f"health:{c.kind}"
            sig = Signal(
                c.kind, CAMERA_ZONE, key, c.action, c.at, c.started_at, SEVERITY[c.kind], 1.0, c.measurements
            )
            draft = rt.emitter.on_signal(sig)
            if draft is None:
                continue
            pics: list[Picture] = []
            if frame is not None and c.action == "raise":
                pic = self._picture(rt, SnapshotRequest(key, CAMERA_ZONE, "camera", frame.ts), frame)
                pics = [pic] if pic is not None else []
            log.warning(
                "event=camera_health camera=%s fault=%s action=%s %s",
                rt.cfg.id,
                c.kind,
                c.action,
                " ".join(f"{k}={v}" for k, v in c.measurements.items()),
            )
            self._emit(rt, draft, pics, frame.received if frame is not None else time.monotonic())
            if c.kind == "camera_moved" and c.action == "clear":
                rt.muted_logged = False

    def analyse(self, rt: CameraRuntime, frame: Frame, dets: Any, inference_ms: float) -> None:
        rt.last_ts = frame.ts
        dets, borderline = self.feedback.split(dets)
        upd = rt.tracker.update(dets, frame.ts)
        if upd.removed:
            rt.rules.evict_tracks(upd.removed)
        rt.counters.count(d.label for d in dets)
        # the tracker keeps a matched detection's box as the track's: that is how ids find boxes
        ids = {o.box: o.track_id for o in upd.objects}
        rt.seen = Seen(frame.ts, frame.image, list(dets), [ids.get(d.box) for d in dets])
        self._log_detections(rt, dets)
        self._send_frame(rt)
        rt.ring.add(frame.ts, frame.image)
        res = rt.rules.step(upd.objects, frame.ts)
        folded: set[str] = set()
        if rt.plates is not None:
            folded = rt.plates.observe(res.snapshots, lambda at: self._frame_at(rt, at, frame), rt.rules)
            for key in folded:  # the same vehicle as an earlier stay: its own pictures are not needed
                rt.held.forget(key)
        now_pics: dict[str, list[Picture]] = {}
        drafts: list[Draft] = []
        for snap in res.snapshots:
            if snap.key in folded:
                continue
            pic = self._picture(rt, snap, frame)
            if pic is None:
                continue
            if snap.name == "stopped":
                rt.held.put(snap.key, pic)
            else:
                now_pics.setdefault(snap.key, []).append(pic)
        for sig in res.signals:
            if sig.action == "raise" and rt.health.moved:  # its zones cover other ground now
                if not rt.muted_logged:
                    rt.muted_logged = True
                    log.warning(
                        "event=zone_events_muted camera=%s reason=camera_moved kind=%s", rt.cfg.id, sig.kind
                    )
                continue
            plate = rt.plates.measurements(sig.key) if rt.plates is not None else {}
            if plate:
                sig = replace(sig, measurements={**sig.measurements, **plate})
            draft = rt.emitter.on_signal(sig)
            if draft is None:
                continue
            drafts.append(draft)
            pics = rt.held.pop(sig.key) + now_pics.pop(sig.key, []) if draft.phase != "update" else []
            if draft.phase is EdgePhase.new and rt.plates is not None:
                close_up = rt.plates.picture(sig.key)
                pics += [close_up] if close_up is not None else []
            self._emit(rt, draft, pics, frame.received)
        for key in res.forget:
            rt.held.forget(key)
            if rt.plates is not None:
                rt.plates.forget(key)
        self.feedback.observe(
            rt.cfg.id, frame.ts, frame.image, dets, upd.objects, borderline, drafts, res, rt.ring
        )
        rt.counters.record(inference_ms, (time.monotonic() - frame.received) * 1000.0)

    def _log_detections(self, rt: CameraRuntime, dets: Any) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        now = time.monotonic()
        if now - rt.detections_logged_at < DETECTION_LOG_EVERY_S:
            return
        rt.detections_logged_at = now
        labels: dict[str, list[float]] = {}
        for d in dets:
            labels.setdefault(d.label, []).append(float(d.score))
        log.debug(
            "event=detections camera=%s ts=%.3f count=%d labels=%s tracks=%d",
            rt.cfg.id,
            rt.last_ts,
            len(dets),
            ",".join(f"{k}:{len(v)}@{max(v):.2f}" for k, v in sorted(labels.items())) or "-",
            len(rt.tracker),
        )

    def latest_frame(self, camera_id: str) -> bytes | None:
        """The camera's latest analysed frame as a JPEG with its detections and zones drawn."""
        rt = next((r for r in self.cameras if r.cfg.id == camera_id), None)
        if rt is None or rt.seen is None:
            return None
        seen = rt.seen
        img = annotate(
            seen.image,
            seen.detections,
            rt.cfg.zones,
            f"{rt.cfg.id} / {datetime.fromtimestamp(seen.ts, UTC):%Y-%m-%d %H:%M:%S}Z / "
            f"{len(seen.detections)} detections",
            track_ids=seen.track_ids,
        )
        return to_jpeg(img, self.cfg.evidence.jpeg_quality, self.cfg.evidence.max_width)

    def _send_frame(self, rt: CameraRuntime) -> None:
        every = self.cfg.publisher.snapshot_every_s
        now = time.monotonic()
        if every <= 0 or now - rt.frame_sent_at < every or not self.publisher.connected.is_set():
            return
        rt.frame_sent_at = now
        try:
            jpeg = self.latest_frame(rt.cfg.id)
        except Exception:
            log.exception("event=frame_render_failed camera=%s", rt.cfg.id)
            return
        if jpeg is not None:
            self.publisher.publish_frame(self.topics.edge_frame(self.cfg.edge_id, rt.cfg.id), jpeg)

    @staticmethod
    def _frame_at(rt: CameraRuntime, at: float, frame: Frame) -> tuple[float, np.ndarray] | None:
        """The analysed frame of time `at`: the current one, else the ring's."""
        return (frame.ts, frame.image) if at >= frame.ts else rt.ring.at(at)

    def _picture(self, rt: CameraRuntime, snap: SnapshotRequest, frame: Frame) -> Picture | None:
        found = self._frame_at(rt, snap.at, frame)
        if found is None:
            return None
        ts, image = found
        zone = rt.zones.get(snap.zone)
        try:
            jpeg = render(
                image,
                snap.highlights,
                zone.points if zone is not None else None,
                caption_for(rt.cfg.id, snap.zone, snap.name, ts),
                self.cfg.evidence.max_width,
                self.cfg.evidence.jpeg_quality,
            )
        except Exception:
            log.exception(
                "event=evidence_render_failed camera=%s zone=%s name=%s", rt.cfg.id, snap.zone, snap.name
            )
            return None
        return Picture(f"{snap.name}.jpg", ts, jpeg)

    def _emit(self, rt: CameraRuntime, draft: Draft, pics: list[Picture], received: float) -> None:
        """Queue one event message with its pictures; `received` (monotonic) starts its latency.

        A `new` of a clip kind starts a clip (pre- and post-roll around the raise); an `end` waits for
        its event's clip, if one is still coming, so that it carries the clip's reference, and is
        followed by the event's manifest."""
        ev = draft.event
        clip = self.cfg.evidence.clip
        if (
            draft.phase is EdgePhase.new
            and rt.clip_ring is not None
            and ev.kind in clip.kinds
            and ev.kind not in CAMERA_FAULTS
        ):
            at = draft.signal.at
            self.packs.clip_started(ev)
            rt.clips.append(PendingClip(ev.event_id, at - clip.pre_s, at + clip.post_s))
        if draft.phase is EdgePhase.end and self.packs.defer_end(ev.event_id, (rt, draft, pics, received)):
            log.info("event=edge_end_waits_for_clip camera=%s event_id=%s", rt.cfg.id, ev.event_id)
            return
        self._send(rt, draft, pics, received)
        if draft.phase is EdgePhase.end:
            self._seal(rt, draft)

    def _cut_clips(self, rt: CameraRuntime, now: float) -> None:
        """Hand the clips whose post-roll is complete at frame time `now` to the encoder thread."""
        if rt.clip_ring is None or not rt.clips:
            return
        due = [c for c in rt.clips if c.end <= now]
        for c in due:
            rt.clips.remove(c)
            frames = rt.clip_ring.between(c.start, c.end)
            self.clip_writer.submit(ClipJob(rt.cfg.id, c.event_id, frames, rt.cfg.capture.decode_fps))

    def _clip_done(self, job: ClipJob, data: bytes | None) -> None:
        """On the encoder thread: save and queue the clip, then the `end` that waited for it."""
        rt = next(r for r in self.cameras if r.cfg.id == job.camera_id)
        ev = self.packs.event(job.event_id)
        if data is not None and ev is not None:
            span = (job.frames[0].ts, job.frames[-1].ts)
            ref = self.evidence.save(rt.cfg.id, job.event_id, Picture(CLIP_NAME, span[0], data))
            ev.evidence = [r for r in ev.evidence if r.name != CLIP_NAME] + [ref]
            self.packs.clip_written(job.event_id, span)
            if self.cfg.evidence.send:
                topic = self.topics.edge_evidence(self.cfg.edge_id, job.event_id, CLIP_NAME)
                self.publisher.enqueue([Outgoing(topic, data, "evidence")])
            log.info(
                "event=clip_saved camera=%s event_id=%s frames=%d seconds=%.1f bytes=%d",
                rt.cfg.id,
                job.event_id,
                len(job.frames),
                span[1] - span[0],
                len(data),
            )
        deferred = self.packs.clip_finished(job.event_id)
        if deferred is not None:
            d_rt, draft, pics, received = deferred
            self._send(d_rt, draft, pics, received)
            self._seal(d_rt, draft)

    def _seal(self, rt: CameraRuntime, draft: Draft) -> None:
        """After the event's `end`: its manifest, saved and sent last, names every file and its hash."""
        ev = draft.event
        folder = self.evidence.folder(rt.cfg.id, ev.event_id)
        span = self.packs.finish(ev.event_id)
        manifest = manifest_for(self.cfg.edge_id, rt.cfg.id, draft, folder, span, self.wall())
        data = manifest.model_dump_json(indent=2).encode()
        self.evidence.save(rt.cfg.id, ev.event_id, Picture(MANIFEST_NAME, self.wall(), data))
        self.evidence.mark_ended(rt.cfg.id, ev.event_id)
        if self.cfg.evidence.send:
            topic = self.topics.edge_evidence(self.cfg.edge_id, ev.event_id, MANIFEST_NAME)
            self.publisher.enqueue([Outgoing(topic, data, "evidence")])

    def _send(self, rt: CameraRuntime, draft: Draft, pics: list[Picture], received: float) -> None:
        ev = draft.event
        items: list[Outgoing] = []
        for pic in pics:
            ref = self.evidence.save(rt.cfg.id, ev.event_id, pic)
            ev.evidence = [r for r in ev.evidence if r.name != ref.name] + [ref]
            if self.cfg.evidence.send:
                items.append(
                    Outgoing(
                        self.topics.edge_evidence(self.cfg.edge_id, ev.event_id, pic.name),
                        pic.data,
                        "evidence",
                    )
                )
        location = rt.location(draft.signal.zone)
        topic = self.topics.edge_events(self.cfg.edge_id)
        built: list[EdgeEventMessage] = []

        def build(seq: int) -> Outgoing:
            msg = draft.build(seq, self.cfg.edge_id, rt.cfg.id, location)
            built.append(msg)
            return Outgoing(topic, msg.model_dump_json().encode(), "event")

        self.publisher.enqueue(items, build)
        latency = (time.monotonic() - received) * 1000.0
        self.event_latency_ms.append(latency)
        del self.event_latency_ms[:-1000]
        msg = built[0]
        log.info(
            "event=edge_event phase=%s kind=%s camera=%s zone=%s event_id=%s seq=%d pictures=%d "
            "measurements=%s",
            msg.phase,
            msg.kind,
            rt.cfg.id,
            msg.zone,
            msg.event_id,
            msg.seq,
            len(pics),
            ",".join(f"{k}={v}" for k, v in msg.measurements.items()),
        )
        if self.on_message is not None:
            self.on_message(msg)

    # -- stats and introspection ------------------------------------------------------------------

    def stats(self) -> EdgeStats:
        depth, size = self.queue.depth()
        cams = []
        for rt in self.cameras:
            cap = rt.capture
            c = rt.counters
            cams.append(
                CameraStats(
                    camera_id=rt.cfg.id,
                    connected=cap.connected,
                    fps_in=round(cap.fps_in(), 2),
                    fps_analysed=round(c.fps(), 2),
                    inference_ms_p50=percentile(c.inference_ms, 50),
                    inference_ms_p95=percentile(c.inference_ms, 95),
                    latency_ms_p95=percentile(c.latency_ms, 95),
                    reconnects_1h=cap.reconnects_last_hour(),
                    stalls_1h=cap.stalls_last_hour(),
                    dropped_frames=cap.stats.dropped,
                    frames_in=cap.stats.frames,
                    analysed=c.analysed,
                    tracks=len(rt.tracker),
                    active_events=len(rt.emitter.open),
                    detections=dict(c.labels),
                    detections_period=dict(c.labels_period),
                    last_error=cap.last_error[-200:],
                )
            )
        return EdgeStats(
            edge_id=self.cfg.edge_id,
            at=datetime.now(UTC),
            uptime_s=round(time.monotonic() - self.started, 1),
            queue_depth=depth,
            queue_bytes=size,
            queue_dropped=self.queue.dropped,
            evidence_bytes=self.evidence.total_bytes,
            broker_connected=self.publisher.connected.is_set(),
            models=dict(getattr(self.detector, "versions", {})),
            cameras=cams,
        )

    def publish_stats(self) -> EdgeStats:
        self.evidence.sweep()  # evidence past max_age_days
        st = self.stats()
        self.publisher.publish_status(st.model_dump_json().encode())
        for rt in self.cameras:
            rt.counters.new_period()
        for c in st.cameras:
            log.info(
                "event=edge_stats camera=%s connected=%s fps_in=%.1f fps_analysed=%.2f inference_ms_p50=%s "
                "inference_ms_p95=%s reconnects_1h=%d stalls_1h=%d dropped=%d queue_depth=%d detections=%s",
                c.camera_id,
                c.connected,
                c.fps_in,
                c.fps_analysed,
                c.inference_ms_p50,
                c.inference_ms_p95,
                c.reconnects_1h,
                c.stalls_1h,
                c.dropped_frames,
                st.queue_depth,
                ",".join(f"{k}:{v}" for k, v in sorted(c.detections_period.items())) or "-",
            )
        return st

    def sizes(self) -> dict[str, int]:
        """Every per-track / per-event structure's size, summed over cameras (soak reports)."""
        out = {"tracks": 0, "held_pictures": 0, "open_events": 0, "ring_frames": 0, "clip_frames": 0}
        for rt in self.cameras:
            out["tracks"] += len(rt.tracker)
            out["held_pictures"] += len(rt.held)
            out["open_events"] += len(rt.emitter.open)
            out["ring_frames"] += len(rt.ring.frames)
            out["clip_frames"] += len(rt.clip_ring) if rt.clip_ring is not None else 0
            for k, v in rt.rules.sizes().items():
                out[k] = out.get(k, 0) + v
        return out
