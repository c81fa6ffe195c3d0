"""Several dispatchers on one PostgreSQL database: the database keeps the ticket invariants.

Each desk runs in its own OS process (multiprocessing spawn), with its own TicketDesk, store and
connections, all started at the same instant on overlapping event streams.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations
from multiprocessing.pool import Pool
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from gateway.tickets.dedup import distance_m
from gateway.tickets.desk import TicketDesk
from gateway.tickets.models import AuditAction, ChangeKind, Target, Ticket, TicketChange
from gateway.tickets.states import OPEN
from gateway.tickets.store import TicketStore, ticket_events, ticket_keys, tickets
from gateway.tickets.webhook import IDEMPOTENCY_HEADER, OutboxNotifier, WebhookChannel, WebhookOutbox
from gridgate.config import WebhookConfig
from tests.servers import PostgreSQL, wait_until
from tests.ticket_helpers import cleared, event, grids, routing, tickets_cfg

pytestmark = pytest.mark.integration

T0 = 1_750_000_000.0
DESKS = 3
RADIUS_M = 50.0
CFG = tickets_cfg(dedup_radius_m=RADIUS_M, rate_limit_per_grid_per_min=100_000, max_events_per_ticket=10_000)
# kinds of two correlation groups (ponding + water_high are `standing_water`), a few sources each
KEYS = [
    ("ponding", "camera:cam-1"),
    ("ponding", "camera:cam-2"),
    ("water_high", "device:WL-1"),
    ("water_high", "device:WL-2"),
    ("bin_full", "device:BIN-1"),
    ("bin_full", "device:BIN-2"),
]
# points 30 m apart along a street in grid G1: neighbours are within the radius, the next but one not
POINTS = [(30.2200 + i * 30 / 111_320, 120.1200) for i in range(6)]

Op = tuple[str, int, int]  # ("raise", key index, point index) | ("clear", nth raise of this desk, 0)
Step = tuple[str, str, str, str, float, float]  # raise|clear, event id, kind, source, lat, lon


_in_step: Any = None  # in a desk process: a barrier of every desk (pool initializer)


def _join(barrier: Any) -> None:
    global _in_step
    _in_step = barrier


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(DESKS, initializer=_join, initargs=(ctx.Barrier(DESKS),)) as p:
        yield p


def fresh_db(server: PostgreSQL) -> str:
    return server.create_database("conc_" + uuid.uuid4().hex[:16])


# ---- what each desk process does -----------------------------------------------------------------


def _all_at_once() -> None:
    """Wait until every desk process is here (each desk is loaded before any starts)."""
    _in_step.wait(timeout=60)


def desk_ingests(url: str, steps: list[Step], lockstep: bool = False, step_s: float = 1.0) -> int:
    """One dispatcher: a desk of its own, the steps one event at a time; how many it applied.
    `lockstep`: each step starts on every desk at once (streams of one length). With `step_s`
    over a second, time moves that much per step and the desk ticks after each (tickets end by
    themselves, recurrences reopen them, SLAs escalate)."""
    desk = TicketDesk(TicketStore(url), routing(), grids(), CFG, now=T0)
    _all_at_once()
    for i, (what, eid, kind, source, lat, lon) in enumerate(steps):
        if lockstep:
            _all_at_once()
        now = T0 + 1 + i * step_s
        ev = event(kind, source, now, (lat, lon), id=eid)
        desk.ingest([cleared(ev, now) if what == "clear" else ev], now)
        if step_s > 1:
            desk.tick(now)
    desk.store.close()
    return len(steps)


def desk_ticks(url: str, nows: list[float]) -> int:
    """One dispatcher's SLA ticks, each at once with the other desks'; how many escalations it sent."""
    desk = TicketDesk(TicketStore(url), routing(), grids(), CFG, now=T0)
    sent = 0
    for now in nows:
        _all_at_once()
        sent += sum(c.kind is ChangeKind.escalated for c in desk.tick(now).changes)
    desk.store.close()
    return sent


# ---- concurrent ticket creation ------------------------------------------------------------------


def steps_of(desk: int, ops: list[Op]) -> list[Step]:
    raised: list[Step] = []
    out: list[Step] = []
    for n, (what, a, b) in enumerate(ops):
        if what == "raise":
            kind, source = KEYS[a]
            lat, lon = POINTS[b]
            step: Step = ("raise", f"d{desk}-e{n}", kind, source, lat, lon)
            raised.append(step)
            out.append(step)
        elif raised:
            out.append(("clear", *raised[a % len(raised)][1:]))
    return out


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("raise"), st.integers(0, len(KEYS) - 1), st.integers(0, len(POINTS) - 1)),
        st.tuples(st.just("clear"), st.integers(0, 20), st.just(0)),
    ),
    min_size=4,
    max_size=14,
)


def check_invariants(url: str, streams: list[list[Step]]) -> None:
    store = TicketStore(url)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(ticket_events.c.ticket_id, ticket_events.c.event_id, ticket_events.c.dedup_key)
        )
        carried: dict[str, set[str]] = defaultdict(set)  # event id -> tickets
        keys: dict[str, set[str]] = defaultdict(set)  # ticket id -> keys of its events
        for tid, eid, key in rows:
            carried[eid].add(tid)
            keys[tid].add(key)
        all_tickets = [store.require(tid) for tid in conn.scalars(select(tickets.c.id))]
    store.close()
    open_tickets = [t for t in all_tickets if t.status in OPEN]
    # never two open tickets for one key (the opening key, any joined event's key)
    holders = Counter(k for t in open_tickets for k in keys[t.id] | {t.dedup_key, *t.active_keys})
    assert [k for k, n in holders.items() if n > 1] == []
    # no event lost, none twice: every raised event id is on exactly one ticket
    raised = {s[1] for stream in streams for s in stream if s[0] == "raise"}
    assert set(carried) == raised
    assert {eid: tids for eid, tids in carried.items() if len(tids) != 1} == {}
    assert sum(t.count for t in all_tickets) == len(raised)
    # the spatial rule: no two open tickets of one group within the radius of each other
    close = [
        (a.id, b.id, round(distance_m(a.lat, a.lon, b.lat, b.lon)))
        for a, b in combinations(open_tickets, 2)
        if a.group == b.group and a.lat is not None and b.lat is not None and a.lon is not None
        if b.lon is not None and distance_m(a.lat, a.lon, b.lat, b.lon) <= RADIUS_M
    ]
    assert close == []


@pytest.mark.slow
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(ops_strategy, min_size=DESKS, max_size=DESKS))
def test_desks_in_several_processes_never_open_two_tickets_for_one_key_or_place(
    postgresql: PostgreSQL, pool: Pool, desk_ops: list[list[Op]]
) -> None:
    url = fresh_db(postgresql)
    TicketStore(url).close()  # the schema exists before the desks race
    streams = [steps_of(i, ops) for i, ops in enumerate(desk_ops)]
    applied = pool.starmap(desk_ingests, [(url, s) for s in streams])
    assert applied == [len(s) for s in streams]
    check_invariants(url, streams)


def test_every_desk_raising_at_one_place_at_once_makes_one_ticket_there(
    postgresql: PostgreSQL, pool: Pool
) -> None:
    """The hardest case, always run: at each step every desk raises at the same place, one desk the
    key another desk raises, the others keys of the same group (only distance correlates them)."""
    url = fresh_db(postgresql)
    TicketStore(url).close()
    streams = [
        [("raise", f"d{d}-e{n}", *KEYS[(n + d) % 4], *POINTS[(n % 3) * 2]) for n in range(12)]
        for d in range(DESKS)
    ]
    pool.starmap(desk_ingests, [(url, s, True) for s in streams])
    check_invariants(url, streams)


@pytest.mark.slow
def test_desks_that_also_tick_keep_one_open_ticket_per_active_key(postgresql: PostgreSQL, pool: Pool) -> None:
    """A seeded fuzz run with time moving: tickets auto-resolve, recur and reopen, SLAs escalate,
    on every desk at once. (Distance is not checked here: a ticket reopened by its own key may
    lie near one opened while it was ended, on one desk too.)"""
    rnd = random.Random(20261201)
    for _ in range(2):
        url = fresh_db(postgresql)
        TicketStore(url).close()
        streams = []
        for d in range(DESKS):
            ops: list[Op] = [
                ("raise", rnd.randrange(len(KEYS)), rnd.randrange(len(POINTS)))
                if rnd.random() < 0.55
                else ("clear", rnd.randrange(20), 0)
                for _ in range(20)
            ]
            streams.append(steps_of(d, ops))
        pool.starmap(desk_ingests, [(url, s, False, 30.0) for s in streams])
        store = TicketStore(url)
        everything = store.list_tickets(limit=1000)
        opened = [t for t in everything if t.status in OPEN]
        active = Counter(k for t in opened for k in t.active_keys)
        assert [k for k, n in active.items() if n > 1] == []
        holders = store.holders(active)
        assert [(t.id, k) for t in opened for k in t.active_keys if holders.get(k) != t.id] == []
        raised = {s[1] for stream in streams for s in stream if s[0] == "raise"}
        carried = Counter(e.event_id for t in everything for e in store.events(t.id))
        assert set(carried) == raised and set(carried.values()) == {1}
        assert sum(t.count for t in everything) == len(raised)
        store.close()


# ---- SLA escalations ------------------------------------------------------------------------------


def test_desks_ticking_at_once_escalate_each_breach_once(postgresql: PostgreSQL, pool: Pool) -> None:
    url = fresh_db(postgresql)
    desk = TicketDesk(TicketStore(url), routing(), grids(), CFG, now=T0)
    # eight tickets far apart (no correlation), every timer overdue by the time the desks tick
    made = desk.ingest(
        [event("ponding", f"camera:cam-{i}", T0, (30.21 + i * 0.001, 120.11)) for i in range(8)], T0
    )
    ids = [c.ticket.id for c in made.changes]
    assert len(ids) == 8
    desk.store.close()
    late = T0 + 10 * 86_400
    sent = pool.starmap(desk_ticks, [(url, [late, late + 1, late + 2])] * DESKS)
    store = TicketStore(url)
    for tid in ids:
        history = store.history(tid)
        # worker -> grid_head (accept), -> leader (on_site), then a breach at the top (resolve)
        assert [a.action for a in history if a.action in (AuditAction.escalate, AuditAction.breach)] == [
            AuditAction.escalate,
            AuditAction.escalate,
            AuditAction.breach,
        ]
        t = store.require(tid)
        assert (t.escalation_level, sorted(t.breached)) == (2, ["accept", "on_site", "resolve"])
    store.close()
    assert sum(sent) == 2 * len(ids)  # each escalation notified once, by whichever desk made it


def test_a_desk_escalates_the_overdue_tickets_of_a_desk_that_stopped(ticket_db_url: str) -> None:
    survivor, stopped = two_desks(ticket_db_url)  # the survivor loaded before the tickets existed
    made = stopped.ingest(
        [event("ponding", f"camera:cam-{i}", T0, (30.21 + i * 0.001, 120.11)) for i in range(3)], T0
    )
    stopped.store.close()
    out = survivor.tick(T0 + 10 * 86_400)
    escalated = [c.ticket.id for c in out.changes if c.kind is ChangeKind.escalated]
    assert sorted(escalated) == sorted(2 * [c.ticket.id for c in made.changes])
    survivor.store.close()


# ---- the webhook outbox ---------------------------------------------------------------------------


class Receiver:
    """A real HTTP endpoint that keeps each request's idempotency key, slowly (races widen)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        lock = threading.Lock()
        keys = self.keys

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(0.01)
                with lock:
                    keys.append(self.headers[IDEMPOTENCY_HEADER])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def change(n: int) -> TicketChange:
    t = Ticket(
        category="ponding",
        group="standing_water",
        grid_id="G1",
        team="drainage",
        dedup_key=f"ponding:camera:cam-{n}",
        first_seen=T0,
        last_seen=T0,
        created_at=T0,
        updated_at=T0,
        cycle_started_at=T0,
        accept_by=T0 + 1,
        on_site_by=T0 + 2,
        resolve_by=T0 + 3,
    )
    return TicketChange(kind=ChangeKind.created, at=T0, ticket=t, target=Target(team="drainage"))


