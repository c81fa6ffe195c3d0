"""`gridgate gateway --role ingest`: one of several replicas that share the devices' uplinks.

The devices are split into `cluster.buckets` buckets (gateway/cluster/buckets.py); every bucket,
and the edge boxes' topics as one more, is owned by exactly one replica at a time, through a
PostgreSQL advisory lock (gateway/cluster/leases.py) and a broker session of its own
(gateway/cluster/session.py). The replicas count each other through their locks and rebalance
without a coordinator: one that dies loses its locks with its database connection, and the
others take its buckets over.

What makes a handover lose nothing and repeat nothing:
- a message is acknowledged to the broker only after a checkpoint saved its effects: the device
  states (PostgreSQL), its points (written to the time-series database or spooled) and the event
  changes it caused (an outbox row in the same transaction as the states);
- a new owner starts from the saved states and receives, from the broker session it takes over,
  every message the old owner had not acknowledged;
- event changes are published to the lead dispatcher (`{prefix}/internal/events`) only from the
  outbox, after the checkpoint, and the outbox row goes once the broker has acknowledged it; rows
  a dead owner left are published by the next one. A change may thus be published twice (the
  dispatcher drops the copy by event id, state and time), never lost and never made twice.
Alert hygiene, alert topics, the event log and tickets are the dispatcher's (gateway/service.py in
`--role dispatch`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from functools import partial
from typing import Any

import psycopg
from prometheus_client import start_http_server
from pydantic import TypeAdapter

from devices.engine import DeviceEngine
from devices.registry import load_registry
from devices.types import Device
from gateway.cluster.buckets import bucket_devices, bucket_of, device_filters
from gateway.cluster.changes import FEED_SUBSCRIBED
from gateway.cluster.leases import Leases, rebalance
from gateway.cluster.session import AckingSession
from gateway.edge_ingest import EdgeIngest
from gateway.grids import GridIndex
from gateway.metrics import GatewayMetrics
from gateway.mqtt import GatewayMQTT
from gateway.pipeline import Pipeline
from gateway.runtime import check_vendor_codecs, tune_gc
from gateway.sinks.runner import SinkRunner
from gateway.store import GatewayStore
from gridgate.clock import Clock, SystemClock
from gridgate.config import GatewayConfig
from gridgate.models import Event
from gridgate.topics import Topics

log = logging.getLogger("gridgate.cluster")

EVENTS = TypeAdapter(list[Event])
PERSIST_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 5.0


class LeaseLost(RuntimeError):
    """The database connection holding this replica's locks is gone: someone else may own its devices."""


