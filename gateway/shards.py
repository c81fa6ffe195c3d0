"""Ingest across worker processes, each owning a fixed share of the devices.

One Python process is bound by its GIL at ~12,000 messages/s (shared/BENCHMARKS.md). With
`ingest.workers: N`, the gateway's MQTT thread only receives and routes: each message goes, in
batches, to the worker that owns its device (a stable hash of the device id), so a device's rules,
hysteresis timers and stuck/offline state live in exactly one place, unlike MQTT shared
subscriptions, which spread one device's messages over every subscriber. A worker decodes, runs
the rules and writes the time series itself (its own sink runner and spool); what it would publish
(alerts, faults, dead letters), its event changes, its counters and snapshots of its devices' state
come back to the gateway process, which publishes, stores and serves them as in one process.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from devices.engine import DeviceEngine
from devices.registry import load_registry
from gateway.grids import GridIndex
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.sinks.runner import SinkRunner, build_sink
from gridgate.config import GatewayConfig
from gridgate.logs import setup_logging
from gridgate.models import Event

log = logging.getLogger("gridgate.shards")

BATCH_MESSAGES = 512  # messages per hand-off to a worker: amortises the pipe and pickle costs
REPORT_EVERY_S = 0.05  # a worker sends its results back at least this often while busy
SNAPSHOT_EVERY_S = 1.0  # device state snapshots (last seen, active events) for the API and the store


def shard_of(device_id: str, workers: int) -> int:
    """The worker that owns a device: stable across restarts, so restored state lands where it is used."""
    return zlib.crc32(device_id.encode()) % workers


@dataclass
class WorkerReport:
    """What a worker sends back: the gateway process applies it in order."""

    publishes: list[tuple[str, bytes, int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    events_out: Counter[tuple[str, str]] = field(default_factory=Counter)
    gauges: dict[str, float] = field(default_factory=dict)
    final: bool = False


class _Relay:
    """The worker's outbox and event listener: collects what the gateway process must act on."""

    def __init__(self) -> None:
        self.report = WorkerReport()
        self.dirty: set[str] = set()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.report.publishes.append((topic, payload, qos))

    def on_events(self, changed: list[Event]) -> None:
        self.report.events.extend(changed)


_COUNTERS = ("messages_in", "messages_decoded", "readings", "points_written", "write_errors")


def worker_main(
    index: int,
    cfg: GatewayConfig,
    states: dict[str, dict[str, Any]],
    inbox: Connection,
    outbox: Connection,
    log_level: str,
) -> None:
    """A worker process: handle batches from the gateway, report back, until told to stop (None)."""
    setup_logging(log_level)
    from gateway.service import tune_gc

    registry = load_registry(cfg.devices_file)
    metrics = GatewayMetrics()
    engine = DeviceEngine(registry, started_at=time.time())
    for device_id, state in states.items():
        if registry.get(device_id) is not None:
            engine.restore(device_id, state)
    runner = SinkRunner(
        build_sink(cfg.influx, cfg.storage),
        batch_size=cfg.influx.batch_size,
        flush_interval_s=cfg.influx.flush_interval_s,
        retry_max_s=cfg.influx.retry_max_s,
        buffer_max_points=cfg.influx.buffer_max_points,
        spool_path=cfg.storage.data_dir / f"spool-shard{index}.sqlite",
        metrics=metrics,
    ).start()
    relay = _Relay()
    grids = GridIndex.load(cfg.grids_file, cfg.fallback_grid)
    pipeline = Pipeline(cfg, registry, engine, grids, runner, relay, relay.on_events, metrics)
    sent = dict.fromkeys(_COUNTERS, 0)
    workers = cfg.ingest.workers
    send_lock = threading.Lock()

    def report(final: bool = False, snapshots: str = "none") -> None:
        """Send what happened since the last report; device snapshots only when asked ("dirty"/"all")."""
        with send_lock, pipeline.lock:
            rep, relay.report = relay.report, WorkerReport()
            for name in _COUNTERS:
                value = getattr(metrics, name)
                rep.counters[name] = value - sent[name]
                sent[name] = value
            rep.rejected, metrics.rejected = metrics.rejected, Counter()
            rep.events_out, metrics.events_out = metrics.events_out, Counter()
            rep.gauges = {name: read() for name, read in metrics.gauges.items()}
            ids: Iterable[str] = ()
            if snapshots == "all":
                ids = [d.id for d in registry if shard_of(d.id, workers) == index]
            elif snapshots == "dirty":
                ids, relay.dirty = relay.dirty, set()
            # snapshots are the costly part for the gateway process (it mirrors each one): at most
            # once a second, however many events flow
            rep.snapshots = {d: engine.snapshot(d) for d in ids}
            rep.final = final
            outbox.send_bytes(pickle.dumps(rep, protocol=pickle.HIGHEST_PROTOCOL))

    stop = threading.Event()

    def housekeeping() -> None:
        next_silence = next_snapshot = 0.0
        while not stop.wait(REPORT_EVERY_S):
            now = time.time()
            if now >= next_silence:
                pipeline.check_silence(now)
                next_silence = now + cfg.offline_check_s
            snapshot = now >= next_snapshot
            if snapshot:
                next_snapshot = now + SNAPSHOT_EVERY_S
            if snapshot or relay.report.publishes or relay.report.events:
                report(snapshots="dirty" if snapshot else "none")

    keeper = threading.Thread(target=housekeeping, name=f"gridgate-shard{index}-housekeeping", daemon=True)
    tune_gc()
    keeper.start()
    try:
        while True:
            data = inbox.recv_bytes()
            if not data:
                break
            now = time.time()
            batch: list[tuple[str, bytes, str | None]] = pickle.loads(data)
            handle = pipeline.handle
            for topic, payload, _ in batch:
                handle(topic, payload, now)
            relay.dirty.update(device_id for _, _, device_id in batch if device_id)
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        stop.set()
        keeper.join(timeout=5)
        runner.close()
        report(final=True, snapshots="all")
        outbox.close()