def test_two_gateways_on_one_outbox_deliver_each_row_once_in_order(postgresql: PostgreSQL) -> None:
    url = fresh_db(postgresql)
    receiver = Receiver()
    cfg = WebhookConfig(name="city", url=receiver.url, backoff_base_s=0.05)
    writer = WebhookOutbox(url)
    changes = [change(n) for n in range(40)]
    # written by both gateways and by one that is gone: the live ones deliver its rows too
    for n, c in enumerate(changes):
        assert writer.add("city", ["gw-a", "gw-b", "gw-gone"][n % 3], c, b"{}", time.time())
    notifiers = [
        OutboxNotifier(WebhookChannel(cfg), cfg, WebhookOutbox(url), origin=origin).start()
        for origin in ("gw-a", "gw-b")
    ]
    try:
        assert wait_until(lambda: len(writer.rows("city", "delivered")) == len(changes), timeout=30)
        time.sleep(0.3)  # a second delivery would land now
    finally:
        for n in notifiers:
            n.stop()
            n.outbox.close()
        receiver.close()
    assert receiver.keys == [c.id for c in changes]  # each once, in the order written
    assert sum(n.stats.delivered for n in notifiers) == len(changes)
    writer.close()


# ---- a desk that lost a race, step by step (SQLite and PostgreSQL) ---------------------------------


