"""The gateway service: wires config, registry, rules, sinks, store, MQTT and the API together."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import uvicorn
from pydantic import TypeAdapter, ValidationError

from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry, load_registry
from gateway.api import DeviceOut, Health, create_app
from gateway.api.auth import Authenticator
from gateway.cluster.changes import FEED_SUBSCRIBED, ChangeLog
from gateway.cluster.session import AckingSession
from gateway.cluster.view import ViewFeed
from gateway.edge_ingest import CameraFrame, EdgeIngest
from gateway.grids import GridIndex, GridMatch
from gateway.hygiene import CauseIndex, HygieneDesk, MaintenanceWindows, Target, behind_of, target_of
from gateway.journal import Journal, redelivery_key
from gateway.metrics import GatewayMetrics
from gateway.mqtt import GatewayMQTT
from gateway.pipeline import Pipeline
from gateway.platforms.native import NativeMessage
from gateway.platforms.queue import PushQueue
from gateway.platforms.receiver import PushReceiver
from gateway.runtime import check_vendor_codecs, tune_gc
from gateway.shards import ShardPool, WorkerReport
from gateway.sinks.runner import SinkRunner
from gateway.store import GatewayStore, sqlite_url
from gateway.stream import StreamHub
from gateway.tickets.channels import outbox_channels
from gateway.tickets.desk import Outcome
from gateway.tickets.models import TicketChange
from gateway.tickets.service import TicketService
from gateway.tickets.webhook import OutboxNotifier, WebhookOutbox, webhook_metrics
from gridgate.clock import Clock, SystemClock
from gridgate.config import ConfigError, GatewayConfig, open_api_exposure
from gridgate.models import Event, EventClass, utc
from gridgate.topics import Topics

log = logging.getLogger("gridgate.gateway")

WS_MAX_BYTES = 64 * 1024  # a WebSocket client sends only its auth and filters: uvicorn allows 16 MiB
BROKER_DROPPED = "broker_dropped_seen"  # stored beside the journal marks: the broker's $SYS drop counter
RELEASE_CHECK_S = 1.0  # how often muted events are checked for a cause or window that is over
FEED = TypeAdapter(list[Event])  # the lead dispatcher's feed: event changes from the ingest replicas
PUSH_FORWARD_TIMEOUT_S = 5.0  # cluster roles: a platform push waits this long for the broker's PUBACK
MIRROR_S = 1.0  # outside `--role all`: how often the devices' states saved by the replicas are read
MIRROR_OVERLAP_S = 5.0
WINDOWS_REFRESH_S = 10.0  # how often maintenance windows are re-read from the (shared) ticket database


class OwnChanges:
    """A notifier that remembers the last ticket changes this process made (so the copy the broker
    brings back is not taken for another process's)."""

    name = "own"

    def __init__(self, seen: OrderedDict[str, None], keep: int = 10_000) -> None:
        self.seen = seen
        self.keep = keep

    def notify(self, change: TicketChange) -> None:
        self.seen[change.id] = None
        while len(self.seen) > self.keep:
            self.seen.popitem(last=False)


class Gateway:
    """The central service. `with Gateway(cfg): ...` or `start()` / `stop()`."""

    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        clock: Clock | None = None,
        registry: DeviceRegistry | None = None,
        store_url: str | None = None,
        log_level: str = "info",
        fresh_broker: bool = False,
        role: Literal["all", "dispatch", "api"] = "all",
    ) -> None:
        """`fresh_broker`: the broker was started with this gateway (the demo's embedded one), so it
        cannot hold the session of an earlier run; no warning that it lost it.

        `role="dispatch"` (the lead dispatcher of a cluster, gateway/cluster/dispatch.py): no uplinks;
        event changes come from the ingest replicas on `{prefix}/internal/events`, each message
        acknowledged after the checkpoint that saved what it did; state in `cluster.database_url`.
        `role="api"` (an API replica, gateway/cluster/view.py): serves the API and the dashboard from
        the shared databases and the broker; people's actions change tickets there; no SLA timers,
        no webhook deliveries, no alert hygiene of its own (the lead dispatcher's)."""
        self.role = role
        self._files = ""
        if role != "all":
            store_url = store_url or cfg.cluster.url()
            name = "dispatch" if role == "dispatch" else f"api-{socket.gethostname()}-{cfg.api.port}"
            # its own journal, spool and mark: several roles may share a machine and a data_dir
            self._files = name
            cfg = cfg.model_copy(
                update={
                    "broker": cfg.broker.model_copy(
                        update={"client_id": f"{cfg.broker.client_id}-{name}"[:120], "shared_group": None}
                    ),
                    "ingest": cfg.ingest.model_copy(update={"checkpoint_s": cfg.cluster.checkpoint_s}),
                }
            )
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.metrics = GatewayMetrics()
        self.registry = registry if registry is not None else load_registry(cfg.devices_file)
        self.grids = GridIndex.load(cfg.grids_file, cfg.fallback_grid)
        check_vendor_codecs(cfg)
        self.auth = Authenticator(cfg.auth)
        self.store = GatewayStore(store_url or sqlite_url(cfg.storage.state_db))
        self.engine = DeviceEngine(self.registry, started_at=self.clock.now())
        saved_states = self.store.load_device_states()
        for device_id, state in saved_states.items():
            if self.registry.get(device_id) is not None:
                self.engine.restore(device_id, state)
        # crash safety: every message is journaled before its PUBACK, replayed from the last checkpoint
        journal_dir = cfg.storage.journal_dir
        self._mark_names = ["main"] + [f"shard{i}of{cfg.ingest.workers}" for i in range(cfg.ingest.workers)]
        if self._files:
            journal_dir = cfg.storage.data_dir / f"journal-{self._files}"
            self._mark_names = [f"main-{self._files}"]
        self.journal = Journal(journal_dir, fsync=cfg.storage.journal_fsync)
        self._marks = self._load_marks()
        self.journal.advance_to(max(self._marks))
        self._ingest_lock = threading.Lock()  # held while one message is handled: checkpoints see whole ones
        self._redelivered: set[tuple[int, str, int]] = set()
        self._carry: set[str] = set()  # devices whose captured state a failed checkpoint did not save
        self._handled_seq = 0  # the newest journaled message handed to the pipeline or a worker
        self._closing = False  # stopping: messages are journaled (for the next start), not handled
        self.checkpoint_seq = min(self._marks)
        self.journal_bytes = 0
        self._checkpoint_at = time.monotonic()
        self.sink_name = "sqlite" if cfg.influx.api == "none" else f"influx-{cfg.influx.api} {cfg.influx.url}"
        self.runner = SinkRunner.from_config(
            cfg.influx,
            cfg.storage,
            self.metrics,
            processes=cfg.ingest.workers + 1,  # the gateway and each worker keep a share of the cap
            spool_path=cfg.storage.data_dir / f"spool-{self._files}.sqlite" if self._files else None,
            dead_letter=lambda body: self.mqtt.publish(self.topics.dead_letter, body, 1),
        )
        self.topics = Topics(cfg.broker.topic_prefix)
        subscriptions = [self.topics.device_filter, self.topics.edge_filter]
        subscriptions += [vt.subscription for vt in cfg.all_vendor_topics()]
        self.feed: AckingSession | None = None
        self._mirrored_at = 0.0
        if role != "all":
            subscriptions = []  # the ingest replicas own the uplinks
        if role == "dispatch":
            self.feed = AckingSession(
                cfg.broker, f"{cfg.broker.client_id}-events", [self.topics.internal_events], self._on_feed
            )
            self._fed = ChangeLog()
        self.shards: ShardPool | None = None
        self._shard_gauges: dict[int, dict[str, float]] = {}
        self._shard_errors: dict[int, str | None] = {}
        if cfg.ingest.workers:
            self.shards = ShardPool(
                cfg, saved_states, self._marks[1:], self._device_of, self._apply_report, log_level=log_level
            )
        self.mqtt = GatewayMQTT(
            cfg.broker,
            subscriptions,
            self._on_message,
            on_connect=self._on_connect,
            on_read_done=self.shards.flush if self.shards else None,
            before_send=self.journal.flush,
            expect_session=self.journal.last_seq > 0 and not fresh_broker,
            dropped_seen=self.store.load_mark(BROKER_DROPPED),
            shed_first=self.topics.dead_letter,
        )
        self.metrics.gauge("mqtt_refused_publishes", lambda: float(self.mqtt.refused_publishes))
        self.metrics.gauge("mqtt_publish_backlog", lambda: float(self.mqtt.backlog))
        self.metrics.gauge("mqtt_publishes_dropped", lambda: float(self.mqtt.publishes_dropped))
        self.metrics.gauge("mqtt_dead_letters_shed", lambda: float(self.mqtt.dead_letters_shed))
        self.metrics.gauge("mqtt_sessions_lost", lambda: float(self.mqtt.sessions_lost))
        self.metrics.gauge("broker_dropped_messages", lambda: float(self.mqtt.broker_dropped))
        self.metrics.gauge("journal_replayed", lambda: float(self.replayed))
        self.metrics.gauge("redeliveries_skipped", lambda: float(self.redeliveries_skipped))
        self.metrics.gauge("journal_bytes", lambda: float(self.journal_bytes))
        self.metrics.gauge("checkpoint_age_seconds", self.checkpoint_age_s)
        self.replayed = 0  # messages replayed from the journal at start
        self.redeliveries_skipped = 0  # DUP messages the journal already held
        self._listeners: list[Callable[[list[Event]], None]] = []
        self._pending_events: list[Event] = []
        self._pending_lock = threading.Lock()
        self.pipeline = Pipeline(
            cfg, self.registry, self.engine, self.grids, self.runner, self.mqtt, self._remember, self.metrics
        )
        # alert hygiene (docs/alert-hygiene.md): decided here, for every worker's events, before any listener
        self.windows = MaintenanceWindows(
            cfg.tickets.url(cfg.storage), cfg.hygiene.maintenance_windows, ZoneInfo(cfg.timezone)
        )
        self.hygiene = HygieneDesk(
            CauseIndex(cfg.hygiene.inhibit, cfg.hygiene.recovery_s, behind_of(self.registry)),
            self._window_for,
        )
        self.hygiene.rebuild(
            self.store.events_active_or_ended_since(utc(self.clock.now() - cfg.hygiene.recovery_s))
        )
        self._hygiene_lock = threading.Lock()  # one decision at a time, announced in the order made
        self.metrics.gauge("events_muted_now", lambda: float(len(self.hygiene.muted_now())))
        self.metrics.gauge("events_muted", lambda: float(self.hygiene.muted_total))
        self.metrics.gauge("events_unmuted", lambda: float(self.hygiene.released_total))
        # operator platforms' HTTP push (CTWing, OneNET): journaled like MQTT, handed over by a thread
        self.push_queue = PushQueue(
            self._ingest_lock, self._dispatch_pushed, self.shards.flush if self.shards else None
        )
        self.push: PushReceiver | None = None
        if cfg.platforms.ctwing.enabled or cfg.platforms.onenet.enabled:
            self.push = PushReceiver(
                cfg.platforms,
                registry=self.registry,
                topics=self.topics,
                data_dir=cfg.storage.data_dir / f"push-{self._files}"
                if self._files
                else cfg.storage.data_dir,
                clock=self.clock,
                journal=self.ingest_push if role == "all" else self._forward_push,
                reject=self.pipeline.reject,
            )
            self.metrics.add_collector(self.push.metrics.collect)
        # tickets (issue 3): event changes -> grid tickets, dispatched on {prefix}/tickets/{team}
        self.tickets: TicketService | None = None
        if cfg.tickets.enabled:
            self.tickets = TicketService.for_gateway(self)
            self.add_event_listener(self.tickets.on_events)
        # the command centre's WebSocket stream: every alert and every ticket change
        self.stream = StreamHub(cfg.api.stream_queue_max, team_of=self._team_of)
        self.add_event_listener(self.stream.on_events)
        self.metrics.add_collector(self.stream.collect)
        self.outbox: WebhookOutbox | None = None
        self.webhooks: list[OutboxNotifier] = []  # webhooks and robots
        self._own_changes: OrderedDict[str, None] = OrderedDict()  # ticket changes made here
        if self.tickets is not None:
            self.tickets.add_notifier(self.stream)
            self.tickets.add_notifier(OwnChanges(self._own_changes))
            self._add_webhooks()
        # outside `--role all`, ticket changes made by another process refresh this desk (and, in an
        # API replica, alerts and those changes reach its WebSocket clients)
        self.view: ViewFeed | None = None
        if role != "all":
            self.view = ViewFeed(cfg.broker, self.topics, self._relay_alert, self._on_ticket_change)
        self._edge_prefix = f"{self.topics.prefix}/edge/"
        self.edge = EdgeIngest.for_pipeline(self.pipeline)
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._api_server: uvicorn.Server | None = None
        self._api_thread: threading.Thread | None = None

    # wiring ------------------------------------------------------------------------------
    def _add_webhooks(self) -> None:
        """One notifier per `tickets.webhooks` and `tickets.robots` entry, sharing one outbox table."""
        assert self.tickets is not None
        if not self.cfg.tickets.webhooks and not self.cfg.tickets.robots:
            return
        self.outbox = WebhookOutbox(self.tickets.store.url)
        grid_names = {gid: props.name for gid, props in self.grids.grids.items() if props.name}
        channels, problems = outbox_channels(self.cfg, grid_names)
        if problems:
            raise ConfigError("gateway config", problems)
        for channel, policy in channels:
            notifier = OutboxNotifier(
                channel,
                policy,
                self.outbox,
                origin=self.cfg.broker.client_id,
                clock=self.clock,
                dead_letter=lambda body: self.mqtt.publish(self.topics.dead_letter, body, 1),
            )
            self.webhooks.append(notifier)
            self.tickets.add_notifier(notifier)
        self.metrics.add_collector(webhook_metrics(self.webhooks))

    def _team_of(self, ev: Event) -> str | None:
        """The team an alert's ticket would go to (for the stream's team filter)."""
        if self.tickets is None:
            return None
        grids = self.grids.grids
        return self.tickets.desk.routing.route(
            ev.kind,
            is_fault=ev.event_class == EventClass.fault,
            grid=grids.get(ev.grid_id) if ev.grid_id else None,
            micro_grid=grids.get(ev.micro_grid_id) if ev.micro_grid_id else None,
        ).team

    def report_event(self, event: Event) -> Outcome | None:
        """An event from outside the broker (an Open311 report): stored, streamed, ticketed at once.

        The ticket is made on the caller's thread, so the caller can answer with its id.
        """
        if event.grid_id is None:
            if event.location is not None:
                match = self.grids.locate(event.location.lat, event.location.lon)
            else:
                match = GridMatch(self.grids.fallback_grid, None, True)
            event.grid_id, event.micro_grid_id = match.grid_id, match.micro_grid_id
            if match.fallback:
                event.measurements.setdefault("grid_fallback", True)
        with self._hygiene_lock:
            [event] = self.hygiene.decide([event], self.clock.now())
            with self._pending_lock:
                self._pending_events.append(event)
        self.mqtt.publish(self.topics.alert(event.grid_id, event.kind), event.model_dump_json().encode(), 1)
        self.metrics.events_out[(event.kind, event.state.value)] += 1
        if self.role != "api":  # an API replica's stream hears it back from the broker, as every alert
            self.stream.on_events([event])
        return self.tickets.process([event]) if self.tickets is not None else None

    def _on_message(self, topic: str, payload: bytes, mid: int, dup: bool) -> None:
        """The MQTT thread: journal the message (its PUBACK leaves after the journal write), handle it."""
        if dup and self._redelivered:
            key = redelivery_key(mid, topic, payload)
            if key in self._redelivered:  # journaled before a crash, its PUBACK never left: replayed
                self._redelivered.discard(key)
                self.redeliveries_skipped += 1
                return
        with self._ingest_lock:
            now = self.clock.now()
            seq = self.journal.append(now, mid, topic, payload)
            if not self._closing:
                self._dispatch(seq, now, topic, payload)
                self._handled_seq = seq

    def _dispatch(self, seq: int, now: float, topic: str, payload: bytes) -> None:
        if topic.startswith(self._edge_prefix):  # few messages: handled here, not in a worker
            if seq > self._marks[0]:
                self._on_edge(topic, payload, now)
        elif self.shards is not None:
            self.shards.submit(seq, now, topic, payload)
        elif seq > self._marks[0]:
            self.pipeline.handle(topic, payload, now)

    def ingest_push(self, messages: list[NativeMessage]) -> None:
        """Messages from a platform's HTTP push: in the journal file when this returns (OSError if
        it cannot be written), handed to the pipeline by the push thread: the answer never waits."""
        with self._ingest_lock:
            now = self.clock.now()
            seqs = [self.journal.append(now, 0, m.topic, m.payload) for m in messages]  # MQTT mids are 1+
            self.journal.flush()
            for seq, m in zip(seqs, messages, strict=True):
                self.push_queue.put(seq, now, m.topic, m.payload)

    def _forward_push(self, messages: list[NativeMessage]) -> None:
        """Cluster roles: a push goes to the broker on the device's own topic, where the ingest replica
        that owns the device takes it; OSError (the platform gets 503 and retries) unless the broker
        acknowledged every message."""
        for m in messages:
            if not self.mqtt.publish_wait(m.topic, m.payload, PUSH_FORWARD_TIMEOUT_S):
                raise OSError(
                    errno.ETIMEDOUT,
                    f"the broker did not acknowledge {m.topic} in {PUSH_FORWARD_TIMEOUT_S:g} s",
                )

    def _dispatch_pushed(self, seq: int, now: float, topic: str, payload: bytes) -> None:
        """The push thread, with the ingest lock held."""
        self._dispatch(seq, now, topic, payload)
        self._handled_seq = max(self._handled_seq, seq)

    def _settled_seq(self) -> int:
        """The newest journal seq up to which every message has been handed over (ingest lock held):
        journaled pushes still queued are left for a replay."""
        oldest = self.push_queue.oldest()
        return self._handled_seq if oldest is None else min(self._handled_seq, oldest - 1)

    def _on_edge(self, topic: str, payload: bytes, now: float) -> None:
        et = self.topics.parse_edge(topic)
        if et is None:  # under edge/ but not a known channel: rejected as unknown_topic
            self.pipeline.handle(topic, payload, now)
        else:
            self.edge.handle(topic, et, payload, now)

    def _relay_alert(self, event: Event) -> None:
        """An alert heard on the broker: an API replica's WebSocket clients get it (the leader's
        stream has its own alerts already)."""
        if self.role == "api":
            self.stream.on_events([event])

    def _on_ticket_change(self, doc: dict[str, Any]) -> None:
        """A ticket change heard on the broker: made by another process, the desk reads that ticket
        again (what it serves and acts on is what the database holds) and the stream relays it."""
        if doc.get("change_id") in self._own_changes:
            return
        ticket_id = doc["ticket"].get("id")
        if self.tickets is not None and isinstance(ticket_id, str):
            self.tickets.desk.refresh(ticket_id)
        self.stream.relay_ticket(doc)

    def _on_feed(self, topic: str, payload: bytes) -> None:
        """The lead dispatcher's feed (its session's network thread): event changes from the replicas."""
        try:
            events = FEED.validate_json(payload)
        except ValidationError as exc:
            log.error(
                "event=feed_rejected topic=%s error=%r fix='only gridgate ingest replicas may publish here'",
                topic,
                str(exc)[:300],
            )
            return
        with self._ingest_lock:  # a checkpoint's mark of the feed covers whole messages
            fresh = self._fed.fresh(events, self.store.stored_changes)
            if fresh:
                self._remember(fresh)

    # crash safety ------------------------------------------------------------------------
    def _load_marks(self) -> list[int]:
        """The journal seq each consumer's saved state accounts for: the gateway process, then each worker.

        After a change of `ingest.workers` (another split of the devices) every consumer starts from
        the oldest mark of the old layout: the replay may apply a few messages twice, but loses none.
        """
        saved = {
            k: v
            for k, v in self.store.load_marks().items()
            if k in self._mark_names or (not self._files and (k == "main" or k.startswith("shard")))
        }
        self._stale_marks = sorted(set(saved) - set(self._mark_names))
        if all(name in saved for name in self._mark_names):
            return [saved[name] for name in self._mark_names]
        low = min(saved.values(), default=0)
        return [low] * len(self._mark_names)

    def _replay(self) -> None:
        """Handle what the journal holds beyond the last checkpoint (the gateway stopped before saving it)."""
        start = min(self._marks)
        self._redelivered = self.journal.redelivery_keys()
        first = last = None
        for rec in self.journal.records_after(start):
            with self._ingest_lock:
                self._dispatch(rec.seq, rec.received_at, rec.topic, rec.payload)
                self._handled_seq = rec.seq
            first = rec.seq if first is None else first
            last = rec.seq
            self.replayed += 1
        if self.shards is not None:
            self.shards.flush()
        if self.replayed:
            log.warning(
                "event=journal_replayed messages=%d first_seq=%s last_seq=%s reason='the gateway stopped "
                "before its last checkpoint (crash or kill): these messages were acknowledged to the broker "
                "and are handled now'",
                self.replayed,
                first,
                last,
            )

    def evidence_path(self, edge_id: str, event_id: str, name: str) -> Path | None:
        return self.edge.evidence_path(edge_id, event_id, name)

    def camera_frame(self, camera_id: str) -> CameraFrame | None:
        return self.edge.camera_frame(camera_id)

    def camera_frames(self) -> list[CameraFrame]:
        return self.edge.camera_frames()

    def edge_offline(self, edge_id: str) -> bool:
        return edge_id in self.edge.offline

    def _on_connect(self) -> None:
        self.metrics.mqtt_connects += 1

    def _device_of(self, topic: str) -> str | None:
        route = self.pipeline.route(topic)
        return route.device_id if route else None

    def _apply_report(self, shard: int, rep: WorkerReport) -> None:
        """A worker's results: publish for it, mirror its devices' state, remember its events, count.

        The events come before the checkpoint they belong to (one pipe, in order), so a checkpoint
        saved after this report has handed them to the store and the ticket desk. The counters come
        last: whoever sees `messages_in` reach a number finds those messages' effects in place."""
        for topic, payload, qos in rep.publishes:
            self.mqtt.publish(topic, payload, qos)
        self._shard_gauges[shard] = rep.gauges
        self._shard_errors[shard] = rep.sink_error
        if rep.views:  # as of this report (checkpoint snapshots may be older: they are for saving)
            with self.pipeline.lock:
                for device_id, view in rep.views.items():
                    self.engine.apply_view(device_id, view)
        if rep.events:
            self._remember(rep.events)
        m = self.metrics
        m.rejected.update(rep.rejected)
        m.ignored.update(rep.ignored)
        m.events_out.update(rep.events_out)
        for name, delta in rep.counters.items():
            setattr(m, name, getattr(m, name) + delta)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every message received so far is handled and its points are written."""
        deadline = time.monotonic() + timeout_s
        while len(self.push_queue) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.shards is not None:
            self.shards.flush()
            while time.monotonic() < deadline:
                if self.metrics.messages_in >= self.shards.submitted and not self.shard_gauge("buffer_depth"):
                    break
                time.sleep(0.02)
            else:
                return False
        return self.runner.flush(max(0.0, deadline - time.monotonic()))

    def shard_gauge(self, name: str) -> float:
        return sum(g.get(name, 0.0) for g in self._shard_gauges.values()) if self.shards else 0.0

    def add_event_listener(self, listener: Callable[[list[Event]], None]) -> None:
        """Call `listener` with every batch of event state changes (on the MQTT thread: keep it quick)."""
        self._listeners.append(listener)

    def _remember(self, changed: list[Event]) -> None:
        """Event changes from the pipeline or a worker: hygiene decides, then publish, store, listeners."""
        with self._hygiene_lock:
            self._announce(self.hygiene.decide(changed, self.clock.now()))

    def _release_muted(self, now: float) -> None:
        """Muted events whose cause or window is over become live (and get their ticket)."""
        with self._hygiene_lock:
            released = self.hygiene.release(now)
            if released:
                live = sum(e.suppressed_by is None for e in released)
                log.info("event=muted_events_released live=%d remuted=%d", live, len(released) - live)
                self._announce(released)

    def _announce(self, changed: list[Event]) -> None:
        self.pipeline.publish(changed)
        with self._pending_lock:
            self._pending_events.extend(changed)
        for listener in self._listeners:
            listener(changed)

    def _window_for(self, ev: Event, now: float) -> str | None:
        target = target_of(ev, self.registry)
        return self.windows.open_for(target, now) if target is not None else None

    def checkpoint(self, timeout_s: float = 10.0) -> bool:
        """Save events, rule state and the journal position they account for; True when saved.

        The position moves only once every message up to it has its points durable (written or
        spooled), its events applied by the ticket desk and its devices' state captured; a restart
        replays the journal from there. Workers answer a checkpoint asked for here at the next one.
        """
        with self._ingest_lock:  # between two messages: the capture holds whole ones only
            self.journal.flush()
            upto = self._settled_seq()
            with self.pipeline.lock:
                touched = self.engine.take_touched() | self._carry
                self._carry = set()
                # with workers this engine only mirrors theirs: their own answers carry the state
                states = {d: self.engine.snapshot(d) for d in touched} if self.shards is None else {}
            if self.shards is not None:
                self.shards.request_checkpoint(upto)
            feed_mark = self.feed.mark() if self.feed is not None else None
        marks = {"main": upto}
        broker_marks = {BROKER_DROPPED: self.mqtt.dropped_seen} if self.mqtt.dropped_seen is not None else {}
        if self.shards is not None:
            worker_marks, worker_states = self.shards.take_checkpoints()
            marks.update(zip(self._mark_names[1:], worker_marks, strict=True))
            states.update(worker_states)
        with self._pending_lock:
            batch, self._pending_events = self._pending_events, []
        deadline = time.monotonic() + timeout_s
        durable = self._tickets_applied(deadline) and self.runner.persist(
            max(0.0, deadline - time.monotonic())
        )
        try:
            if not durable:
                raise TimeoutError(f"points or tickets not durable within {timeout_s:g} s")
            self.store.save_checkpoint(
                states, batch, marks | broker_marks, self.clock.now(), forget=self._stale_marks
            )
            self._stale_marks = []
        except Exception as exc:
            with self._pending_lock:
                self._pending_events[:0] = batch
            if self.shards is not None:
                self.shards.give_back(worker_states)
            self._carry |= touched
            log.warning(
                "event=checkpoint_deferred journal_seq=%d error=%r fix='none needed if it passes: "
                "the journal keeps every message until a checkpoint is saved'",
                upto,
                exc,
            )
            return False
        if self.feed is not None and feed_mark is not None:
            self.feed.ack(feed_mark)  # the replicas' event changes handed over up to the mark are saved
        on_disk = self.journal.release(min(marks.values()))
        self.checkpoint_seq = min(marks.values())
        self.journal_bytes = on_disk
        self._checkpoint_at = time.monotonic()
        return True

    def _tickets_applied(self, deadline: float) -> bool:
        """Wait until the ticket desk has applied every event handed to it so far."""
        if self.tickets is None:
            return True
        return self.tickets.wait_applied(self.tickets.stats.events_in, deadline - time.monotonic())

    def _housekeeping(self) -> None:
        next_silence = next_checkpoint = next_release = next_mirror = 0.0
        next_windows = time.monotonic() + WINDOWS_REFRESH_S
        while not self._stop.wait(0.05):
            try:
                now = self.clock.now()
                if now >= next_silence and self.shards is None and self.role == "all":  # workers: their own
                    self.pipeline.check_silence(now)
                    next_silence = now + self.cfg.offline_check_s
                    next_checkpoint = 0.0  # what silence raised is not in the journal: save it now
                if now >= next_release and self.role != "api":
                    next_release = now + RELEASE_CHECK_S
                    self._release_muted(now)
                if self.role != "all" and time.monotonic() >= next_mirror:
                    next_mirror = time.monotonic() + MIRROR_S
                    self._mirror_devices()
                if time.monotonic() >= next_windows:  # windows another gateway created or ended
                    next_windows = time.monotonic() + WINDOWS_REFRESH_S
                    self.windows.refresh()
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + self.cfg.ingest.checkpoint_s
                    self.checkpoint()
            except Exception:  # keep the loop alive; the next round retries
                log.exception("event=housekeeping_failed")

    def _mirror_devices(self) -> None:
        """Outside `--role all` the ingest replicas own the devices: show their saved states."""
        states, newest = self.store.device_states_saved_since(self._mirrored_at)
        self._mirrored_at = newest - MIRROR_OVERLAP_S  # replicas' clocks may differ a little
        with self.pipeline.lock:
            for device_id, state in states.items():
                if self.registry.get(device_id) is not None:
                    self.engine.restore(device_id, state)

    # lifecycle ---------------------------------------------------------------------------
    def start(self, *, wait_for_broker_s: float = 10.0) -> Gateway:
        tune_gc()
        self.metrics.gauge("devices", lambda: len(self.registry))
        self.runner.start()
        if self.shards is not None:
            self.shards.start()
            shared = ("buffer_depth", "points_dropped", "points_rejected", "points_spooled")
            for name in (*shared, "sink_failed_attempts", "sink_dropped_recently"):
                local = self.metrics.gauges.get(name)
                self.metrics.gauge(name, lambda n=name, f=local: (f() if f else 0.0) + self.shard_gauge(n))
        if self.tickets is not None and self.role != "api":  # an API replica's desk only acts and reads
            self.tickets.start()
            self._requeue_unticketed()
        self._handled_seq = max(self._marks)
        self._replay()
        self.push_queue.start()
        self.mqtt.start(wait_s=wait_for_broker_s)
        for webhook in self.webhooks if self.role != "api" else ():
            webhook.start()  # sends what a previous run left undelivered
        if self.view is not None:
            self.view.start()
        if self.feed is not None:
            self.feed.start()
            if self.feed.subscribed.wait(wait_for_broker_s or 30.0):
                # the broker keeps the feed's session from now on: replicas may publish to it
                self.store.save_checkpoint({}, [], {FEED_SUBSCRIBED: 1}, self.clock.now())
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="gridgate-housekeeping", daemon=True
        )
        self._housekeeper.start()
        if self.cfg.api.enabled:
            self._start_api()
            if self.auth.open:
                exposure = open_api_exposure(self.cfg)
                log.warning(
                    "event=api_auth_open mode=%r address=%s:%d exposure=%r "
                    "fix='add auth.tokens before exposing the API'",
                    self.auth.describe(),
                    self.cfg.api.host,
                    self.cfg.api.port,
                    exposure or "clients on this machine only (loopback)",
                )
            else:
                log.info("event=api_auth mode=%r", self.auth.describe())
        if self.cfg.broker.shared_group:
            log.warning(
                "event=shared_group_splits_devices group=%s reason='a $share group spreads one device's "
                "readings over its members: each keeps half of its alarm state and raises alarms again' "
                "fix='run gridgate gateway --role ingest replicas (docs/operator-guide.md, Scaling out)'",
                self.cfg.broker.shared_group,
            )
        log.info(
            "event=gateway_started broker=%s sink=%s devices=%d grids=%d api=%s",
            self.mqtt.where,
            self.sink_name,
            len(self.registry),
            len(self.grids),
            self.api_url or "off",
        )
        return self

    def _requeue_unticketed(self) -> None:
        """Live events no ticket carries go to the desk again: those it held back (the per-grid rate
        limit, the offline grace) lived only in the memory of the process that stopped or died."""
        assert self.tickets is not None
        active = self.store.query_events(state="active", suppressed=False, limit=1_000_000)
        carried = self.tickets.store.ticketed(e.id for e in active)
        waiting = [e for e in active if e.id not in carried]
        if waiting:
            log.info("event=events_requeued events=%d reason='active, on no ticket'", len(waiting))
            self.tickets.on_events(waiting)

    def _start_api(self) -> None:
        config = uvicorn.Config(
            create_app(self),
            host=self.cfg.api.host,
            port=self.cfg.api.port,
            log_level="warning",
            access_log=False,
            ws_max_size=WS_MAX_BYTES,
        )
        self._api_server = uvicorn.Server(config)
        self._api_thread = threading.Thread(target=self._api_server.run, name="gridgate-api", daemon=True)
        self._api_thread.start()
        while not self._api_server.started and self._api_thread.is_alive():
            self._stop.wait(0.02)
        if not self._api_server.started:
            raise RuntimeError(
                f"the API could not listen on {self.cfg.api.host}:{self.cfg.api.port} (port in use?); "
                "set api.port or GRIDGATE_API__PORT"
            )

    @property
    def api_url(self) -> str | None:
        if self._api_server is None or not self._api_server.servers:
            return None
        host, port = self._api_server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop in order: ingest, a last checkpoint, tickets and webhooks, then MQTT and the sink.

        Messages that arrive while stopping are journaled, acknowledged and handled at the next start.
        """
        self.push_queue.stop()  # hands over what is queued; a later push waits in the journal for a replay
        if self.feed is not None:
            self.feed.paused = True  # what comes now is for the next lead dispatcher
        with self._ingest_lock:
            self._closing = True
            if self.shards is not None:
                self.shards.request_checkpoint(self._settled_seq())  # idle workers' marks move up too
        if self.shards is not None:
            self.shards.stop()
        self._stop.set()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=15)
        self.checkpoint()
        if self.feed is not None:
            self.feed.stop()
        if self.tickets is not None:
            self.tickets.stop()  # before MQTT, so its last notifications still go out
        for webhook in self.webhooks:
            webhook.stop()  # what it has not delivered stays in the outbox for the next start
        if self.outbox is not None:
            self.outbox.close()
        if self.view is not None:
            self.view.stop()
        self.mqtt.stop()
        self.journal.close()
        self.runner.close()
        if self._api_server is not None:
            self._api_server.should_exit = True
            if self._api_thread is not None:
                self._api_thread.join(timeout=5)
        if self.push is not None:
            self.push.close()
        self.store.close()
        self.windows.close()
        log.info("event=gateway_stopped")

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # what the API reads ------------------------------------------------------------------
    def devices(self) -> list[DeviceOut]:
        now = self.clock.now()
        out = []
        with self.pipeline.lock:
            for d in self.registry:
                active = self.engine.active_events(d.id)
                seen = self.engine.last_seen(d.id)
                match = self.pipeline.grid_of(d)
                out.append(
                    DeviceOut(
                        id=d.id,
                        type=d.type,
                        name=getattr(d, "name", None),
                        lat=d.lat,
                        lon=d.lon,
                        grid_id=match.grid_id,
                        micro_grid_id=match.micro_grid_id,
                        codec=d.codec,
                        reporting_interval_s=d.reporting_interval_s,
                        last_seen=utc(seen) if seen is not None else None,
                        online=not any(e.kind == "device_offline" for e in active)
                        and seen is not None
                        and now - seen < 2.5 * d.reporting_interval_s,
                        active_alarms=[e for e in active if e.event_class is EventClass.alarm],
                        active_faults=[e for e in active if e.event_class is EventClass.fault],
                        in_maintenance=self.windows.open_for(
                            Target(d.id, d.type.value, match.grid_id, match.micro_grid_id), now
                        )
                        is not None,
                    )
                )
        return out

    def health(self) -> Health:
        connected = self.mqtt.connected.is_set()
        workers_ok = self.shards is None or self.shards.alive()
        sink = self.runner.status()
        failed = sink["failed_attempts"] + int(self.shard_gauge("sink_failed_attempts"))
        dropping = sink["dropped_recently"] or self.shard_gauge("sink_dropped_recently") > 0
        checks = {
            "mqtt_disconnected": not connected,
            "worker_down": not workers_ok,
            "sink_backing_off": failed > 0,
            "sink_dropping": dropping,
            "checkpoint_stale": self.checkpoint_age_s() > max(30.0, 20 * self.cfg.ingest.checkpoint_s),
        }
        problems = [name for name, bad in checks.items() if bad]
        # the configured URL may hold user:password; the sink's own is without credentials
        api = self.cfg.influx.api
        where = self.sink_name if api == "none" else f"influx-{api} {sink['sink']}"
        return Health(
            status="degraded" if problems else "ok",
            problems=problems,
            mqtt_connected=connected,
            devices=len(self.registry),
            sink=where,
            sink_state="backing_off" if failed else "healthy",
            sink_failed_attempts=failed,
            sink_last_error=sink["last_error"] or next((e for e in self._shard_errors.values() if e), None),
            buffer_depth=self.runner.buffer_depth + int(self.shard_gauge("buffer_depth")),
            spooled=sink["spooled"] + int(self.shard_gauge("points_spooled")),
            points_dropped=sink["points_dropped"] + int(self.shard_gauge("points_dropped")),
            points_refused=self.metrics.points_refused,
            checkpoint_age_s=round(self.checkpoint_age_s(), 1),
            journal_bytes=self.journal_bytes,
        )

    def checkpoint_age_s(self) -> float:
        """Seconds since the last saved checkpoint (a restart would replay what came since)."""
        return time.monotonic() - self._checkpoint_at