class ShardPool:
    """The gateway process's side: route messages to workers, apply what they report."""

    def __init__(
        self,
        cfg: GatewayConfig,
        states: dict[str, dict[str, Any]],
        route_device: Any,
        apply: Any,
        log_level: str = "info",
    ) -> None:
        self.n = cfg.ingest.workers
        self._route_device = route_device
        self._apply = apply
        ctx = mp.get_context("spawn")  # never fork a process that runs threads
        self._procs: list[Any] = []
        self._to: list[Connection] = []
        self._from: list[Connection] = []
        self._pending: list[list[tuple[str, bytes, str | None]]] = [[] for _ in range(self.n)]
        self._child_ends: list[Connection] = []
        self._lock = threading.Lock()
        for i in range(self.n):
            mine = {d: s for d, s in states.items() if shard_of(d, self.n) == i}
            in_r, in_w = ctx.Pipe(duplex=False)
            out_r, out_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=worker_main,
                args=(i, cfg, mine, in_r, out_w, log_level),
                name=f"gridgate-shard{i}",
                daemon=True,
            )
            self._procs.append(proc)
            self._to.append(in_w)
            self._from.append(out_r)
            self._child_ends += [in_r, out_w]
        self._readers: list[threading.Thread] = []
        self.submitted = 0  # messages handed to workers (their reports count them back as messages_in)
        self.lost = 0  # messages for a worker that had died

    def start(self) -> None:
        for i, proc in enumerate(self._procs):
            proc.start()
            # the child has its copies: closing ours lets a worker's exit reach the reader as EOF
            self._child_ends[2 * i].close()
            self._child_ends[2 * i + 1].close()
            t = threading.Thread(target=self._read, args=(i,), name=f"gridgate-shard{i}-reader", daemon=True)
            t.start()
            self._readers.append(t)
        log.info("event=shards_started workers=%d", self.n)

    def submit(self, topic: str, payload: bytes) -> None:
        """From the MQTT thread: queue one message for the worker that owns its device."""
        self.submitted += 1
        device_id = self._route_device(topic)
        i = shard_of(device_id, self.n) if device_id else 0
        pending = self._pending[i]
        pending.append((topic, payload, device_id))
        if len(pending) >= BATCH_MESSAGES:
            self._send(i)

    def flush(self) -> None:
        """Hand every partial batch over (called when the MQTT thread has read all it had)."""
        for i in range(self.n):
            if self._pending[i]:
                self._send(i)

    def _send(self, i: int) -> None:
        batch, self._pending[i] = self._pending[i], []
        try:
            with self._lock:
                self._to[i].send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:  # the worker died: never take the MQTT thread down with it
            self.lost += len(batch)
            log.error(
                "event=shard_down shard=%d pid=%s lost_messages=%d error=%r fix='see the worker's log; "
                "restart the gateway'",
                i,
                self._procs[i].pid,
                self.lost,
                exc,
            )

    def alive(self) -> bool:
        return all(p.is_alive() for p in self._procs)

    def _read(self, i: int) -> None:
        conn = self._from[i]
        while True:
            try:
                rep: WorkerReport = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            try:
                self._apply(i, rep)
            except Exception:  # one bad report must not stop the stream of the others
                log.exception("event=shard_report_failed shard=%d", i)
            if rep.final:
                return

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush, tell each worker to finish (they write or spool what they hold), wait for their reports."""
        self.flush()
        with self._lock:
            for conn in self._to:
                conn.send_bytes(b"")
        for proc in self._procs:
            proc.join(timeout_s)
            if proc.is_alive():
                log.error("event=shard_stop_timeout pid=%s", proc.pid)
                proc.kill()
        for t in self._readers:
            t.join(timeout=5)