def two_desks(url: str) -> tuple[TicketDesk, TicketDesk]:
    return (
        TicketDesk(TicketStore(url), routing(), grids(), CFG, now=T0),
        TicketDesk(TicketStore(url), routing(), grids(), CFG, now=T0),
    )


def test_a_desk_that_did_not_know_the_ticket_joins_it_as_if_it_always_had(ticket_db_url: str) -> None:
    a, b = two_desks(ticket_db_url)
    first = event("ponding", "camera:cam-1", T0, POINTS[0])
    [opened] = a.ingest([first], T0).changes
    # b never saw it: the database refuses b's second ticket for the key, b loads a's and joins it
    again = event("ponding", "camera:cam-1", T0 + 1, POINTS[0])
    out = b.ingest([again], T0 + 1)
    assert out.changes == [] and out.touched == {opened.ticket.id}
    t = b.snapshot(opened.ticket.id)
    assert (t.count, b.index.by_key(first.dedup_key)) == (2, t.id)
    # another key nearby (same group, 30 m): b now knows a's ticket and joins it by distance
    near = event("water_high", "device:WL-1", T0 + 2, POINTS[1])
    assert b.ingest([near], T0 + 2).touched == {t.id}
    # a's memory is behind now: its next join is refused (stale), it reads the ticket and applies again
    third = event("ponding", "camera:cam-2", T0 + 3, POINTS[0])
    assert a.ingest([third], T0 + 3).touched == {t.id}
    # a clear on a desk that never knew the key's ticket finds it in the database
    c = TicketDesk(TicketStore(ticket_db_url), routing(), grids(), CFG, now=T0)
    a.ingest([event("bin_full", "device:BIN-1", T0 + 4, POINTS[5])], T0 + 4)
    assert c.ingest([cleared(near, T0 + 5)], T0 + 5).touched == {t.id}
    store = TicketStore(ticket_db_url)
    final = store.require(t.id)
    assert (final.count, sorted(final.active_keys)) == (4, ["ponding:camera:cam-1", "ponding:camera:cam-2"])
    assert store.count_tickets() == 2
    assert {e.event_id for e in store.events(t.id)} == {first.id, again.id, near.id, third.id}
    for d in (a, b, c):
        d.store.close()
    store.close()


