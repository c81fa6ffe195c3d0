"""The ticket service: events from the gateway in, ticket changes out to every channel.

The gateway calls `on_events` on its MQTT network thread, so that only enqueues; one worker thread
applies events to the desk, runs the SLA tick every `tick_s` on the gateway's clock, coalesces
count-only updates, notifies, and hands each transition to the sink runner as a `tickets` point.
People's actions (the API) call `accept()`, `resolve()`... from any thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.grids import GridIndex
from gateway.tickets.coalesce import UpdateCoalescer
from gateway.tickets.desk import Action, Outcome, TicketDesk, target_of
from gateway.tickets.host import PointSink, TicketHost
from gateway.tickets.models import AuditEntry, ChangeKind, Ticket, TicketChange, TicketEvent
from gateway.tickets.notify import FanOut, MQTTNotifier, Notifier
from gateway.tickets.points import transition_point
from gateway.tickets.quiet import QuietHours
from gateway.tickets.reminders import ReminderLedger, Reminders
from gateway.tickets.routing import DEFAULT_ROUTING_FILE, RoutingConfig, load_routing
from gateway.tickets.states import Resolution
from gateway.tickets.store import TicketStore
from gridgate.clock import Clock
from gridgate.config import StorageConfig, TicketsConfig
from gridgate.models import Event

if TYPE_CHECKING:
    from devices.registry import DeviceRegistry

log = logging.getLogger("gridgate.tickets")

MAX_BATCH_EVENTS = 5000


@dataclass
class TicketStats:
    events_in: int = 0
    events_done: int = 0
    notifications: int = 0
    created: int = 0
    updated: int = 0
    escalated: int = 0
    reminders: int = 0
    failures: int = 0


def load_routing_or_default(path: Path) -> RoutingConfig:
    """routing.yaml; only when the default path is missing, built-in defaults (with a warning)."""
    if path == DEFAULT_ROUTING_FILE and not path.is_file():
        log.warning(
            "event=routing_defaults file=%s reason=missing fix='set tickets.routing_file'",
            path,
        )
        return RoutingConfig()
    return load_routing(path)


def registry_parent_of(registry: DeviceRegistry) -> Callable[[str], str | None]:
    """The source a device reaches the gateway through (devices.yaml `behind:`): another device
    of the registry (`device:<id>`), else an edge box (`edge:<id>`)."""

    def parent_of(source: str) -> str | None:
        kind, _, ident = source.partition(":")
        device = registry.get(ident) if kind == "device" else None
        if device is None or device.behind is None:
            return None
        return f"device:{device.behind}" if device.behind in registry else f"edge:{device.behind}"

    return parent_of


def registry_team_hint(registry: DeviceRegistry) -> Callable[[Event], str | None]:
    """A device's own maintenance team (devices.yaml `maintenance_team`), for its faults."""

    def hint(ev: Event) -> str | None:
        if ev.source_type != "device":
            return None
        device = registry.get(ev.source_id)
        return device.maintenance_team if device is not None else None

    return hint


