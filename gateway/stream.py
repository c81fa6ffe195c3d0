"""The live stream for the command centre: every alert and every ticket change, to many clients.

One more communicator beside MQTT and webhooks: it is a ticket `Notifier` and a gateway event
listener. Publishing (from the MQTT and ticket threads) serialises a message once and appends it
to each matching client's bounded queue; a client that reads too slowly loses its oldest messages
(counted, and told in a `dropped` message), so no client can ever hold the gateway up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.tickets.models import TicketChange
from gridgate.models import Event

log = logging.getLogger("gridgate.stream")

MESSAGE_TYPES = ("alert", "ticket")


@dataclass(frozen=True)
class StreamFilter:
    """What a client asked for (query parameters); empty sets match everything."""

    grids: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def matches(self, mtype: str, grid_ids: tuple[str | None, ...], team: str | None, kind: str) -> bool:
        return (
            (not self.types or mtype in self.types)
            and (not self.grids or any(g in self.grids for g in grid_ids))
            and (not self.teams or team in self.teams)
            and (not self.kinds or kind in self.kinds)
        )

    def describe(self) -> dict[str, list[str]]:
        return {
            "grid_id": sorted(self.grids),
            "team": sorted(self.teams),
            "kinds": sorted(self.kinds),
            "types": sorted(self.types),
        }


@dataclass(eq=False)
class StreamClient:
    """One connected client: a bounded queue filled by publishers, drained by its socket task."""

    id: int
    who: str
    filter: StreamFilter
    loop: asyncio.AbstractEventLoop
    maxlen: int
    queue: deque[bytes] = field(init=False)
    ready: asyncio.Event = field(init=False)
    dropped: int = 0
    unreported_drops: int = 0
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake_pending: bool = False

    def __post_init__(self) -> None:
        self.queue = deque(maxlen=self.maxlen)
        self.ready = asyncio.Event()

    def offer(self, message: bytes) -> bool:
        """Queue a message (any thread); True if an older one had to be dropped for it."""
        with self._lock:
            dropped = len(self.queue) == self.maxlen
            if dropped:
                self.dropped += 1
                self.unreported_drops += 1
            self.queue.append(message)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the client is leaving
                self.loop.call_soon_threadsafe(self.ready.set)
        return dropped

    def take(self) -> tuple[list[bytes], int]:
        """Everything queued, and the drops not yet told (on the client's loop)."""
        with self._lock:
            out = list(self.queue)
            self.queue.clear()
            drops, self.unreported_drops = self.unreported_drops, 0
            self._wake_pending = False
            self.ready.clear()
        return out, drops


class StreamHub:
    """Fans alerts and ticket changes out to WebSocket clients. A `Notifier` named `websocket`."""

    name = "websocket"

    def __init__(self, queue_max: int = 1000, team_of: Callable[[Event], str | None] | None = None) -> None:
        self.queue_max = queue_max
        self.team_of = team_of or (lambda _ev: None)
        self._clients: dict[int, StreamClient] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.published = 0
        self.dropped = 0
        self.connections = 0

    # ---- clients --------------------------------------------------------------------------------

    def connect(self, who: str, flt: StreamFilter, loop: asyncio.AbstractEventLoop) -> StreamClient:
        client = StreamClient(next(self._ids), who, flt, loop, self.queue_max)
        with self._lock:
            self._clients[client.id] = client
            self.connections += 1
        log.info("event=stream_connected client=%d who=%s filter=%s", client.id, who, flt.describe())
        return client

    def disconnect(self, client: StreamClient) -> None:
        with self._lock:
            self._clients.pop(client.id, None)
        log.info(
            "event=stream_disconnected client=%d who=%s sent=%d dropped=%d",
            client.id,
            client.who,
            client.sent,
            client.dropped,
        )

    @property
    def clients(self) -> int:
        return len(self._clients)

    # ---- publishers -----------------------------------------------------------------------------

    def _publish(
        self, mtype: str, grid_ids: tuple[str | None, ...], team: str | None, kind: str, body: Any
    ) -> None:
        with self._lock:
            targets = [c for c in self._clients.values() if c.filter.matches(mtype, grid_ids, team, kind)]
        if not targets:
            return
        message = orjson.dumps(body)
        self.published += 1
        for c in targets:
            if c.offer(message):
                self.dropped += 1

    def on_events(self, events: Iterable[Event]) -> None:
        """The gateway's event listener: one `alert` message per event state change."""
        if not self._clients:
            return
        for ev in events:
            team = self.team_of(ev)
            body = {"type": "alert", "grid_id": ev.grid_id, "team": team, "event": ev.model_dump(mode="json")}
            self._publish("alert", (ev.grid_id, ev.micro_grid_id), team, ev.kind, body)

    def notify(self, change: TicketChange) -> None:
        """The ticket notifier: one `ticket` message per change (created, updated, escalated)."""
        if not self._clients:
            return
        t = change.ticket
        body = {"type": "ticket", **change.to_json()}
        self._publish("ticket", (t.grid_id, t.micro_grid_id), change.target.team or t.team, t.category, body)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("gridgate_stream_clients", "WebSocket clients connected", value=self.clients)
        yield CounterMetricFamily(
            "gridgate_stream_messages", "alert and ticket messages streamed", value=self.published
        )
        yield CounterMetricFamily(
            "gridgate_stream_dropped", "messages dropped for slow WebSocket clients", value=self.dropped
        )
