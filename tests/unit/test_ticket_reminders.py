"""Reminders on a fake clock: their cadence beside the escalation chain, accept, restarts, quiet hours."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.tickets.desk import TicketDesk
from gateway.tickets.models import ChangeKind, TicketChange
from gateway.tickets.notify import MemoryNotifier
from gateway.tickets.quiet import QuietHours
from gateway.tickets.reminders import ReminderLedger, Reminders, due_slot
from gateway.tickets.service import TicketService
from gateway.tickets.store import TicketStore
from gridgate.clock import FakeClock
from gridgate.config import TicketsConfig
from gridgate.models import EventClass
from tests.ticket_helpers import GAUGE, event, grids, routing, tickets_cfg

MIN = 60.0


def service(url: str, clock: FakeClock, cfg: TicketsConfig) -> tuple[TicketService, MemoryNotifier]:
    """A service over the store at `url`, as a gateway (re)starting on it builds one."""
    desk = TicketDesk(TicketStore(url), routing(), grids(), cfg, now=clock.now())
    quiet = QuietHours(cfg.quiet_hours, "Asia/Shanghai") if cfg.quiet_hours else None
    reminders = Reminders(cfg.reminders, ReminderLedger(desk.store.engine), clock.now(), quiet)
    notes = MemoryNotifier()
    return TicketService(desk, notes, clock, coalesce_s=cfg.update_coalesce_s, reminders=reminders), notes


def run(svc: TicketService, clock: FakeClock, until: float, step: float = 10.0) -> None:
    while clock.now() + step <= until:
        svc.tick(clock.advance(step))


def sent(notes: MemoryNotifier, t0: float, kind: ChangeKind) -> list[tuple[float, TicketChange]]:
    return [(c.at - t0, c) for c in notes.changes if c.kind is kind]


def test_reminders_every_n_beside_the_escalation_chain_until_accepted(tmp_path: Path) -> None:
    clock = FakeClock()
    t0 = clock.now()
    svc, notes = service(f"sqlite:///{tmp_path}/t.sqlite", clock, tickets_cfg(reminders={"every_min": 5}))
    [created] = svc.process([event("ponding", "camera:cam-1", t0)]).changes
    tid = created.ticket.id
    run(svc, clock, t0 + 16 * MIN)
    reminders = sent(notes, t0, ChangeKind.reminder)
    assert [(at, c.reminder) for at, c in reminders] == [(5 * MIN, 1), (10 * MIN, 2), (15 * MIN, 3)]
    for _, c in reminders:
        assert c.target.person == created.ticket.assignee == "worker-G1-M1" and c.target.role == "worker"
        assert c.to_json()["kind"] == "reminder" and c.to_json()["reminder"] == c.reminder
    # the escalation chain keeps its own times: accept SLA (60 s) and on-site SLA (600 s)
    escalations = sent(notes, t0, ChangeKind.escalated)
    assert [(at, c.reason, c.target.role) for at, c in escalations] == [
        (1 * MIN, "sla_accept", "grid_head"),
        (10 * MIN, "sla_on_site", "leader"),
    ]
    svc.accept(tid, "worker-G1-M1")
    run(svc, clock, t0 + 60 * MIN)
    assert len(sent(notes, t0, ChangeKind.reminder)) == 3  # none after accept
    svc.stop()


def test_a_restart_neither_repeats_nor_skips_a_reminder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.sqlite"
    cfg = tickets_cfg(reminders={"by_category": {"ponding": 5}})
    clock = FakeClock()
    t0 = clock.now()
    svc, notes = service(url, clock, cfg)
    svc.process([event("ponding", "camera:cam-1", t0)])
    run(svc, clock, t0 + 5 * MIN)  # reminder 1 goes at t0+5 min
    assert [c.reminder for _, c in sent(notes, t0, ChangeKind.reminder)] == [1]
    svc.stop()

    # restarted at once, at the same instant: reminder 1 is not sent again
    svc, notes = service(url, clock, cfg)
    svc.tick(clock.now())
    run(svc, clock, t0 + 7 * MIN)
    assert sent(notes, t0, ChangeKind.reminder) == []
    svc.stop()

    # down from 7 to 9 min, restarted: reminder 2 still comes at 10 min, once
    clock.t = t0 + 9 * MIN
    svc, notes = service(url, clock, cfg)
    run(svc, clock, t0 + 12 * MIN)
    [(at, second)] = sent(notes, t0, ChangeKind.reminder)
    assert (at, second.reminder) == (10 * MIN, 2)
    svc.stop()

    # a gateway that was down over a slot sends the latest one when it is back (one, not a burst)
    clock.t = t0 + 26 * MIN
    svc, notes = service(url, clock, cfg)
    svc.tick(clock.now())
    assert [c.reminder for _, c in sent(notes, t0, ChangeKind.reminder)] == [5]
    svc.stop()


def test_the_change_id_of_a_slot_is_the_same_after_a_restart(tmp_path: Path) -> None:
    """A webhook or robot outbox keys rows by change id: the same slot cannot be queued twice."""
    cfg = tickets_cfg(reminders={"every_min": 5})
    clock = FakeClock()
    t0 = clock.now()
    ids = []
    for run_no in range(2):
        svc, notes = service(f"sqlite:///{tmp_path}/t{run_no}.sqlite", clock, cfg)
        svc.process([event("ponding", "camera:cam-1", t0, id="ev-1")])
        clock.t = t0
        run(svc, clock, t0 + 5 * MIN)
        ids.append([c.id for _, c in sent(notes, t0, ChangeKind.reminder)])
        svc.stop()
    assert len(ids[0]) == 1 and ids[0] != ids[1]  # other ticket, other id
    assert ids[0][0].startswith("R") and len(ids[0][0]) == 26


def test_offline_device_tickets_are_reminded_every_4_h_while_open(tmp_path: Path) -> None:
    clock = FakeClock()
    t0 = clock.now()
    svc, notes = service(f"sqlite:///{tmp_path}/t.sqlite", clock, tickets_cfg())
    offline = event("device_offline", "device:WG-1", t0, GAUGE, event_class=EventClass.fault)
    svc.process([offline])
    svc.tick(clock.advance(1))
    [ticket] = svc.list_tickets(category="device_offline")
    svc.accept(ticket.id, "tech-1")  # accepted, still open: the device is still offline
    run(svc, clock, t0 + 8 * 3600 + 60, step=60)
    reminders = sent(notes, t0, ChangeKind.reminder)
    assert [(round(at), c.reminder, c.reason) for at, c in reminders] == [
        (4 * 3600 + 1, 1, "still_offline"),  # the ticket opened on the tick at t0 + 1 s
        (8 * 3600 + 1, 2, "still_offline"),
    ]
    svc.resolve(ticket.id, "tech-1")
    run(svc, clock, t0 + 13 * 3600, step=600)
    assert len(sent(notes, t0, ChangeKind.reminder)) == 2
    svc.stop()


def test_reminders_wait_out_quiet_hours_but_urgent_ones_do_not(tmp_path: Path) -> None:
    tz = ZoneInfo("Asia/Shanghai")
    clock = FakeClock(datetime(2026, 12, 1, 21, 50, tzinfo=tz).timestamp())
    t0 = clock.now()
    cfg = tickets_cfg(reminders={"every_min": 20}, quiet_hours={"start": "22:00", "end": "07:00"})
    svc, notes = service(f"sqlite:///{tmp_path}/t.sqlite", clock, cfg)
    svc.process([event("ponding", "camera:cam-1", t0)])
    svc.process([event("manhole_open", "device:MH-9", t0, (30.29, 120.19))])
    run(svc, clock, datetime(2026, 12, 2, 7, 5, tzinfo=tz).timestamp(), step=60)
    by_category: dict[str, list[tuple[str, int | None]]] = {}
    for c in notes.changes:
        if c.kind is ChangeKind.reminder:
            local = datetime.fromtimestamp(c.at, tz).strftime("%H:%M")
            by_category.setdefault(c.ticket.category, []).append((local, c.reminder))
    # ponding (from 21:50): 22:10 ... 06:50 fall in quiet hours; at 07:00 the latest of them, 27, goes
    assert by_category["ponding"] == [("07:00", 27)]
    assert by_category["manhole_open"][:3] == [("22:10", 1), ("22:30", 2), ("22:50", 3)]
    svc.stop()


def test_due_slot_counts_from_the_cycle_start() -> None:
    clock = FakeClock()
    desk = TicketDesk(TicketStore("sqlite://"), routing(), grids(), tickets_cfg(), now=clock.now())
    [change] = desk.ingest([event("ponding", "camera:cam-1", clock.now())], clock.now()).changes
    t = change.ticket
    assert due_slot(t, t.cycle_started_at + 299, 300) is None
    assert due_slot(t, t.cycle_started_at + 300, 300) == 1
    assert due_slot(t, t.cycle_started_at + 899, 300) == 2
    desk.store.close()


def test_a_reopened_ticket_starts_its_reminders_again(tmp_path: Path) -> None:
    clock = FakeClock()
    t0 = clock.now()
    svc, notes = service(f"sqlite:///{tmp_path}/t.sqlite", clock, tickets_cfg(reminders={"every_min": 5}))
    [created] = svc.process([event("ponding", "camera:cam-1", t0)]).changes
    tid = created.ticket.id
    run(svc, clock, t0 + 6 * MIN)
    svc.resolve(tid, "worker-G1-M1")
    run(svc, clock, t0 + 10 * MIN)
    svc.reopen(tid, "command-centre")
    run(svc, clock, t0 + 21 * MIN)
    reminders = sent(notes, t0, ChangeKind.reminder)
    assert [(at, c.reminder) for at, c in reminders] == [(5 * MIN, 1), (15 * MIN, 1), (20 * MIN, 2)]
    assert len({c.id for _, c in reminders}) == 3  # reminder 1 of each cycle is its own change
    svc.stop()