class TicketService:
    """Owns the desk, the worker thread and the notifiers. `start()` / `stop()`, or `with`."""

    def __init__(
        self,
        desk: TicketDesk,
        notifier: Notifier,
        clock: Clock,
        *,
        sink: PointSink | None = None,
        link: Callable[[], bool] | None = None,
        tick_s: float = 1.0,
        coalesce_s: float = 30.0,
        reminders: Reminders | None = None,
    ) -> None:
        self.desk = desk
        self.reminders = reminders
        self.store: TicketStore = desk.store
        self.notifier = notifier
        self.clock = clock
        self.sink = sink
        self.link = link
        self.tick_s = tick_s
        self.coalescer = UpdateCoalescer(coalesce_s)
        self.stats = TicketStats()
        self._queue: queue.SimpleQueue[list[Event] | None] = queue.SimpleQueue()
        self._out_lock = threading.RLock()
        self._done = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if link is not None:
            # the first connection also starts the offline grace: a restart must not spray tickets
            desk.storm.set_link(False, clock.now())

    @classmethod
    def build(
        cls,
        cfg: TicketsConfig,
        storage: StorageConfig,
        grids: GridIndex,
        clock: Clock,
        notifiers: Iterable[Notifier] = (),
        *,
        sink: PointSink | None = None,
        link: Callable[[], bool] | None = None,
        registry: DeviceRegistry | None = None,
        store_url: str | None = None,
        timezone: str = "Asia/Shanghai",
    ) -> TicketService:
        """A service from config: routing.yaml, the store, reminders, and the notifiers behind a fan-out."""
        routing = load_routing_or_default(cfg.routing_file)
        store = TicketStore(store_url or cfg.url(storage))
        desk = TicketDesk(
            store,
            routing,
            grids,
            cfg,
            now=clock.now(),
            parent_of=registry_parent_of(registry) if registry is not None else None,
            team_hint=registry_team_hint(registry) if registry is not None else None,
            device_teams=frozenset(d.maintenance_team for d in registry or () if d.maintenance_team),
        )
        return cls(
            desk,
            FanOut(notifiers),
            clock,
            sink=sink,
            link=link,
            tick_s=cfg.tick_s,
            coalesce_s=cfg.update_coalesce_s,
            reminders=Reminders(
                cfg.reminders,
                ReminderLedger(store.engine),
                clock.now(),
                QuietHours(cfg.quiet_hours, timezone) if cfg.quiet_hours is not None else None,
            ),
        )

    @classmethod
    def for_gateway(cls, gateway: TicketHost) -> TicketService:
        """Wired to a gateway: its grids, clock, registry, sink runner, and MQTT for notifications."""
        return cls.build(
            gateway.cfg.tickets,
            gateway.cfg.storage,
            gateway.grids,
            gateway.clock,
            [MQTTNotifier(gateway.mqtt, gateway.topics)],
            sink=gateway.runner,
            link=gateway.mqtt.connected.is_set,
            registry=gateway.registry,
            timezone=gateway.cfg.timezone,
        )

    def add_notifier(self, notifier: Notifier) -> None:
        """Add a channel (webhook, WebSocket...) to the fan-out."""
        if isinstance(self.notifier, FanOut):
            self.notifier.add(notifier)
        else:
            self.notifier = FanOut([self.notifier, notifier])

    # ---- events in ------------------------------------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        """The gateway's event listener (MQTT thread): only enqueue. A muted event (`suppressed_by`,
        gateway/hygiene/) opens no ticket and touches none."""
        events = [e for e in events if e.suppressed_by is None]
        if events:
            self.stats.events_in += len(events)
            self._queue.put(list(events))

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every enqueued event has been applied (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._done:
            while self.stats.events_done < self.stats.events_in:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True

    def wait_applied(self, count: int, timeout: float) -> bool:
        """Wait until the first `count` events handed to `on_events` have been applied."""
        with self._done:
            return self._done.wait_for(lambda: self.stats.events_done >= count, max(0.0, timeout))

    def process(self, events: Iterable[Event], now: float | None = None) -> Outcome:
        """Apply events at once on the caller's thread (tests, replays), and notify."""
        now = self.clock.now() if now is None else now
        out = self.desk.ingest([e for e in events if e.suppressed_by is None], now)
        self._dispatch(out, now)
        return out

    def tick(self, now: float | None = None) -> Outcome:
        """SLA timers, holds, queues and coalesced updates, at `now` (default: the clock)."""
        now = self.clock.now() if now is None else now
        if self.link is not None:
            with self.desk.lock:
                self.desk.storm.set_link(self.link(), now)
        out = self.desk.tick(now)
        self._dispatch(out, now)
        with self._out_lock:
            for tid in self.coalescer.due(now):
                self._send(self._updated(tid, now, "events"))
            if self.reminders is not None:
                with self.desk.lock:
                    due = self.reminders.due(self.desk.tickets.values(), now)
                for change in due:
                    self._send(change)
        return out

    # ---- the worker -----------------------------------------------------------------------------

    def start(self) -> TicketService:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gridgate-tickets", daemon=True)
            self._thread.start()
            log.info(
                "event=ticket_service_started store=%s live_tickets=%d",
                self.store.engine.url.render_as_string(hide_password=True),
                len(self.desk.tickets),
            )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Apply what is queued, stop the worker, close the store."""
        if self._thread is not None:
            self._stop.set()
            self._queue.put(None)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("event=ticket_service_stop_timeout timeout_s=%s", timeout)
            self._thread = None
        self.store.close()
        log.info("event=ticket_service_stopped stats=%s", self.stats)

    def __enter__(self) -> TicketService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take(self, timeout: float) -> list[Event] | None:
        """Every queued event (up to a batch), waiting up to `timeout` for the first; None: stop."""
        try:
            first = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return []
        if first is None:
            return None
        batch = list(first)
        while len(batch) < MAX_BATCH_EVENTS:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)
                break
            batch.extend(more)
        return batch

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            batch = self._take(next_tick - time.monotonic())
            if batch is None:
                batch = []
                while True:  # apply what is left, then stop
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more:
                        batch.extend(more)
                self._apply(batch)
                return
            if batch:
                self._apply(batch)
            if time.monotonic() >= next_tick:
                try:
                    self.tick()
                except Exception:
                    self.stats.failures += 1
                    log.exception("event=ticket_tick_failed")
                next_tick = time.monotonic() + self.tick_s

    def _apply(self, batch: list[Event]) -> None:
        try:
            if batch:
                self.process(batch)
        except Exception:
            self.stats.failures += 1
            log.exception("event=ticket_batch_failed events=%d", len(batch))
        finally:
            with self._done:
                self.stats.events_done += len(batch)
                self._done.notify_all()

    # ---- changes out ----------------------------------------------------------------------------

    def _updated(self, ticket_id: str, now: float, reason: str) -> TicketChange:
        t = self.desk.snapshot(ticket_id)
        return TicketChange(kind=ChangeKind.updated, at=now, ticket=t, target=target_of(t), reason=reason)

    def _send(self, change: TicketChange) -> None:
        self.stats.notifications += 1
        if change.kind is ChangeKind.created:
            self.stats.created += 1
        elif change.kind is ChangeKind.escalated:
            self.stats.escalated += 1
        elif change.kind is ChangeKind.reminder:
            self.stats.reminders += 1
        else:
            self.stats.updated += 1
        self.notifier.notify(change)

    def _dispatch(self, out: Outcome, now: float) -> None:
        with self._out_lock:
            for change in out.changes:
                self.coalescer.sent(change.ticket.id, now)
                self._send(change)
                if self.sink is not None:
                    for entry in change.transitions:
                        self.sink.add(transition_point(change.ticket, entry))
            changed = {c.ticket.id for c in out.changes}
            for tid in sorted(out.touched - changed):
                if self.coalescer.offer(tid, now):
                    self._send(self._updated(tid, now, "events"))

    # ---- people's actions (the API) -------------------------------------------------------------

    def act(
        self,
        ticket_id: str,
        action: Action | str,
        actor: str,
        note: str = "",
        *,
        assignee: str | None = None,
        team: str | None = None,
        resolution: Resolution | str | None = None,
        detail: dict[str, object] | None = None,
    ) -> Ticket:
        """Do `action` as `actor`; notifies; raises IllegalTransition, TicketNotFound, TicketError."""
        now = self.clock.now()
        ticket, out = self.desk.act(
            ticket_id,
            action,
            actor=actor,
            now=now,
            note=note,
            assignee=assignee,
            team=team,
            resolution=resolution,
            detail=detail,
        )
        self._dispatch(out, now)
        return ticket

    def accept(self, ticket_id: str, actor: str, note: str = "") -> Ticket:
        return self.act(ticket_id, Action.accept, actor, note)

    def arrive(self, ticket_id: str, actor: str, note: str = "") -> Ticket:
        return self.act(ticket_id, Action.arrive, actor, note)

    def resolve(self, ticket_id: str, actor: str, note: str = "") -> Ticket:
        return self.act(ticket_id, Action.resolve, actor, note)

    def close(
        self, ticket_id: str, actor: str, note: str = "", resolution: Resolution | str | None = None
    ) -> Ticket:
        """Verify a resolved ticket: the fix is confirmed (or, `false_alarm`, there was nothing)."""
        return self.act(ticket_id, Action.close, actor, note, resolution=resolution)

    def reopen(self, ticket_id: str, actor: str, note: str = "") -> Ticket:
        return self.act(ticket_id, Action.reopen, actor, note)

    def cancel(
        self, ticket_id: str, actor: str, note: str = "", resolution: Resolution | str | None = None
    ) -> Ticket:
        return self.act(ticket_id, Action.cancel, actor, note, resolution=resolution)

    def reassign(
        self,
        ticket_id: str,
        actor: str,
        *,
        assignee: str | None = None,
        team: str | None = None,
        note: str = "",
    ) -> Ticket:
        return self.act(ticket_id, Action.reassign, actor, note, assignee=assignee, team=team)

    def comment(self, ticket_id: str, actor: str, note: str) -> Ticket:
        return self.act(ticket_id, Action.comment, actor, note)

    # ---- reads (the API) ------------------------------------------------------------------------

    def get(self, ticket_id: str) -> Ticket:
        """The ticket as it is now; TicketNotFound if there is none."""
        return self.desk.snapshot(ticket_id)

    def list_tickets(self, **filters: Any) -> list[Ticket]:
        """TicketStore.list_tickets: status, grid_id, team, category, breached, since, until..."""
        return self.store.list_tickets(**filters)

    def history(self, ticket_id: str) -> list[AuditEntry]:
        self.store.require(ticket_id)
        return self.store.history(ticket_id)

    def events(self, ticket_id: str) -> list[TicketEvent]:
        self.store.require(ticket_id)
        return self.store.events(ticket_id)
