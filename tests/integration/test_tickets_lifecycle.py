"""Ticket lifecycle on a real store, SQLite and PostgreSQL alike, driven by a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.tickets.desk import TicketDesk
from gateway.tickets.models import AuditAction, ChangeKind, Ticket
from gateway.tickets.states import IllegalTransition, TicketStatus, replay
from gateway.tickets.store import StaleTicket, TicketNotFound, TicketStore
from gridgate.clock import FakeClock
from gridgate.models import EventClass, EventState, Point
from tests.servers import wait_until
from tests.ticket_helpers import CAMERA, GAUGE, cleared, event, grids, make_service, routing, tickets_cfg

pytestmark = pytest.mark.integration
S = TicketStatus


def kinds(notes: Any) -> list[str]:
    return [c.kind.value for c in notes.changes]


def test_store_round_trip_filters_and_stale_writes(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, _ = make_service(ticket_db_url, clock)
    out = svc.process(
        [
            event("ponding", "camera:cam-1", clock.now(), CAMERA, evidence={"snapshot": "s3://snaps/1.jpg"}),
            event("illegal_parking", "camera:cam-2", clock.now(), (30.25, 120.25)),
            event("bin_full", "device:BIN-9", clock.now(), (10.0, 10.0)),
        ]
    )
    ponding, parking, outside = (c.ticket for c in out.changes)
    assert (ponding.grid_id, ponding.micro_grid_id, ponding.team, ponding.assignee) == (
        "G1",
        "G1-M1",
        "drainage",
        "worker-G1-M1",
    )
    assert (parking.grid_id, parking.team, parking.on_site_by - parking.created_at) == (
        "G2",
        "enforcement-zone-2",
        1800,
    )
    assert (outside.grid_id, outside.grid_fallback) == ("outside", True)
    store = svc.store
    assert store.get(ponding.id) == svc.get(ponding.id)
    assert [t.id for t in store.list_tickets(team="drainage")] == [ponding.id]
    assert {t.id for t in store.list_tickets(status=["dispatched"])} == {ponding.id, parking.id, outside.id}
    assert store.count_tickets(grid_id="G2") == 1 and store.count_tickets(breached=True) == 0
    assert store.counts_by_grid()["G1"] == {"dispatched": 1}
    assert [e.evidence for e in store.events(ponding.id)] == [{"snapshot": "s3://snaps/1.jpg"}]
    assert [(a.from_status, a.to_status) for a in store.history(ponding.id)] == [
        (None, S.new),
        (S.new, S.dispatched),
    ]
    # a second writer that read an old version is refused, not silently overwritten
    other = TicketStore(ticket_db_url)
    mine, theirs = other.require(ponding.id), other.require(ponding.id)
    mine.assignee = "me"
    other.commit(updated=[mine])
    theirs.assignee = "them"
    with pytest.raises(StaleTicket, match="changed by another writer"):
        other.commit(updated=[theirs])
    assert other.require(ponding.id).assignee == "me"
    other.close()
    with pytest.raises(TicketNotFound, match="does not exist"):
        svc.get("nope")
    svc.stop()


def test_sla_escalates_across_all_three_levels_once_each(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock)
    t0 = clock.now()
    tid = svc.process([event("ponding", "camera:cam-1", t0, CAMERA)]).changes[0].ticket.id
    assert notes.changes[0].target.model_dump() == {
        "team": "drainage",
        "role": "worker",
        "person": "worker-G1-M1",
    }
    clock.advance(59)
    svc.tick()
    assert kinds(notes) == ["created"]
    clock.advance(2)  # accept timer (60 s) breached: the grid head hears of it
    svc.tick()
    svc.tick()
    assert kinds(notes) == ["created", "escalated"]
    assert notes.changes[-1].target.model_dump() == {
        "team": "drainage",
        "role": "grid_head",
        "person": "head-G1",
    }
    clock.advance(600 - 61)  # on-site timer (600 s): the leader
    svc.tick()
    assert notes.changes[-1].target.person == "leader-G1" and svc.get(tid).escalation_level == 2
    clock.advance(86_400)  # resolve timer: recorded, but the leader was already told
    svc.tick()
    svc.tick()
    assert kinds(notes) == ["created", "escalated", "escalated"]
    t = svc.get(tid)
    assert t.breached == ["accept", "on_site", "resolve"] and t.status is S.dispatched
    trail = [
        (a.action, a.actor, a.detail.get("person")) for a in svc.history(tid) if a.action != "transition"
    ]
    assert trail == [
        (AuditAction.escalate, "sla", "head-G1"),
        (AuditAction.escalate, "sla", "leader-G1"),
        (AuditAction.breach, "sla", None),
    ]
    assert svc.store.count_tickets(breached=True) == 1
    svc.stop()


def test_accepting_stops_the_accept_timer(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock)
    tid = svc.process([event("illegal_parking", "camera:cam-1", clock.now(), CAMERA)]).changes[0].ticket.id
    clock.advance(30)
    svc.accept(tid, "worker-G1-M1")
    clock.advance(1000)  # enforcement is on site within 1,800 s
    svc.tick()
    assert [c.kind for c in notes.changes] == [ChangeKind.created, ChangeKind.updated]
    clock.advance(801)
    svc.tick()
    assert notes.changes[-1].kind is ChangeKind.escalated and notes.changes[-1].reason == "sla_on_site"
    svc.stop()


def test_clear_resolves_awaiting_verification_never_closes(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock, tickets_cfg(clear_hold_s=60))
    ev = event("ponding", "camera:cam-1", clock.now(), CAMERA)
    tid = svc.process([ev]).changes[0].ticket.id
    svc.accept(tid, "worker-G1-M1")
    clock.advance(10)
    svc.process([cleared(ev, clock.now())])
    clock.advance(59)
    svc.tick()
    assert svc.get(tid).status is S.accepted  # the hold damps flapping
    clock.advance(1)
    svc.tick()
    t = svc.get(tid)
    assert t.status is S.resolved and t.closed_at is None
    assert notes.changes[-1].reason == "events_cleared" and notes.changes[-1].to_status is S.resolved
    clock.advance(86_400 * 3)
    svc.tick()
    assert svc.get(tid).status is S.resolved  # only a person closes
    with pytest.raises(IllegalTransition, match="cannot go from resolved to on_site"):
        svc.arrive(tid, "worker-G1-M1")
    assert svc.close(tid, "head-G1", "checked on camera").status is S.closed
    steps = [(a.from_status, a.to_status) for a in svc.history(tid) if a.action is AuditAction.transition]
    assert replay(tid, steps) is S.closed
    svc.stop()


def test_auto_cancel_only_before_anyone_accepted(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, _ = make_service(ticket_db_url, clock, tickets_cfg(clear_hold_s=0))
    parked = event("illegal_parking", "camera:cam-1", clock.now(), CAMERA)
    ponding = event("ponding", "camera:cam-2", clock.now(), (30.29, 120.19))
    accepted = event("illegal_parking", "camera:cam-3", clock.now(), (30.28, 120.11))
    ids = [c.ticket.id for c in svc.process([parked, ponding, accepted]).changes]
    svc.accept(ids[2], "worker-G1")
    clock.advance(5)
    svc.process([cleared(e, clock.now()) for e in (parked, ponding, accepted)])
    svc.tick()
    assert [svc.get(i).status for i in ids] == [S.cancelled, S.resolved, S.resolved]


def test_recurrence_within_24h_reopens_later_opens_new(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock, tickets_cfg(clear_hold_s=0))
    ev = event("ponding", "camera:cam-1", clock.now(), CAMERA)
    tid = svc.process([ev]).changes[0].ticket.id
    svc.process([cleared(ev, clock.now())])
    svc.tick()
    svc.close(tid, "head-G1")
    clock.advance(23 * 3600)
    again = svc.process([event("ponding", "camera:cam-1", clock.now(), CAMERA)])
    assert [c.ticket.id for c in again.changes] == [tid]
    t = svc.get(tid)
    assert (t.status, t.count, t.reopen_count) == (S.reopened, 2, 1)
    assert t.accept_by == clock.now() + 60 and t.breached == [] and t.escalation_level == 0
    assert notes.changes[-1].from_status is S.closed and notes.changes[-1].reason == "recurred"
    svc.accept(tid, "worker-G1-M1")
    svc.process([cleared(again_ev := ev.model_copy(), clock.now())])
    del again_ev
    svc.tick()
    svc.close(tid, "head-G1")
    clock.advance(24 * 3600 + 1)
    later = svc.process([event("ponding", "camera:cam-1", clock.now(), CAMERA)])
    assert later.changes[0].kind is ChangeKind.created and later.changes[0].ticket.id != tid
    svc.stop()


def test_camera_ponding_and_gauge_water_high_make_one_ticket(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock, tickets_cfg(clear_hold_s=0, update_coalesce_s=0))
    cam = event("ponding", "camera:cam-1", clock.now(), CAMERA, evidence={"snapshot": "/snap/cam-1/1.jpg"})
    tid = svc.process([cam]).changes[0].ticket.id
    clock.advance(40)
    gauge = event("water_high", "device:WG-1", clock.now(), GAUGE, severity="critical")  # type: ignore[arg-type]
    out = svc.process([gauge])
    assert out.changes == [] and out.touched == {tid}
    t = svc.get(tid)
    assert (t.count, t.sources, t.severity, t.category) == (
        2,
        ["camera:cam-1", "device:WG-1"],
        "critical",
        "ponding",
    )
    evidence = {(e.kind, e.source): e.evidence for e in svc.events(tid)}
    assert evidence == {
        ("ponding", "camera:cam-1"): {"snapshot": "/snap/cam-1/1.jpg"},
        ("water_high", "device:WG-1"): {},
    }
    assert notes.changes[-1].kind is ChangeKind.updated and notes.changes[-1].ticket.count == 2
    svc.process([cleared(cam, clock.now())])
    svc.tick()
    assert svc.get(tid).status is S.dispatched  # the gauge still reads high
    svc.process([cleared(gauge, clock.now())])
    svc.tick()
    assert svc.get(tid).status is S.resolved
    svc.stop()


def test_unit_storm_1000_duplicates_through_the_listener(ticket_db_url: str) -> None:
    """1,000 duplicate events through the gateway's listener hook and the worker thread."""
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock, tickets_cfg(update_coalesce_s=30, tick_s=0.05))
    svc.start()
    for _ in range(1000):
        svc.on_events([event("illegal_parking", "camera:cam-1", clock.now(), CAMERA)])
    assert svc.drain(30)
    clock.advance(30)
    wait_until(lambda: any(c.ticket.count == 1000 for c in notes.changes), 10, "coalesced update")
    tickets = svc.store.list_tickets()
    assert len(tickets) == 1 and tickets[0].count == 1000
    # one `created` (its snapshot holds the count reached by the end of its batch), then at most
    # one coalesced `updated` with the rest, however the burst was split into batches
    assert kinds(notes)[0] == "created" and kinds(notes)[1:] in ([], ["updated"])
    assert svc.store.event_counts([tickets[0].id]) == {tickets[0].id: 500}  # evidence capped, count exact
    svc.stop()


