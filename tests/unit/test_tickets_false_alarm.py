"""A ticket ended as a false alarm: the resolution is checked, audited and carried with its event ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.tickets.states import Resolution, TicketError, TicketStatus, check_resolution
from gridgate.clock import FakeClock
from tests.ticket_helpers import event, make_service


def test_a_resolution_goes_only_with_an_ending_status() -> None:
    for target in (TicketStatus.resolved, TicketStatus.closed, TicketStatus.cancelled):
        check_resolution("T1", target, Resolution.false_alarm)
    for target in (TicketStatus.accepted, TicketStatus.reopened, None):
        check_resolution("T1", target, None)
        with pytest.raises(TicketError, match="resolution false_alarm is for resolve, close or cancel"):
            check_resolution("T1", target, Resolution.false_alarm)


def test_cancel_as_false_alarm_carries_the_event_ids(tmp_path: Path) -> None:
    clock = FakeClock()
    svc, notes = make_service(f"sqlite:///{tmp_path / 't.sqlite'}", clock)
    first = event("illegal_parking", "camera:cam-1", clock.now(), id="EV-A")
    second = event("illegal_parking", "camera:cam-1", clock.now(), id="EV-B")
    tid = svc.process([first, second]).changes[0].ticket.id
    clock.advance(30)
    svc.cancel(tid, "centre", "no car there", resolution="false_alarm")
    change = notes.changes[-1]
    body = change.to_json()
    assert (body["to_status"], body["resolution"]) == (TicketStatus.cancelled, "false_alarm")
    assert sorted(body["event_ids"]) == ["EV-A", "EV-B"]
    audit = svc.history(tid)[-1]
    assert audit.to_status is TicketStatus.cancelled and audit.detail == {"resolution": "false_alarm"}


def test_plain_changes_keep_their_payload_and_misplaced_resolutions_are_refused(tmp_path: Path) -> None:
    clock = FakeClock()
    svc, notes = make_service(f"sqlite:///{tmp_path / 't.sqlite'}", clock)
    tid = svc.process([event("ponding", "camera:cam-1", clock.now())]).changes[0].ticket.id
    with pytest.raises(TicketError, match="not going to accepted"):
        svc.act(tid, "accept", "w1", resolution="false_alarm")
    assert svc.get(tid).status is TicketStatus.dispatched  # refused: nothing changed
    svc.resolve(tid, "w1")
    svc.close(tid, "centre")
    body = notes.changes[-1].to_json()
    assert body["to_status"] == TicketStatus.closed
    assert "resolution" not in body and "event_ids" not in body
