"""Pure parts of the dispatch channels and reports: stream queues, signatures, SLA maths, hotspots."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.stream import StreamFilter, StreamHub
from gateway.tickets.models import Target, TicketChange
from gateway.tickets.reports import HotspotRow, SLARow, hotspots, percentile, sla_report
from gateway.tickets.webhook import redact_url, sign, verify, webhook_payload
from gridgate.clock import FakeClock
from tests.ticket_helpers import CAMERA, event, make_service


def test_a_slow_stream_client_loses_its_oldest_messages_never_blocks() -> None:
    loop = asyncio.new_event_loop()
    try:
        hub = StreamHub(queue_max=10)
        slow, _, _ = hub.connect("slow", StreamFilter(), loop)
        g2, _, _ = hub.connect("g2", StreamFilter(grids=frozenset({"G2"})), loop)
        start = hub.last_id
        evs = [event("ponding", f"camera:c{i}", 1.0, CAMERA) for i in range(25)]
        for i, ev in enumerate(evs):
            ev.grid_id = "G1"
            ev.measurements["n"] = i
        hub.on_events(evs)
        messages, gap = slow.take()
        assert gap is not None and (gap.count, gap.last_id, gap.next_id) == (15, start, messages[0].id)
        assert (len(messages), slow.dropped, hub.dropped) == (10, 15, 15)
        assert [orjson.loads(m.body)["event"]["measurements"]["n"] for m in messages] == list(range(15, 25))
        assert g2.take() == ([], None)
        hub.disconnect(slow)
        hub.disconnect(g2)
        assert hub.clients == 0
    finally:
        loop.close()


def test_stream_filter_matches_types_grids_teams_kinds() -> None:
    f = StreamFilter(grids=frozenset({"G1"}), teams=frozenset({"drainage"}), types=frozenset({"ticket"}))
    assert f.matches("ticket", ("G9", "G1"), "drainage", "ponding")
    assert not f.matches("alert", ("G1", None), "drainage", "ponding")
    assert not f.matches("ticket", ("G1", None), "sanitation", "bin_full")
    assert StreamFilter(kinds=frozenset({"ponding"})).matches("alert", (None,), None, "ponding")


def test_signature_covers_timestamp_and_body_and_refuses_replays() -> None:
    sig = sign("k", "1700000000", b'{"a":1}')
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify("k", b'{"a":1}', "1700000000", sig, now=1700000100)
    assert not verify("k", b'{"a":1}', "1700000000", sig, now=1700001000)  # too old: a replay
    assert not verify("k", b'{"a":1}', "1700000001", sig, now=1700000000)
    assert not verify("k", b'{"a":1}', "soon", sig)
    assert redact_url("https://user:pw@city.example/hook?token=abc") == "https://city.example/hook"


def test_webhook_payload_carries_the_city_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    svc, notes = make_service(f"sqlite:///{tmp_path / 't.sqlite'}", clock)
    svc.process([event("ponding", "camera:cam-1", clock.now(), CAMERA)])
    change: TicketChange = notes.changes[0]
    change.ticket.code = "0105"
    body = webhook_payload(change)
    assert (body["code"], body["service_code"], body["change_id"]) == ("0105", "0105", change.id)
    assert body["target"] == Target(team="drainage", role="worker", person="worker-G1-M1").model_dump()
    svc.stop()


def test_percentiles_and_sla_compliance() -> None:
    assert percentile([], 50) is None and percentile([5], 90) == 5
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile(range(1, 11), 90) == pytest.approx(9.1)
    t0 = 1000.0

    def row(grid: str, accepted: float | None, status: str, breaches: int = 0) -> SLARow:
        return SLARow(
            grid, "ponding", status, t0, accepted, None, None, t0 + 60, t0 + 600, t0 + 86_400, breaches
        )

    rows = [row("G1", t0 + 30, "resolved"), row("G1", t0 + 90, "closed", 1), row("G2", None, "dispatched")]
    groups, total = sla_report(rows, now=t0 + 100, by="grid")
    g1 = next(g for g in groups if g["grid_id"] == "G1")
    assert g1["time_to_accept"] == {"n": 2, "p50_s": 60.0, "p90_s": 84.0}
    assert g1["compliance_pct"] == 50.0 and g1["accept_compliance_pct"] == 50.0
    assert total["tickets"] == 3 and total["accept_compliance_pct"] == pytest.approx(
        33.33
    )  # G2 breached accept


def test_hotspots_count_recurrences_at_one_place() -> None:
    def row(i: int, cat: str, lat: float, reopen: int = 0) -> HotspotRow:
        return HotspotRow(f"T{i}", cat, "G1", "G1-M1", lat, 120.1, float(i), reopen, 1)

    rows = [
        row(1, "ponding", 30.2, 1),
        row(2, "ponding", 30.20005),
        row(3, "ponding", 30.3),
        row(4, "bin_full", 30.2),
    ]
    found = hotspots(rows, min_count=3)
    assert [(h["category"], h["occurrences"], h["ticket_ids"]) for h in found] == [
        ("ponding", 3, ["T1", "T2"])
    ]
    by_micro = hotspots(rows, min_count=3, place="micro_grid")
    assert [(h["category"], h["occurrences"]) for h in by_micro] == [("ponding", 4)]


def test_without_tokens_only_local_clients_get_in() -> None:
    from gateway.api.auth import LOCAL_ADMIN, Authenticator, AuthError
    from gridgate.config import AuthConfig

    auth = Authenticator(AuthConfig())
    assert auth.open and "localhost only" in auth.describe()
    assert (
        auth.authenticate(None, "127.0.0.1") == LOCAL_ADMIN and auth.authenticate(None, "::1") == LOCAL_ADMIN
    )
    with pytest.raises(AuthError, match="only answers clients on its own machine"):
        auth.authenticate(None, "10.0.0.7")
    with pytest.raises(AuthError):
        Authenticator(AuthConfig(open_on_localhost=False)).authenticate(None, "127.0.0.1")
    closed = Authenticator(AuthConfig(tokens=[{"name": "cc", "role": "command_centre", "token": "x" * 20}]))
    assert closed.authenticate("x" * 20, "10.0.0.7").name == "cc"
    with pytest.raises(AuthError, match="missing bearer token"):
        closed.authenticate(None, "127.0.0.1")  # with tokens, being local is not enough