def test_flapping_for_ten_minutes_is_one_ticket_and_few_notifications(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock, tickets_cfg(clear_hold_s=60, update_coalesce_s=30))
    end = clock.now() + 600
    raises = 0
    while clock.now() < end:
        ev = event("manhole_tilt", "device:MH-1", clock.now(), GAUGE)
        svc.process([ev])
        raises += 1
        for _ in range(3):
            clock.advance(1)
            svc.tick()
        svc.process([cleared(ev, clock.now())])
        for _ in range(2):
            clock.advance(1)
            svc.tick()
    for _ in range(90):
        clock.advance(1)
        svc.tick()
    tickets = svc.store.list_tickets()
    assert len(tickets) == 1 and tickets[0].count == raises == 120
    assert tickets[0].status is S.resolved
    counts = {k: kinds(notes).count(k) for k in set(kinds(notes))}
    assert counts["created"] == 1
    # 600 s of flapping coalesced to one update per 30 s, 2 escalations, the final resolve
    assert len(notes.changes) <= 1 + 600 // 30 + 2 + 2, counts
    svc.stop()


def test_rate_limit_queues_the_excess_and_loses_nothing(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, notes = make_service(ticket_db_url, clock, tickets_cfg(rate_limit_per_grid_per_min=3))
    # ten separate problems in G1, 200 m apart, in one burst
    burst = [
        event("bin_full", f"device:BIN-{i}", clock.now(), (30.21 + i * 0.002, 120.11)) for i in range(10)
    ]
    svc.process(burst)
    assert kinds(notes).count("created") == 3 and svc.desk.storm.queued == 7
    svc.process([burst[9].model_copy(update={"id": "dup"})])  # a duplicate of a queued one waits with it
    clock.advance(61)
    svc.tick()
    assert kinds(notes).count("created") == 6
    for _ in range(3):
        clock.advance(61)
        svc.tick()
    assert svc.store.count_tickets() == 10 and svc.desk.storm.queued == 0
    last = svc.store.list_tickets(limit=1)[0]
    assert last.count == 2  # the queued duplicate joined its ticket
    svc.stop()


def test_offline_storm_after_reconnect_and_children_grouped_under_parent(ticket_db_url: str) -> None:
    clock = FakeClock()
    link = {"up": False}
    parents = {f"device:MH-{i}": "edge:box-1" for i in range(5)}
    cfg = tickets_cfg(offline_grace_s=120, offline_settle_s=30)
    desk = TicketDesk(
        TicketStore(ticket_db_url), routing(), grids(), cfg, now=clock.now(), parent_of=parents.get
    )
    from gateway.tickets.notify import MemoryNotifier
    from gateway.tickets.service import TicketService

    notes = MemoryNotifier()
    svc = TicketService(desk, notes, clock, link=lambda: link["up"], coalesce_s=0)
    fault = EventClass.fault

    def offline(source: str) -> Any:
        return event("device_offline", source, clock.now(), GAUGE, event_class=fault)

    # the broker was away: every device looked silent; they come back within the grace
    flaps = [offline(f"device:WG-{i}") for i in range(20)]
    svc.process(flaps)
    link["up"] = True
    svc.tick()
    clock.advance(60)
    svc.process([cleared(e, clock.now()) for e in flaps[:19]])
    clock.advance(61)
    svc.tick()
    assert [c.ticket.dedup_key for c in notes.changes] == ["device_offline:device:WG-19"]
    # an edge box dies: its children go offline first, the box a moment later
    children = [offline(f"device:MH-{i}") for i in range(5)]
    svc.process(children)
    clock.advance(5)
    box = offline("edge:box-1")
    svc.process([box, event("sensor_fault", "device:MH-0", clock.now(), GAUGE, event_class=fault)])
    clock.advance(31)
    svc.tick()
    created = [c.ticket for c in notes.changes if c.kind is ChangeKind.created]
    assert [t.dedup_key for t in created] == ["device_offline:device:WG-19", "device_offline:edge:box-1"]
    t: Ticket = svc.get(created[1].id)
    assert t.count == 7 and t.parent_source == "edge:box-1" and t.team == "maintenance"
    assert sum(a.action is AuditAction.group for a in svc.history(t.id)) == 6
    assert svc.desk.storm.suppressed == 19
    svc.stop()


def test_transitions_become_points_and_state_survives_restart(ticket_db_url: str) -> None:
    clock = FakeClock()
    points: list[Point] = []
    svc, _ = make_service(ticket_db_url, clock)
    svc.sink = type("Sink", (), {"add": lambda self, p: points.append(p)})()
    ev = event("ponding", "camera:cam-1", clock.now(), CAMERA)
    tid = svc.process([ev]).changes[0].ticket.id
    clock.advance(42)
    svc.accept(tid, "worker-G1-M1")
    assert [(p.measurement, p.tags["status"], p.fields["seconds_since_created"]) for p in points] == [
        ("tickets", "new", 0.0),
        ("tickets", "dispatched", 0.0),
        ("tickets", "accepted", 42.0),
    ]
    assert points[-1].tags == {
        "category": "ponding",
        "grid_id": "G1",
        "team": "drainage",
        "status": "accepted",
    }
    assert points[-1].fields["ticket_id"] == tid
    svc.stop()
    # a new process on the same database: the same problem joins the same ticket, its clear ends it
    svc2, notes2 = make_service(ticket_db_url, clock, tickets_cfg(clear_hold_s=0))
    assert svc2.process([ev.model_copy(update={"id": "again"})]).touched == {tid}
    svc2.process([cleared(ev, clock.now())])
    svc2.tick()
    assert svc2.get(tid).status is S.resolved and svc2.get(tid).count == 2
    assert notes2.changes[-1].to_status is S.resolved
    svc2.stop()


def test_event_states_are_stored_on_clear(ticket_db_url: str) -> None:
    clock = FakeClock()
    svc, _ = make_service(ticket_db_url, clock)
    ev = event("ponding", "camera:cam-1", clock.now(), CAMERA)
    tid = svc.process([ev]).changes[0].ticket.id
    svc.process([cleared(ev, clock.now() + 5)])
    assert [e.state for e in svc.events(tid)] == [EventState.cleared.value]
    svc.stop()
