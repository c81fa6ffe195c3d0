"""The pure parts of tickets, each alone: routing, dedup, SLA timers, storm control, coalescing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.grid_synth import synth_grids
from gateway.grids import GridIndex
from gateway.tickets.coalesce import UpdateCoalescer
from gateway.tickets.dedup import CorrelationIndex, DedupPolicy, EventKey, MatchReason, distance_m, find_match
from gateway.tickets.models import Ticket, Timer
from gateway.tickets.routing import load_routing, people
from gateway.tickets.sla import due_breaches, next_due, next_level
from gateway.tickets.states import TicketStatus
from gateway.tickets.storm import StormControl
from gridgate.config import ConfigError
from tests.ticket_helpers import CAMERA, GAUGE, grids, routing

T0 = 1_800_000_000.0


def ticket(**kw: object) -> Ticket:
    base: dict[str, object] = {
        "category": "ponding",
        "group": "standing_water",
        "grid_id": "G1",
        "team": "drainage",
        "dedup_key": "ponding:camera:cam-1",
        "lat": CAMERA[0],
        "lon": CAMERA[1],
        "first_seen": T0,
        "last_seen": T0,
        "created_at": T0,
        "updated_at": T0,
        "cycle_started_at": T0,
        "accept_by": T0 + 60,
        "on_site_by": T0 + 600,
        "resolve_by": T0 + 86_400,
        "status": TicketStatus.dispatched,
        "active_keys": ["ponding:camera:cam-1"],
        "escalation_chain": ["worker", "grid_head", "leader"],
    }
    return Ticket.model_validate(base | kw)


# ---- routing -----------------------------------------------------------------------------------


def test_routing_defaults_and_enforcement_on_site() -> None:
    r = routing()
    ponding = r.route("ponding")
    assert (ponding.team, ponding.sla.accept_s, ponding.sla.on_site_s, ponding.sla.resolve_s) == (
        "drainage",
        60,
        600,
        86_400,
    )
    parking = r.route("illegal_parking")
    assert (parking.team, parking.sla.on_site_s, parking.auto_cancel) == ("enforcement", 1800, True)
    assert r.group_of("water_high") == r.group_of("ponding") == "standing_water"
    assert r.route("something_new").team == "command_centre"
    assert r.route("sensor_fault", is_fault=True, team_hint="covers").team == "covers"


def test_grid_overrides_the_category_team() -> None:
    g = grids()
    r = routing()
    assert r.route("illegal_parking", grid=g.grids["G2"]).team == "enforcement-zone-2"
    assert r.route("illegal_parking", grid=g.grids["G1"]).team == "enforcement"
    chain = r.route("ponding").chain
    assert people(chain, g.grids["G1"], g.grids["G1-M1"]) == ["worker-G1-M1", "head-G1", "leader-G1"]
    assert people(chain, g.grids["G1"], None) == ["worker-G1", "head-G1", "leader-G1"]


def test_routing_errors_name_file_field_and_fix(tmp_path: Path) -> None:
    f = tmp_path / "routing.yaml"
    f.write_text(
        "teams: {drainage: {}}\n"
        "categories:\n  ponding: {team: drainge}\n  water_high: {team: drainage, sla: {accept_s: -1}}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_routing(f)
    text = exc.value.render()
    assert str(f) in text
    assert "categories.water_high.sla.accept_s" in text and "greater than 0" in text
    f.write_text("teams: {drainage: {}}\ncategories:\n  ponding: {team: drainge}\ngroups: {g: [ponding]}\n")
    with pytest.raises(ConfigError) as exc:
        load_routing(f)
    text = exc.value.render()
    assert "categories.ponding.team: unknown team 'drainge' (add it under `teams:` or use one of" in text
    assert "groups.g: a group needs at least two categories" in text
    f.write_text("categories:\n  ponding: {team: drainage, colour: blue}\n")
    with pytest.raises(ConfigError, match=r"categories\.ponding\.colour.*remove it or check its spelling"):
        load_routing(f)


# ---- grids -------------------------------------------------------------------------------------


def test_bulk_lookup_agrees_with_single_and_flags_fallback() -> None:
    index = GridIndex.from_geojson(synth_grids(rows=20, cols=10), "fallback")
    points = [(30.25 + i * 0.0007, 120.13 + (i * 37 % 100) * 0.0006) for i in range(100)] + [(10.0, 10.0)]
    bulk = index.locate_many(points)
    assert bulk == [index.locate(lat, lon) for lat, lon in points]
    assert bulk[-1].fallback and bulk[-1].grid_id == "fallback"
    assert sum(m.micro_grid_id is not None for m in bulk) > 20 and sum(m.fallback for m in bulk) > 20
    assert index.locate_many([]) == []


# ---- dedup -------------------------------------------------------------------------------------


def test_distance_is_metres() -> None:
    assert distance_m(*GAUGE, *CAMERA) == pytest.approx(20.0, abs=2.0)
    assert distance_m(30.0, 120.0, 30.0, 120.001) == pytest.approx(96.3, abs=0.5)


def test_match_by_key_nearby_group_and_reopen() -> None:
    policy = DedupPolicy(radius_m=50, window_s=900, reopen_window_s=86_400)
    t = ticket()
    index = CorrelationIndex(50)
    index.add(t)
    tickets = {t.id: t}
    same = EventKey("ponding:camera:cam-1", "standing_water", None, None)
    assert find_match(same, index, tickets, T0 + 5, policy).reason is MatchReason.dedup_key
    gauge = EventKey("water_high:device:WG-1", "standing_water", *GAUGE)
    m = find_match(gauge, index, tickets, T0 + 5, policy)
    assert m is not None and m.reason is MatchReason.nearby and m.distance_m < 50
    far = EventKey("water_high:device:WG-2", "standing_water", GAUGE[0] + 0.001, GAUGE[1])  # ~110 m
    assert find_match(far, index, tickets, T0 + 5, policy) is None
    other_group = EventKey("bin_full:device:BIN-1", "bin_problem", *GAUGE)
    assert find_match(other_group, index, tickets, T0 + 5, policy) is None
    # ended: a recurrence within the reopen window reopens, after it opens a new ticket
    t.status, t.ended_at, t.active_keys = TicketStatus.closed, T0 + 100, []
    assert find_match(gauge, index, tickets, T0 + 200, policy).reopen
    assert find_match(same, index, tickets, T0 + 100 + 86_401, policy) is None


def test_nearby_join_needs_activity_or_the_window() -> None:
    policy = DedupPolicy(radius_m=50, window_s=900)
    t = ticket(active_keys=[])
    index = CorrelationIndex(50)
    index.add(t)
    gauge = EventKey("water_high:device:WG-1", "standing_water", *GAUGE)
    assert find_match(gauge, index, {t.id: t}, T0 + 899, policy) is not None
    assert find_match(gauge, index, {t.id: t}, T0 + 901, policy) is None


def test_child_fault_groups_under_offline_parent() -> None:
    parent = ticket(category="device_offline", group="device_offline", dedup_key="device_offline:edge:box-1")
    index = CorrelationIndex(50)
    index.add(parent)
    child = EventKey("sensor_fault:device:MH-9", "sensor_fault", 31.0, 121.0, True, "edge:box-1")
    m = find_match(child, index, {parent.id: parent}, T0, DedupPolicy())
    assert m is not None and m.reason is MatchReason.parent


def test_index_near_finds_across_cell_edges_and_forgets() -> None:
    index = CorrelationIndex(50)
    t = ticket(lat=30.0, lon=120.0)
    index.add(t)
    assert t.id in index.near("standing_water", 30.0, 120.0004)
    assert t.id not in index.near("bin_problem", 30.0, 120.0)
    index.remove(t.id)
    assert index.near("standing_water", 30.0, 120.0) == [] and index.by_key(t.dedup_key) is None


# ---- SLA ---------------------------------------------------------------------------------------


def test_timers_breach_once_and_stop_with_the_status() -> None:
    t = ticket()
    assert due_breaches(t, T0 + 59) == []
    assert due_breaches(t, T0 + 60) == [Timer.accept]
    assert due_breaches(t, T0 + 700) == [Timer.accept, Timer.on_site]
    t.breached = [Timer.accept]
    assert due_breaches(t, T0 + 700) == [Timer.on_site]
    t.status = TicketStatus.on_site
    assert due_breaches(t, T0 + 700) == [] and next_due(t) == T0 + 86_400
    t.status = TicketStatus.resolved
    assert due_breaches(t, T0 + 100_000) == [] and next_due(t) is None
    assert [next_level(i, 3) for i in range(3)] == [1, 2, None]


# ---- storm control -----------------------------------------------------------------------------


def test_offline_is_held_through_the_grace_and_dropped_when_back() -> None:
    storm: StormControl[str] = StormControl(offline_grace_s=120, offline_settle_s=30, per_min=5)
    storm.set_link(False, T0)
    storm.hold_offline("device_offline:device:A", "A", T0)
    storm.hold_offline("device_offline:device:B", "B", T0)
    storm.set_link(True, T0 + 10)
    assert storm.release_offline(T0 + 100) == []  # still in the grace
    assert storm.drop_held("device_offline:device:A")  # A reported again
    assert storm.release_offline(T0 + 131) == ["B"]
    assert storm.held == 0 and storm.suppressed == 1
    storm.hold_offline("device_offline:device:C", "C", T0 + 200)
    assert storm.release_offline(T0 + 229) == [] and storm.release_offline(T0 + 230) == ["C"]


def test_rate_limit_queues_by_key_and_releases_in_order() -> None:
    storm: StormControl[str] = StormControl(per_min=2)
    assert storm.allow_new("G1", T0) and storm.allow_new("G1", T0 + 1)
    assert not storm.allow_new("G1", T0 + 2)
    storm.enqueue("G1", "k3", "k3-raise")
    storm.enqueue("G1", "k4", "k4-raise")
    storm.enqueue("G1", "k3", "k3-clear")  # the same key stays together
    assert storm.allow_new("G2", T0 + 2)  # other grids are not held up
    assert not storm.allow_new("G1", T0 + 61)  # the queue goes first
    assert storm.queued == 3 and storm.is_queued("k3")
    assert storm.release_queued(T0 + 30) == []
    assert storm.release_queued(T0 + 61) == ["k3-raise", "k3-clear", "k4-raise"]
    assert storm.queued == 0


# ---- coalescing --------------------------------------------------------------------------------


def test_updates_are_coalesced_per_ticket() -> None:
    c = UpdateCoalescer(30)
    c.sent("T", T0)  # created
    assert not c.offer("T", T0 + 1) and not c.offer("T", T0 + 2)
    assert c.offer("U", T0 + 2)  # another ticket is not held by T
    assert c.due(T0 + 29) == [] and c.due(T0 + 30) == ["T"]
    assert c.offer("T", T0 + 61)
    c.sent("T", T0 + 62)
    assert not c.offer("T", T0 + 63)
    c.sent("T", T0 + 64)  # a state change carries the latest count: the held update goes
    assert c.due(T0 + 200) == []


def test_device_faults_never_correlate_by_place() -> None:
    key = "sensor_fault:device:A"
    t = ticket(category="sensor_fault", group="sensor_fault", dedup_key=key, is_fault=True)
    index = CorrelationIndex(50)
    index.add(t)
    neighbour = EventKey("sensor_fault:device:B", "sensor_fault", CAMERA[0], CAMERA[1], is_fault=True)
    assert find_match(neighbour, index, {t.id: t}, T0, DedupPolicy()) is None


def test_a_device_behind_another_source_has_that_source_as_parent() -> None:
    from devices.registry import DeviceRegistry
    from devices.types import Device
    from gateway.tickets.service import registry_parent_of

    reg = DeviceRegistry.from_devices(
        [
            Device(id="GW-1", type="water_gauge", lat=30.0, lon=120.0),
            Device(id="WG-2", type="water_gauge", lat=30.0, lon=120.0, behind="GW-1"),
            Device(id="WG-3", type="water_gauge", lat=30.0, lon=120.0, behind="edge-7"),
        ]
    )
    parent_of = registry_parent_of(reg)
    assert parent_of("device:WG-2") == "device:GW-1"  # a device of the registry
    assert parent_of("device:WG-3") == "edge:edge-7"  # else an edge box
    assert parent_of("device:GW-1") is None and parent_of("camera:cam-1") is None