def test_a_person_acting_on_a_ticket_another_desk_changed_is_applied_to_the_fresh_ticket(
    ticket_db_url: str,
) -> None:
    a, b = two_desks(ticket_db_url)
    [opened] = a.ingest([event("ponding", "camera:cam-1", T0, POINTS[0])], T0).changes
    tid = opened.ticket.id
    b.snapshot(tid)  # b reads it (version 1)
    b.act(tid, "comment", actor="ops", now=T0 + 1, note="first look")  # b loads it from the store
    a.ingest([event("ponding", "camera:cam-2", T0 + 2, POINTS[0])], T0 + 2)  # a moves it on (stale b)
    accepted, _ = b.act(tid, "accept", actor="worker-G1-M1", now=T0 + 3)
    assert (accepted.status, accepted.count) == ("accepted", 2)
    for d in (a, b):
        d.store.close()


def test_a_recurrence_another_desk_already_ticketed_joins_that_ticket_not_the_ended_one(
    ticket_db_url: str,
) -> None:
    a, b = two_desks(ticket_db_url)  # b loaded before a's ticket existed
    first = event("ponding", "camera:cam-1", T0, POINTS[0])
    [opened] = a.ingest([first], T0).changes
    old = opened.ticket.id
    a.act(old, "resolve", actor="worker-G1-M1", now=T0 + 10)  # its event is still active
    # b never knew the ticket: the key is free again (the ticket ended), b opens a new one
    [new] = b.ingest([event("ponding", "camera:cam-1", T0 + 20, POINTS[0])], T0 + 20).changes
    # a still remembers the ended ticket: the recurrence would reopen it, but the key is on b's now
    out = a.ingest([event("ponding", "camera:cam-1", T0 + 30, POINTS[0])], T0 + 30)
    assert out.touched == {new.ticket.id} and out.changes == []
    assert a.snapshot(old).status == "resolved"
    # a person reopening the ended ticket by hand: it opens without the key the other one holds
    reopened, _ = a.act(old, "reopen", actor="ops", now=T0 + 40)
    assert (reopened.status, reopened.active_keys) == ("reopened", [])
    assert a.store.holders([first.dedup_key]) == {first.dedup_key: new.ticket.id}
    for d in (a, b):
        d.store.close()


