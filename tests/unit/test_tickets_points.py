"""The `tickets` measurement carries each SLA timer's length and whether it was met, so compliance
per category is a query over the points alone (Grafana's SLA panels)."""

from __future__ import annotations

from pathlib import Path

from gridgate.clock import FakeClock
from gridgate.models import Point
from tests.ticket_helpers import CAMERA, GAUGE, event, make_service


class Sink:
    def __init__(self) -> None:
        self.points: list[Point] = []

    def add(self, point: Point) -> None:
        self.points.append(point)


def test_each_timer_stopping_transition_says_its_sla_and_whether_it_was_met(tmp_path: Path) -> None:
    clock = FakeClock()
    svc, _ = make_service(f"sqlite:///{tmp_path / 't.sqlite'}", clock)
    sink = Sink()
    svc.sink = sink
    ponding = svc.process([event("ponding", "camera:cam-1", clock.now(), CAMERA)]).changes[0].ticket
    cover = svc.process([event("manhole_open", "device:MH-1", clock.now(), GAUGE)]).changes[0].ticket
    clock.advance(45)  # ponding: accept within 60 s; manhole_open: within 30 s (routing.yaml)
    svc.accept(ponding.id, "worker-G1")
    svc.accept(cover.id, "worker-G1")
    clock.advance(600)  # ponding: on site 645 s after creation, of 600
    svc.arrive(ponding.id, "worker-G1")
    svc.resolve(ponding.id, "worker-G1")
    svc.stop()
    rows = {
        (p.fields["ticket_id"], p.tags["status"]): (p.fields.get("sla_s"), p.fields.get("on_time"))
        for p in sink.points
    }
    assert rows[(ponding.id, "accepted")] == (60.0, True)
    assert rows[(cover.id, "accepted")] == (30.0, False)
    assert rows[(ponding.id, "on_site")] == (600.0, False)
    assert rows[(ponding.id, "resolved")] == (86400.0, True)
    assert rows[(ponding.id, "dispatched")] == (None, None)  # only the transitions that stop a timer
