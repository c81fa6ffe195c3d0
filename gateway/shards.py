"""Ingest across worker processes, each owning a fixed share of the devices.

One Python process is bound by its GIL at ~12,000 messages/s (shared/BENCHMARKS.md). With
`ingest.workers: N`, the gateway's MQTT thread only receives and routes: each message goes, in
batches, to the worker that owns its device (a stable hash of the device id), so a device's rules,
hysteresis timers and stuck/offline state live in exactly one place, unlike MQTT shared
subscriptions, which spread one device's messages over every subscriber. A worker decodes, runs
the rules and writes the readings itself (its own sink runner and spool); its dead letters, its
event changes, its counters and snapshots of its devices' state come back to the gateway process,
which decides alert hygiene for the events, publishes them, writes their points, stores and serves
them as in one process.

Crash safety (gateway/journal.py): each message carries its journal sequence number. The gateway
asks every worker for a checkpoint every `ingest.checkpoint_s`; a worker answers, once its points
up to then are durable (written or spooled), with the sequence number it has handled and the state
of every device it touched since its last answer. The gateway saves those states with that number
as the worker's mark; after a crash the journal is replayed from the lowest mark and each worker
skips what its own mark already accounts for, so no message is lost and none is applied twice.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import pickle
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from devices.engine import DeviceEngine, DeviceView
from devices.registry import load_registry
from gateway.grids import GridIndex
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.runtime import tune_gc
from gateway.sinks.runner import SinkRunner
from gridgate.config import GatewayConfig
from gridgate.logs import setup_logging
from gridgate.models import Event

log = logging.getLogger("gridgate.shards")

BATCH_MESSAGES = 512  # messages per hand-off to a worker: amortises the pipe and pickle costs
REPORT_EVERY_S = 0.05  # a worker sends its results back at least this often while busy
PERSIST_TIMEOUT_S = 5.0  # a checkpoint waits this long for the worker's points to be durable

#: one message for a worker: (journal seq, receive time, topic, payload, device id)
Item = tuple[int, float, str, bytes, str | None]


def shard_of(device_id: str, workers: int) -> int:
    """The worker that owns a device: stable across restarts, so restored state lands where it is used."""
    return zlib.crc32(device_id.encode()) % workers


@dataclass
class WorkerReport:
    """What a worker sends back: the gateway process applies it in order."""

    publishes: list[tuple[str, bytes, int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    views: dict[str, DeviceView] = field(default_factory=dict)  # devices changed since the last report
    counters: dict[str, int] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    events_out: Counter[tuple[str, str]] = field(default_factory=Counter)
    gauges: dict[str, float] = field(default_factory=dict)
    checkpoint: int | None = None  # every message up to this seq is durable, `snapshots` account for it
    sink_error: str | None = None  # the worker's last time-series write error (no credentials)
    final: bool = False


class _Relay:
    """The worker's outbox and event listener: collects what the gateway process must act on."""

    def __init__(self) -> None:
        self.report = WorkerReport()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.report.publishes.append((topic, payload, qos))

    def on_events(self, changed: list[Event]) -> None:
        self.report.events.extend(changed)


_COUNTERS = (
    "messages_in",
    "messages_decoded",
    "readings",
    "points_written",
    "write_errors",
    "points_refused",
    "fields_dropped",
)


