"""The live stream for the command centre: every alert and every ticket change, to many clients.

One more communicator beside MQTT and webhooks: it is a ticket `Notifier` and a gateway event
listener. Publishing (from the MQTT and ticket threads) serialises a message once, with an `id`
(increasing, also across restarts) and its time `at`, keeps it in a bounded replay ring and
appends it to each matching client's bounded queue. A client that reads too slowly loses its
oldest queued messages and is told so (`dropped`: how many, and `last_id`, the last message it
got before the gap); it can reconnect with `since_id=<last_id>` (or `since=<time>`) and get
what it missed from the ring. No client can ever hold the gateway up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.tickets.models import TicketChange
from gridgate.models import Event

log = logging.getLogger("gridgate.stream")

MESSAGE_TYPES = ("alert", "ticket")
REPLAY_MAX = 10_000  # messages kept for clients that fell behind or reconnect


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


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One serialised message: its id, its time (epoch seconds) and the JSON sent."""

    id: int
    at: float
    body: bytes


@dataclass(slots=True)
class _Held:
    """A message in the replay ring, with what filters match on; serialised when first needed.

    While nobody listens the ring keeps how to make the body and the team, not their values: the
    MQTT thread does not pay ~25 us per event (routing, dump) for a replay nobody may ask for.
    Events and ticket snapshots are never changed once published (the engine and the desk make
    new ones), so a later dump is the same.
    """

    id: int
    at: float
    mtype: str
    grid_ids: tuple[str | None, ...]
    kind: str
    team_of: Callable[[], str | None]
    make: Callable[[str | None], dict[str, Any]]
    _team: tuple[str | None] | None = None
    _message: StreamMessage | None = None

    @property
    def team(self) -> str | None:
        if self._team is None:  # races here only compute the same value twice
            self._team = (self.team_of(),)
        return self._team[0]

    def matches(self, flt: StreamFilter) -> bool:
        return flt.matches(self.mtype, self.grid_ids, self.team if flt.teams else None, self.kind)

    @property
    def message(self) -> StreamMessage:
        if self._message is None:
            body = orjson.dumps({"id": self.id, "at": self.at, **self.make(self.team)})
            self._message = StreamMessage(self.id, self.at, body)
        return self._message


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages a client did not get: `count` of them after `last_id` (its resume point)."""

    count: int
    last_id: int
    next_id: int | None = None

    def message(self, total: int) -> bytes:
        return orjson.dumps(
            {
                "type": "dropped",
                "count": self.count,
                "last_id": self.last_id,
                "next_id": self.next_id,
                "total": total,
                "resume": f"reconnect with ?since_id={self.last_id} to get them",
            }
        )


@dataclass(eq=False)
class StreamClient:
    """One connected client: a bounded queue filled by publishers, drained by its socket task."""

    id: int
    who: str
    filter: StreamFilter
    loop: asyncio.AbstractEventLoop
    maxlen: int
    last_id: int = 0  # the last message handed to its socket: the resume point
    queue: deque[StreamMessage] = field(init=False)
    ready: asyncio.Event = field(init=False)
    dropped: int = 0
    unreported_drops: int = 0
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wake_pending: bool = False

    def __post_init__(self) -> None:
        self.queue = deque(maxlen=self.maxlen)
        self.ready = asyncio.Event()

    def offer(self, message: StreamMessage) -> bool:
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

    def take(self) -> tuple[list[StreamMessage], Gap | None]:
        """Everything queued, and the gap before it not yet told (on the client's loop)."""
        with self._lock:
            out = list(self.queue)
            self.queue.clear()
            drops, self.unreported_drops = self.unreported_drops, 0
            self._wake_pending = False
            self.ready.clear()
        gap = Gap(drops, self.last_id, out[0].id if out else None) if drops else None
        if out:
            self.last_id = out[-1].id
        return out, gap


def alert_body(ev: Event, team: str | None) -> dict[str, Any]:
    return {"type": "alert", "grid_id": ev.grid_id, "team": team, "event": ev.model_dump(mode="json")}


def ticket_body(change: TicketChange, _team: str | None) -> dict[str, Any]:
    return {"type": "ticket", **change.to_json()}


class StreamHub:
    """Fans alerts and ticket changes out to WebSocket clients. A `Notifier` named `websocket`."""

    name = "websocket"

    def __init__(
        self,
        queue_max: int = 1000,
        team_of: Callable[[Event], str | None] | None = None,
        replay_max: int = REPLAY_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue_max = queue_max
        self.team_of = team_of or (lambda _ev: None)
        self.clock = clock
        self._clients: dict[int, StreamClient] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._ring: deque[_Held] = deque(maxlen=replay_max)
        # message ids continue across restarts: they start at the time in microseconds
        self.first_id = time.time_ns() // 1000
        self._last_id = self.first_id - 1
        self.published = 0
        self.dropped = 0
        self.connections = 0

    # ---- clients --------------------------------------------------------------------------------

    def connect(
        self,
        who: str,
        flt: StreamFilter,
        loop: asyncio.AbstractEventLoop,
        *,
        since_id: int | None = None,
        since: float | None = None,
    ) -> tuple[StreamClient, list[StreamMessage], Gap | None]:
        """A new client, the held messages it asked to resume from, and what is no longer held."""
        with self._lock:
            client = StreamClient(next(self._ids), who, flt, loop, self.queue_max, self._last_id)
            held: list[_Held] = []
            gap = None
            if since_id is not None or since is not None:
                held, gap = self._replay(flt, since_id, since)
                client.last_id = held[-1].id if held else max(self._last_id, since_id or 0)
            self._clients[client.id] = client
            self.connections += 1
        backlog = [h.message for h in held]  # serialised outside the lock: publishers go on
        log.info(
            "event=stream_connected client=%d who=%s filter=%s since_id=%s since=%s replayed=%d lost=%d",
            client.id,
            who,
            flt.describe(),
            since_id,
            since,
            len(backlog),
            gap.count if gap else 0,
        )
        return client, backlog, gap

    def _replay(
        self, flt: StreamFilter, since_id: int | None, since: float | None
    ) -> tuple[list[_Held], Gap | None]:
        """Held messages after `since_id` (or at or after `since`) for a filter; the lost part."""
        held = self._ring
        oldest = held[0] if held else None
        if since_id is not None:
            wanted = [h for h in held if h.id > since_id and h.matches(flt)]
            start = max(since_id, self.first_id - 1)
            lost = (oldest.id if oldest else self._last_id + 1) - 1 - start
            resume = since_id
        else:
            assert since is not None
            wanted = [h for h in held if h.at >= since and h.matches(flt)]
            # whatever left the ring after `since` is lost; without times, all that left counts
            lost = (oldest.id - self.first_id) if oldest and oldest.at > since else 0
            resume = (oldest.id - 1) if oldest else self._last_id
        gap = Gap(lost, resume, wanted[0].id if wanted else None) if lost > 0 else None
        return wanted, gap

    def disconnect(self, client: StreamClient) -> None:
        with self._lock:
            self._clients.pop(client.id, None)
        log.info(
            "event=stream_disconnected client=%d who=%s sent=%d dropped=%d last_id=%d",
            client.id,
            client.who,
            client.sent,
            client.dropped,
            client.last_id,
        )

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def last_id(self) -> int:
        return self._last_id

    # ---- publishers -----------------------------------------------------------------------------

    def _publish(
        self,
        mtype: str,
        grid_ids: tuple[str | None, ...],
        kind: str,
        team_of: Callable[[], str | None],
        make: Callable[[str | None], dict[str, Any]],
    ) -> None:
        at = self.clock()
        with self._lock:
            self._last_id += 1
            held = _Held(self._last_id, at, mtype, grid_ids, kind, team_of, make)
            self._ring.append(held)
            targets = [c for c in self._clients.values() if held.matches(c.filter)]
        self.published += 1
        if not targets:
            return
        message = held.message
        for c in targets:
            if c.offer(message):
                self.dropped += 1

    def on_events(self, events: Iterable[Event]) -> None:
        """The gateway's event listener: one `alert` message per event state change."""
        for ev in events:
            grids = (ev.grid_id, ev.micro_grid_id)
            self._publish("alert", grids, ev.kind, partial(self.team_of, ev), partial(alert_body, ev))

    def notify(self, change: TicketChange) -> None:
        """The ticket notifier: one `ticket` message per change (created, updated, escalated)."""
        t = change.ticket
        team = change.target.team or t.team
        grids = (t.grid_id, t.micro_grid_id)
        self._publish("ticket", grids, t.category, lambda: team, partial(ticket_body, change))

    def relay_ticket(self, doc: dict[str, Any]) -> None:
        """A ticket change another process made, as its channels carry it (`TicketChange.to_json`)."""
        t = doc["ticket"]
        team = (doc.get("target") or {}).get("team") or t.get("team")
        grids = (t.get("grid_id"), t.get("micro_grid_id"))
        body = {"type": "ticket", **doc}
        self._publish("ticket", grids, str(t.get("category") or ""), lambda: team, lambda _team: body)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("gridgate_stream_clients", "WebSocket clients connected", value=self.clients)
        yield CounterMetricFamily(
            "gridgate_stream_messages", "alert and ticket messages streamed", value=self.published
        )
        yield CounterMetricFamily(
            "gridgate_stream_dropped", "messages dropped for slow WebSocket clients", value=self.dropped
        )
