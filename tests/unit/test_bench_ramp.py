"""bench/edge.py's camera-count search: doubling then bisection per approach, approaches taking turns
trial by trial (so drifting host load weighs on all of them alike)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bench.edge import Ramp, interleave


def passes_up_to(capacity: int, log: list[tuple[str, int]], name: str) -> Any:
    def trial(n: int) -> dict[str, Any]:
        log.append((name, n))
        return {"n": n, "ok": n <= capacity}

    return trial


@given(st.integers(0, 40), st.integers(1, 40))
def test_finds_the_most_cameras_that_pass(capacity: int, limit: int) -> None:
    ramp = Ramp("x", passes_up_to(capacity, [], "x"), 2, limit)
    interleave([ramp])
    doubled = [n for n in (2, 4, 8, 16, 32) if n <= limit]  # doubling stops at the limit
    top = doubled[-1] if doubled else 0
    assert ramp.best == (capacity if capacity < top else top)


def test_approaches_take_turns() -> None:
    log: list[tuple[str, int]] = []
    a = Ramp("a", passes_up_to(5, log, "a"), 2, 16)
    b = Ramp("b", passes_up_to(9, log, "b"), 2, 16)
    interleave([a, b])
    assert (a.best, b.best) == (5, 9)
    assert log[:6] == [("a", 2), ("b", 2), ("a", 4), ("b", 4), ("a", 8), ("b", 8)]
    assert [n for who, n in log if who == "a"] == [2, 4, 8, 6, 5]
    assert a.at_best() == {"n": 5, "ok": True}