def worker_main(
    index: int,
    cfg: GatewayConfig,
    states: dict[str, dict[str, Any]],
    skip_through: int,
    inbox: Connection,
    outbox: Connection,
    log_level: str,
) -> None:
    """A worker process: handle batches from the gateway, report back, until told to stop (b"").

    Messages with a journal seq up to `skip_through` are already in `states` (a replay after a
    crash resends them): they are skipped.
    """
    setup_logging(log_level)
    registry = load_registry(cfg.devices_file)
    metrics = GatewayMetrics()
    workers = cfg.ingest.workers
    engine = DeviceEngine(registry, started_at=time.time(), owns=lambda d: shard_of(d, workers) == index)
    for device_id, state in states.items():
        if registry.get(device_id) is not None:
            engine.restore(device_id, state)

    def dead_letter(body: bytes) -> None:
        """From the sink thread: under send_lock, so it never lands in a report already sent."""
        with send_lock:
            relay.publish(pipeline.topics.dead_letter, body, 1)

    runner = SinkRunner.from_config(
        cfg.influx,
        cfg.storage,
        metrics,
        processes=workers + 1,  # the gateway and each worker keep a share of buffer_max_points
        spool_path=cfg.storage.data_dir / f"spool-shard{index}.sqlite",
        dead_letter=dead_letter,
    ).start()
    relay = _Relay()
    grids = GridIndex.load(cfg.grids_file, cfg.fallback_grid)
    pipeline = Pipeline(cfg, registry, engine, grids, runner, relay, relay.on_events, metrics)
    sent = dict.fromkeys(_COUNTERS, 0)
    send_lock = threading.Lock()
    batch_lock = threading.Lock()  # held while a batch is handled (never while waiting for one)
    handled = skip_through  # the newest journal seq handled here
    # checkpoints asked for and captured, waiting for their points to be durable: (seq, points added, states)
    captured: list[tuple[int, int, dict[str, dict[str, Any]]]] = []

    def report(
        final: bool = False, snapshots: dict[str, dict[str, Any]] | None = None, checkpoint: int | None = None
    ) -> None:
        """Send what happened since the last report, with device snapshots and a checkpoint if given."""
        with batch_lock, send_lock, pipeline.lock:  # between batches: every counter tells one story
            rep, relay.report = relay.report, WorkerReport()
            for name in _COUNTERS:
                value = getattr(metrics, name)
                rep.counters[name] = value - sent[name]
                sent[name] = value
            rep.rejected, metrics.rejected = metrics.rejected, Counter()
            rep.ignored, metrics.ignored = metrics.ignored, Counter()
            rep.events_out, metrics.events_out = metrics.events_out, Counter()
            rep.gauges = {name: read() for name, read in metrics.gauges.items()}
            rep.sink_error = runner.status()["last_error"]
            rep.snapshots = snapshots or {}
            rep.views = engine.take_views()
            rep.checkpoint = checkpoint
            rep.final = final
            try:
                outbox.send_bytes(pickle.dumps(rep, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:  # the gateway process is gone (killed): nobody to report to
                stop.set()

    def capture(seq: int) -> None:
        """The state as of journal seq `seq` (every message up to it handled), for a checkpoint."""
        with pipeline.lock:
            touched = engine.take_touched()
            snaps = {d: engine.snapshot(d) for d in touched}
        captured.append((seq, runner.added, snaps))

    stop = threading.Event()

    def housekeeping() -> None:
        next_silence = 0.0
        while not stop.wait(REPORT_EVERY_S):
            now = time.time()
            if now >= next_silence:
                pipeline.check_silence(now)
                next_silence = now + cfg.offline_check_s
            if captured:
                seq, added, snaps = captured[0]
                if runner.durable >= added or runner.persist(PERSIST_TIMEOUT_S):
                    captured.pop(0)
                    report(snapshots=snaps, checkpoint=seq)
                    continue
            if relay.report.publishes or relay.report.events or metrics.messages_in != sent["messages_in"]:
                report()  # whatever changed reaches the gateway within REPORT_EVERY_S, not at a checkpoint

    keeper = threading.Thread(target=housekeeping, name=f"gridgate-shard{index}-housekeeping", daemon=True)
    tune_gc()
    keeper.start()
    report()  # "ready": the gateway waits for this before it takes messages from the broker
    try:
        while not stop.is_set():
            data = inbox.recv_bytes()
            if not data:
                break
            kind, body = pickle.loads(data)
            if kind == "ckpt":
                handled = max(handled, body)
                capture(handled)
                continue
            handle = pipeline.handle
            with batch_lock:
                for seq, received_at, topic, payload, _ in body:
                    if seq > handled:
                        handle(topic, payload, received_at)
                        handled = seq
    except (EOFError, OSError):
        # the gateway process is gone: write what we hold, then leave (its journal replays the rest)
        log.warning("event=shard_orphaned shard=%d handled_seq=%d", index, handled)
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group: the gateway stops us in order
    finally:
        stop.set()
        keeper.join(timeout=5)
        runner.close()
        with pipeline.lock:
            everything = engine.snapshot_all()
        report(final=True, snapshots=everything, checkpoint=handled)
        outbox.close()


class ShardPool:
    """The gateway process's side: route messages to workers, apply what they report."""

    def __init__(
        self,
        cfg: GatewayConfig,
        states: dict[str, dict[str, Any]],
        marks: list[int],
        route_device: Any,
        apply: Any,
        log_level: str = "info",
    ) -> None:
        """`marks[i]`: the journal seq worker i's saved states account for (it skips a replay up to it)."""
        self.n = cfg.ingest.workers
        self._route_device = route_device
        self._apply = apply
        ctx = mp.get_context("spawn")  # never fork a process that runs threads
        self._procs: list[Any] = []
        self._to: list[Connection] = []
        self._from: list[Connection] = []
        self._pending: list[list[Item]] = [[] for _ in range(self.n)]
        self._child_ends: list[Connection] = []
        self._lock = threading.Lock()
        for i in range(self.n):
            mine = {d: s for d, s in states.items() if shard_of(d, self.n) == i}
            in_r, in_w = ctx.Pipe(duplex=False)
            out_r, out_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=worker_main,
                args=(i, cfg, mine, marks[i], in_r, out_w, log_level),
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
        # checkpoints the workers answered, not yet saved: per worker (seq, device states since the last save)
        self._ckpt_lock = threading.Lock()
        self._marks: list[int] = list(marks)
        self._skip = list(marks)  # a replay up to here is in worker i's saved state already
        self._ckpt_states: list[dict[str, dict[str, Any]]] = [{} for _ in range(self.n)]
        self._stopped = False
        self._ready = [threading.Event() for _ in range(self.n)]

    def start(self, ready_timeout_s: float = 120.0) -> None:
        """Start the workers and wait until each has loaded its share (imports, registry, spool)."""
        for i, proc in enumerate(self._procs):
            proc.start()
            # the child has its copies: closing ours lets a worker's exit reach the reader as EOF
            self._child_ends[2 * i].close()
            self._child_ends[2 * i + 1].close()
            t = threading.Thread(target=self._read, args=(i,), name=f"gridgate-shard{i}-reader", daemon=True)
            t.start()
            self._readers.append(t)
        deadline = time.monotonic() + ready_timeout_s
        for i, ready in enumerate(self._ready):
            if not ready.wait(max(0.0, deadline - time.monotonic())):
                log.error(
                    "event=shard_not_ready shard=%d pid=%s timeout_s=%s fix='see the worker's log'",
                    i,
                    self._procs[i].pid,
                    ready_timeout_s,
                )
        log.info("event=shards_started workers=%d", self.n)

    def submit(self, seq: int, received_at: float, topic: str, payload: bytes) -> None:
        """From the MQTT thread: queue one message for the worker that owns its device.

        A replayed message the worker's saved state already accounts for is not sent at all."""
        device_id = self._route_device(topic)
        i = shard_of(device_id, self.n) if device_id else 0
        if seq <= self._skip[i]:
            return
        with self._lock:
            self.submitted += 1
            pending = self._pending[i]
            pending.append((seq, received_at, topic, payload, device_id))
            if len(pending) >= BATCH_MESSAGES:
                self._send(i)

    def flush(self) -> None:
        """Hand every partial batch over (the MQTT thread has read all it had, or someone waits)."""
        with self._lock:
            for i in range(self.n):
                if self._pending[i]:
                    self._send(i)

    def request_checkpoint(self, seq: int) -> None:
        """Ask every worker for a checkpoint at journal seq `seq` (every message up to it submitted).

        Under the one lock every hand-off takes: a batch taken by another thread cannot reach a
        worker after the checkpoint request that accounts for it (the worker would skip it)."""
        if self._stopped:
            return  # their final reports carry their last checkpoint
        with self._lock:
            for i in range(self.n):
                if self._pending[i]:
                    self._send(i)
                self._post(i, ("ckpt", seq), 0)

    def take_checkpoints(self) -> tuple[list[int], dict[str, dict[str, Any]]]:
        """The workers' marks and the device states they account for, handed over for saving."""
        with self._ckpt_lock:
            states: dict[str, dict[str, Any]] = {}
            for i in range(self.n):
                states.update(self._ckpt_states[i])
                self._ckpt_states[i] = {}
            return list(self._marks), states

    def give_back(self, states: dict[str, dict[str, Any]]) -> None:
        """States whose save failed: kept for the next checkpoint (newer answers win)."""
        with self._ckpt_lock:
            for device_id, state in states.items():
                self._ckpt_states[shard_of(device_id, self.n)].setdefault(device_id, state)

    def _send(self, i: int) -> None:
        """Under `_lock`: batches reach each worker in journal order, checkpoint requests after them."""
        batch, self._pending[i] = self._pending[i], []
        self._post(i, ("batch", batch), len(batch))

    def _post(self, i: int, message: tuple[str, Any], count: int) -> None:
        """Under `_lock`."""
        try:
            self._to[i].send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:  # the worker died: never take the MQTT thread down with it
            self.lost += count
            log.error(
                "event=shard_down shard=%d pid=%s lost_messages=%d error=%r fix='see the worker's log; "
                "restart the gateway (its journal replays what the worker had not made durable)'",
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
                self._ready[i].set()  # it died: `start` must not wait for it (health says worker_down)
                return
            self._ready[i].set()
            try:
                self._apply(i, rep)
            except Exception:  # one bad report must not stop the stream of the others
                log.exception("event=shard_report_failed shard=%d", i)
            if rep.checkpoint is not None:
                with self._ckpt_lock:
                    self._ckpt_states[i].update(rep.snapshots)
                    self._marks[i] = max(self._marks[i], rep.checkpoint)
            if rep.final:
                return

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush, tell each worker to finish (they write or spool what they hold), wait for their reports."""
        self.flush()
        self._stopped = True
        with self._lock:
            for conn in self._to:
                with contextlib.suppress(OSError):  # already gone
                    conn.send_bytes(b"")
        for proc in self._procs:
            proc.join(timeout_s)
            if proc.is_alive():
                log.error("event=shard_stop_timeout pid=%s", proc.pid)
                proc.kill()
        for t in self._readers:
            t.join(timeout=5)