class IngestReplica:
    """`start()` / `stop()`; `failed` says why it stopped on its own (then exit and be restarted)."""

    def __init__(self, cfg: GatewayConfig, *, clock: Clock | None = None) -> None:
        self.cfg = cfg
        url = cfg.cluster.url()
        self.clock = clock or SystemClock()
        self.n = cfg.cluster.buckets
        self.edge_unit = self.n  # the edge boxes' topics: unit n, after the device buckets
        self.topics = Topics(cfg.broker.topic_prefix)
        self.metrics = GatewayMetrics()
        self.registry = load_registry(cfg.devices_file)
        self.grids = GridIndex.load(cfg.grids_file, cfg.fallback_grid)
        check_vendor_codecs(cfg)
        self._vendor = cfg.all_vendor_topics()
        self._devices = bucket_devices(self.registry, self.n)
        self.store = GatewayStore(url)
        self.leases = Leases(url, self.topics.prefix)
        self.slot = self.leases.join()
        self.name = f"{cfg.broker.client_id}-ingest-{self.slot}"
        self.sessions: dict[int, AckingSession] = {}
        self.engine = DeviceEngine(self.registry, owns=lambda _d: False)  # devices come with their buckets
        self.runner = SinkRunner.from_config(
            cfg.influx,
            cfg.storage,
            self.metrics,
            spool_path=cfg.storage.data_dir / f"spool-{self.name}.sqlite",
            dead_letter=lambda body: self.mqtt.publish(self.topics.dead_letter, body, 1),
        )
        broker = cfg.broker.model_copy(update={"client_id": self.name, "shared_group": None})
        self.mqtt = GatewayMQTT(broker, [], lambda *_: None)  # publishes only: dead letters, the outbox
        self.pipeline = Pipeline(
            cfg, self.registry, self.engine, self.grids, self.runner, self.mqtt, self._on_events, self.metrics
        )
        self.edge = EdgeIngest.for_pipeline(self.pipeline)
        self._lock = threading.Lock()  # one message at a time: a checkpoint captures whole ones
        self._ckpt_lock = threading.Lock()  # checkpoints, takes, gives and rollbacks one at a time
        self._events: list[Event] = []  # event changes since the last checkpoint
        self._rng = random.Random(self.slot)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: str | None = None
        self.checkpoints = 0
        self._feed_exists = False
        self._metrics_server: Any = None

    # messages -----------------------------------------------------------------------------------
    def _handle(self, unit: int, topic: str, payload: bytes) -> None:
        """A bucket session's network thread."""
        now = self.clock.now()
        with self._lock:
            if unit != self.edge_unit:
                self.pipeline.handle(topic, payload, now)
                return
            et = self.topics.parse_edge(topic)
            if et is None:
                self.pipeline.handle(topic, payload, now)  # rejected as unknown_topic
            else:
                self.edge.handle(topic, et, payload, now)

    def _on_events(self, changed: list[Event]) -> None:
        """From the pipeline, under `_lock`: kept for the next checkpoint's outbox."""
        self._events.extend(changed)

    def _unit_of(self, ev: Event) -> int:
        return bucket_of(ev.source_id, self.n) if ev.source_type == "device" else self.edge_unit

    # buckets ------------------------------------------------------------------------------------
    def _filters(self, unit: int) -> list[str]:
        if unit == self.edge_unit:
            return [self.topics.edge_filter]
        return [f for d in self._devices[unit] for f in device_filters(d, self.topics, self._vendor)]

    def _unit_devices(self, unit: int) -> list[Device]:
        return [] if unit == self.edge_unit else self._devices[unit]

    def _restore(self, unit: int) -> int:
        """Under `_lock`: the unit's devices from their saved states (a fresh offline timer each)."""
        devices = self._unit_devices(unit)
        saved = self.store.load_device_states(d.id for d in devices)
        now = self.clock.now()
        for device in devices:
            state = saved.get(device.id)
            if state is None:
                self.engine.track(device, now)
            else:
                self.engine.restore(device.id, state, now)
        return len(saved)

    def _take(self, unit: int) -> None:
        with self._ckpt_lock, self._lock:
            restored = self._restore(unit)
        session = AckingSession(
            self.cfg.broker,
            f"{self.cfg.broker.client_id}-bucket-{unit}",
            self._filters(unit),
            partial(self._handle, unit),
            on_reconnect=partial(self._rollback, unit),
        )
        self.sessions[unit] = session.start()
        log.info(
            "event=bucket_taken replica=%s bucket=%s devices=%d states_restored=%d",
            self.name,
            "edge" if unit == self.edge_unit else unit,
            len(self._unit_devices(unit)),
            restored,
        )

    def _give(self, unit: int) -> None:
        """Hand a unit over: stop taking its messages, save what was done, leave the rest to the next."""
        session = self.sessions[unit]
        session.paused = True
        self.checkpoint()
        session.stop()
        del self.sessions[unit]
        with self._lock:
            self.engine.forget(d.id for d in self._unit_devices(unit))
        self.leases.unlock("bucket", unit)
        log.info(
            "event=bucket_given replica=%s bucket=%s", self.name, "edge" if unit == self.edge_unit else unit
        )

    def _rollback(self, unit: int) -> None:
        """The unit's session reconnected: the broker resends what was not acknowledged, so go back to
        the last checkpoint (states saved, event changes since dropped) before handling it again."""
        with self._ckpt_lock, self._lock:
            ids = {d.id for d in self._unit_devices(unit)}
            self.engine.forget(ids)
            self._restore(unit)
            self._events = [e for e in self._events if self._unit_of(e) != unit]
        log.warning(
            "event=bucket_rolled_back replica=%s bucket=%s reason='session reconnected'", self.name, unit
        )

    def _rebalance(self) -> None:
        members = len(self.leases.held("member"))
        units = self.n + 1
        plan = rebalance(
            set(self.sessions), self.leases.free("bucket", range(units)), units, members, self._rng
        )
        for unit in plan.give:
            self._give(unit)
        for unit in plan.take:
            if self.leases.try_lock("bucket", unit):
                self._take(unit)

    # checkpoints --------------------------------------------------------------------------------
    def checkpoint(self) -> bool:
        """Save states and the outbox, then acknowledge what they account for, then publish the outbox."""
        with self._ckpt_lock:
            with self._lock:
                touched = self.engine.take_touched()
                states = {d: self.engine.snapshot(d) for d in touched}
                events, self._events = self._events, []
                marks = {unit: s.mark() for unit, s in self.sessions.items()}
                added = self.runner.added
            try:
                if not (self.runner.durable >= added or self.runner.persist(PERSIST_TIMEOUT_S)):
                    raise TimeoutError(f"points not durable within {PERSIST_TIMEOUT_S:g} s")
                by_unit: dict[int, list[Event]] = {}
                for ev in events:
                    by_unit.setdefault(self._unit_of(ev), []).append(ev)
                outbox = [(unit, EVENTS.dump_json(evs).decode()) for unit, evs in by_unit.items()]
                self.store.save_checkpoint(states, [], {}, self.clock.now(), outbox=outbox)
            except Exception as exc:
                with self._lock:
                    self._events[:0] = events
                    self.engine.mark_touched(touched)
                log.warning("event=checkpoint_deferred replica=%s error=%r", self.name, exc)
                return False
            for unit, mark in marks.items():
                session = self.sessions.get(unit)
                if session is not None:
                    session.ack(mark)
            self.checkpoints += 1
            self._publish_outbox()
            return True

    def _publish_outbox(self) -> None:
        """Publish what waits in the outbox of the units owned here (a dead owner's rows first: older)."""
        if not self.sessions:
            return
        if not self._feed_exists:  # published before the lead dispatcher ever subscribed, it would be lost
            self._feed_exists = self.store.load_mark(FEED_SUBSCRIBED) is not None
            if not self._feed_exists:
                return
        done = []
        for row_id, body in self.store.load_outbox(self.sessions):
            if not self.mqtt.publish_wait(self.topics.internal_events, body.encode(), PUBLISH_TIMEOUT_S):
                break  # kept, in order, for the next checkpoint
            done.append(row_id)
        self.store.delete_outbox(done)

    # lifecycle ----------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        next_silence = next_checkpoint = 0.0
        next_lease = time.monotonic() + self.cfg.cluster.lease_check_s  # let replicas starting with us join
        while not self._stop.wait(0.05):
            try:
                if time.monotonic() >= next_lease:
                    next_lease = time.monotonic() + self.cfg.cluster.lease_check_s
                    try:
                        self.leases.ping()
                    except psycopg.Error as exc:
                        raise LeaseLost(str(exc)) from exc
                    self._rebalance()
                now = self.clock.now()
                if now >= next_silence:
                    next_silence = now + self.cfg.offline_check_s
                    with self._lock:
                        self.pipeline.check_silence(now)
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + self.cfg.cluster.checkpoint_s
                    self.checkpoint()
            except (LeaseLost, psycopg.OperationalError) as exc:
                self._fail(f"lost the database connection that holds its locks: {exc}")
                return
            except Exception:
                log.exception("event=housekeeping_failed replica=%s", self.name)

    def _fail(self, reason: str) -> None:
        """Stop handling at once, acknowledging nothing more: the buckets may be someone else's now."""
        self.failed = reason
        for session in self.sessions.values():
            session.stop()
        self.sessions.clear()
        log.error(
            "event=replica_failed replica=%s reason=%r fix='restart it (systemd Restart=always): its buckets "
            "went to the other replicas with their saved state'",
            self.name,
            reason,
        )

    def _serve_metrics(self) -> None:
        m = self.metrics
        m.gauge("cluster_buckets_owned", lambda: float(len(self.sessions)))
        m.gauge("cluster_checkpoints", lambda: float(self.checkpoints))
        m.gauge("cluster_replica_failed", lambda: float(self.failed is not None))
        m.gauge(
            "cluster_messages_unacknowledged", lambda: float(sum(s.mark()[1] for s in self.sessions.values()))
        )
        port = self.cfg.cluster.metrics_port
        if port is not None:
            self._metrics_server, _ = start_http_server(port, addr=self.cfg.api.host, registry=m.registry())
            log.info("event=replica_metrics replica=%s address=%s:%d", self.name, self.cfg.api.host, port)

    def start(self, wait_for_broker_s: float = 10.0) -> IngestReplica:
        tune_gc()
        self._serve_metrics()
        self.runner.start()
        self.mqtt.start(wait_s=wait_for_broker_s)
        self._thread = threading.Thread(target=self._housekeeping, name="gridgate-replica", daemon=True)
        self._thread.start()
        log.info(
            "event=replica_started replica=%s slot=%d buckets=%d devices=%d sink=%s",
            self.name,
            self.slot,
            self.n,
            len(self.registry),
            self.cfg.influx.api,
        )
        return self

    def stop(self) -> None:
        """Hand every bucket back (saved and acknowledged), then close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.failed is None:
            for session in self.sessions.values():
                session.paused = True
            self.checkpoint()
            for unit, session in list(self.sessions.items()):
                session.stop()
                self.leases.unlock("bucket", unit)
            self.sessions.clear()
        self.runner.close()
        self.mqtt.stop()
        self.leases.close()
        self.store.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        log.info("event=replica_stopped replica=%s checkpoints=%d", self.name, self.checkpoints)

    def owned(self) -> set[int]:
        return set(self.sessions)
