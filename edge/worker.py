"""The edge worker: capture -> motion gate -> one shared detector (batched) -> tracker -> zone rules
-> evidence -> events through the disk queue to MQTT, with per-camera stats on the status topic.

Threads: a reader (and its watchdog) per camera, the analysis loop (`run`), the stats loop, the
publisher's sender and paho's network thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from detectors.rules import CameraRules, SnapshotRequest
from detectors.tracking import Tracker
from detectors.zones import Zone
from edge.capture import Capture, Frame
from edge.config import CameraConfig, EdgeConfig
from edge.events import Draft, EventEmitter
from edge.evidence import EvidenceStore, FrameRing, HeldPictures, Picture, caption_for, render
from edge.feedback import Feedback
from edge.motion import MotionGate
from edge.publisher import EdgePublisher
from edge.queue import DiskQueue, Outgoing
from edge.scheduler import DetectorLike, run_batch
from edge.stats import CameraCounters, CameraStats, EdgeStats, percentile
from gridgate.models import EdgeEventMessage, Location
from gridgate.topics import Topics

log = logging.getLogger("gridgate.edge.worker")


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
    counters: CameraCounters = field(default_factory=CameraCounters)
    gated_out: int = 0
    last_ts: float = 0.0  # frame time of the last analysis

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
        self.evidence = EvidenceStore(data / "evidence", cfg.evidence)
        self.feedback = Feedback.for_worker(cfg, detector)  # frames to label; false alarms from tickets
        self.on_message = on_message
        self.event_latency_ms: list[float] = []  # frame received -> event queued, last 1000
        self.cameras: list[CameraRuntime] = []
        self._wake = threading.Event()
        for cam in cfg.cameras:
            if not cam.enabled:
                continue
            cap = Capture(cam.id, cam.url, cam.capture, wall=wall)
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
                )
            )
        self._rr = 0
        self.busy_s = 0.0  # time the analysis loop spent on frames (its load: busy_s / wall time)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, publisher: bool = True) -> EdgeWorker:
        if publisher:
            self.publisher.start()
        self.feedback.start(listen=publisher)
        for rt in self.cameras:
            rt.capture.start()
        log.info(
            "event=edge_started edge_id=%s cameras=%d broker=%s data_dir=%s",
            self.cfg.edge_id,
            len(self.cameras),
            self.publisher.where,
            self.cfg.data_dir,
        )
        return self

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
        self.publisher.stop()
        self.feedback.stop()
        self.queue.close()

    # -- one scheduling pass ----------------------------------------------------------------------

    def step(self) -> int:
        """Take each camera's newest frame, gate it, run the due ones as batches; returns frames analysed."""
        due: list[tuple[CameraRuntime, Frame]] = []
        n = len(self.cameras)
        for i in range(n):
            rt = self.cameras[(self._rr + i) % n]
            frame = rt.capture.take()
            if frame is None:
                continue
            decision = rt.gate.decide(frame.image, frame.ts)
            if decision.detect:
                due.append((rt, frame))
            else:
                rt.gated_out += 1
        self._rr = (self._rr + 1) % max(1, n)
        batch_size = self.cfg.model.max_batch
        for start in range(0, len(due), batch_size):
            chunk = due[start : start + batch_size]
            result = run_batch(self.detector, [f.image for _, f in chunk])
            for (rt, frame), dets in zip(chunk, result.detections, strict=True):
                try:
                    self.analyse(rt, frame, dets, result.ms_per_frame)
                except Exception:  # one camera's bad moment must not stop the others
                    log.exception("event=analysis_failed camera=%s ts=%.3f", rt.cfg.id, frame.ts)
        return len(due)

    def analyse(self, rt: CameraRuntime, frame: Frame, dets: Any, inference_ms: float) -> None:
        rt.last_ts = frame.ts
        dets, borderline = self.feedback.split(dets)
        upd = rt.tracker.update(dets, frame.ts)
        if upd.removed:
            rt.rules.evict_tracks(upd.removed)
        rt.ring.add(frame.ts, frame.image)
        res = rt.rules.step(upd.objects, frame.ts)
        now_pics: dict[str, list[Picture]] = {}
        drafts: list[Draft] = []
        for snap in res.snapshots:
            pic = self._picture(rt, snap, frame)
            if pic is None:
                continue
            if snap.name == "stopped":
                rt.held.put(snap.key, pic)
            else:
                now_pics.setdefault(snap.key, []).append(pic)
        for sig in res.signals:
            draft = rt.emitter.on_signal(sig)
            if draft is None:
                continue
            drafts.append(draft)
            pics = rt.held.pop(sig.key) + now_pics.pop(sig.key, []) if draft.phase != "update" else []
            self._emit(rt, draft, pics, frame)
        for key in res.forget:
            rt.held.forget(key)
        self.feedback.observe(
            rt.cfg.id, frame.ts, frame.image, dets, upd.objects, borderline, drafts, res, rt.ring
        )
        rt.counters.record(inference_ms, (time.monotonic() - frame.received) * 1000.0)

    def _picture(self, rt: CameraRuntime, snap: SnapshotRequest, frame: Frame) -> Picture | None:
        found = (frame.ts, frame.image) if snap.at >= frame.ts else rt.ring.at(snap.at)
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

    def _emit(self, rt: CameraRuntime, draft: Draft, pics: list[Picture], frame: Frame) -> None:
        ev = draft.event
        items: list[Outgoing] = []
        for pic in pics:
            ref = self.evidence.save(rt.cfg.id, ev.event_id, pic)
            ev.evidence = [r for r in ev.evidence if r.name != ref.name] + [ref]
            if self.cfg.evidence.send:
                items.append(
                    Outgoing(
                        self.topics.edge_evidence(self.cfg.edge_id, ev.event_id, pic.name),
                        pic.jpeg,
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
        latency = (time.monotonic() - frame.received) * 1000.0
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
            cameras=cams,
        )

    def publish_stats(self) -> EdgeStats:
        st = self.stats()
        self.publisher.publish_status(st.model_dump_json().encode())
        for c in st.cameras:
            log.info(
                "event=edge_stats camera=%s connected=%s fps_in=%.1f fps_analysed=%.2f inference_ms_p50=%s "
                "inference_ms_p95=%s reconnects_1h=%d stalls_1h=%d dropped=%d queue_depth=%d",
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
            )
        return st

    def sizes(self) -> dict[str, int]:
        """Every per-track / per-event structure's size, summed over cameras (soak reports)."""
        out = {"tracks": 0, "held_pictures": 0, "open_events": 0, "ring_frames": 0}
        for rt in self.cameras:
            out["tracks"] += len(rt.tracker)
            out["held_pictures"] += len(rt.held)
            out["open_events"] += len(rt.emitter.open)
            out["ring_frames"] += len(rt.ring.frames)
            for k, v in rt.rules.sizes().items():
                out[k] = out.get(k, 0) + v
        return out
