"""The headline figures as Chinese centres publish them: 结案率, 按期结案率, 返工率, time to accept."""

from __future__ import annotations

from gateway.tickets.reports import FigureRow, headline, unit_ranking


def row(
    status: str,
    *,
    accepted: float | None = None,
    resolved: float | None = None,
    reopens: int = 0,
    team: str = "drainage",
) -> FigureRow:
    return FigureRow(
        status=status,
        cycle_started_at=0.0,
        accepted_at=accepted,
        resolved_at=resolved,
        resolve_by=100.0,
        closed_at=resolved,
        reopen_count=reopens,
        team=team,
    )


def test_rates_count_the_due_and_leave_out_the_cancelled() -> None:
    rows = [
        row("closed", accepted=10, resolved=50),  # closed on time
        row("closed", accepted=30, resolved=150),  # closed, late
        row("resolved", accepted=20, resolved=60),  # awaiting verification: not closed yet
        row("dispatched"),
        row("accepted", accepted=40, resolved=None, reopens=1),  # reworked: resolved once, reopened
        row("cancelled"),
    ]
    f = headline(rows)
    assert (f["due"], f["closed"], f["closed_on_time"]) == (5, 2, 1)
    assert (f["closure_rate_pct"], f["on_time_closure_rate_pct"]) == (40.0, 20.0)
    assert f["reopen_rate_pct"] == 25.0  # 1 reworked of the 4 ever resolved
    assert f["median_accept_s"] == 25.0


def test_no_tickets_no_rates() -> None:
    f = headline([])
    assert (f["due"], f["closure_rate_pct"], f["reopen_rate_pct"], f["median_accept_s"]) == (
        0,
        None,
        None,
        None,
    )


def test_units_are_ranked_by_on_time_closure() -> None:
    rows = [
        row("closed", resolved=150, team="drainage"),  # late
        row("closed", resolved=50, team="drainage"),
        row("closed", resolved=50, team="sanitation"),
        row("dispatched", team="enforcement"),
    ]
    ranked = unit_ranking(rows)
    assert [(u["team"], u["on_time_closure_rate_pct"], u["due"]) for u in ranked] == [
        ("sanitation", 100.0, 1),
        ("drainage", 50.0, 2),
        ("enforcement", 0.0, 1),
    ]