# ---- an existing database upgrades ------------------------------------------------------------------


def test_an_old_database_gets_its_keys_and_the_index_and_names_duplicate_open_tickets(
    ticket_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = TicketStore(ticket_db_url)
    desk = TicketDesk(store, routing(), grids(), CFG, now=T0)
    [older] = desk.ingest([event("ponding", "camera:cam-1", T0, POINTS[0])], T0).changes
    # what a race of an older version left behind: a second open ticket for the same key
    key = older.ticket.dedup_key
    twin = store.require(older.ticket.id).model_copy(
        update={"id": "01TWIN", "created_at": T0 + 1, "dedup_key": "other", "active_keys": ["other"]}
    )
    store.commit(created=[twin])
    with store.engine.begin() as conn:
        conn.execute(update(tickets).where(tickets.c.id == twin.id).values(dedup_key=key, active_keys=[key]))
        ticket_keys.drop(conn)
    store.close()
    caplog.set_level("INFO", "gridgate.tickets.store")
    upgraded = TicketStore(ticket_db_url)
    assert "event=ticket_key_duplicate key=ponding:camera:cam-1" in caplog.text
    assert f"fix='close or cancel ticket {older.ticket.id}" in caplog.text
    assert upgraded.holders(["ponding:camera:cam-1"]) == {"ponding:camera:cam-1": "01TWIN"}
    # from now on the database refuses a third
    desk = TicketDesk(upgraded, routing(), grids(), CFG, now=T0)
    assert desk.ingest([event("ponding", "camera:cam-1", T0 + 2, POINTS[0])], T0 + 2).touched == {"01TWIN"}
    upgraded.close()
