"""Property tests of the ticket state machine: nothing illegal gets through, the audit replays."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.tickets.desk import ACTION_TARGET, Action
from gateway.tickets.models import AuditAction
from gateway.tickets.states import (
    ENDED,
    OPEN,
    TRANSITIONS,
    IllegalTransition,
    TicketError,
    TicketStatus,
    can_transition,
    replay,
    transition,
)
from gridgate.clock import FakeClock
from tests.ticket_helpers import event, make_service

statuses = st.sampled_from(list(TicketStatus))


def test_every_status_has_a_row_and_the_happy_path_is_allowed() -> None:
    assert set(TRANSITIONS) == set(TicketStatus)
    path = ["new", "dispatched", "accepted", "on_site", "resolved", "closed", "reopened", "resolved"]
    assert replay("T", zip([None, *path[:-1]], path, strict=True)) is TicketStatus.resolved
    assert OPEN.isdisjoint(ENDED) and set(TicketStatus) == OPEN | ENDED


def test_an_illegal_transition_says_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition) as exc:
        transition("T1", TicketStatus.closed, TicketStatus.accepted)
    assert (
        str(exc.value) == "ticket T1: cannot go from closed to accepted (from closed it may go to: reopened)"
    )


@given(statuses, statuses)
def test_transition_accepts_exactly_the_table(current: TicketStatus, target: TicketStatus) -> None:
    if target in TRANSITIONS[current]:
        assert transition("T", current, target) is target
    else:
        with pytest.raises(IllegalTransition):
            transition("T", current, target)


@given(st.lists(statuses, max_size=30))
def test_replay_accepts_a_walk_only_if_every_step_is_legal(walk: list[TicketStatus]) -> None:
    steps: list[tuple[TicketStatus | None, TicketStatus]] = [(None, TicketStatus.new)]
    steps += list(zip([TicketStatus.new, *walk], walk, strict=False))
    legal = all(can_transition(a, b) for a, b in steps[1:] if a is not None)
    if legal:
        assert replay("T", steps) is (walk[-1] if walk else TicketStatus.new)
    else:
        with pytest.raises(TicketError):
            replay("T", steps)


actions = st.lists(
    st.tuples(
        st.sampled_from([*Action, "clear", "raise", "tick"]),
        st.integers(min_value=0, max_value=4000),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_desk_refuses_illegal_actions_and_its_audit_replays(steps: list[tuple[str, int]]) -> None:
    """Random people's actions, event raises/clears and clock jumps on a real store."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock()
        svc, _ = make_service(f"sqlite:///{Path(tmp) / 't.sqlite'}", clock)
        ev = event("ponding", "camera:cam-1", clock.now())
        created = svc.process([ev])
        tid = created.changes[0].ticket.id
        for what, dt in steps:
            clock.advance(dt)
            before = svc.get(tid).status
            if what == "raise":
                ev = event("ponding", "camera:cam-1", clock.now())
                svc.process([ev])
            elif what == "clear":
                svc.process([ev.model_copy(update={"state": "cleared"})])
            elif what == "tick":
                svc.tick()
            else:
                action = Action(what)
                target = ACTION_TARGET.get(action)
                try:
                    svc.act(
                        tid, action, "tester", note="n", assignee="w2" if action is Action.reassign else None
                    )
                except IllegalTransition:
                    assert target is not None and not can_transition(before, target)
                    assert svc.get(tid).status is before  # refused: nothing changed
                else:
                    if target is not None:
                        assert can_transition(before, target)
                        assert svc.get(tid).status is target
        history = svc.history(tid)
        steps_seen = [(a.from_status, a.to_status) for a in history if a.action is AuditAction.transition]
        assert replay(tid, steps_seen) is svc.get(tid).status
        assert svc.store.get(tid) == svc.get(tid)  # memory and database agree
        svc.stop()
