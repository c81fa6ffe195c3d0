"""Topic-level names at every config entry, the stream's replay ring, and an open API on the network."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.grids import GridIndex
from gateway.stream import StreamFilter, StreamHub
from gateway.tickets.routing import load_routing
from gridgate.cli import app
from gridgate.config import ConfigError, GatewayConfig, open_api_exposure
from gridgate.topics import MAX_LEVEL_CHARS, Topics, topic_level_problem
from tests.ticket_helpers import CAMERA, ROUTING_FILE, event, grid_doc

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("night shift\t2", "control character U+0009 at position 11"),
        ("nul\x00", "control character U+0000"),
        ("del\x7f", "control character U+007F"),
        ("zero\u200bwidth", "non-printable character U+200B"),
        ("line\u2028sep", "non-printable character U+2028"),
        ("#", "wildcard '#'"),
        ("a+b", "wildcard '+'"),
        ("roads/north", "contains '/'"),
        (" drainage", "white space"),
        ("drainage ", "white space"),
        ("x" * (MAX_LEVEL_CHARS + 1), f"{MAX_LEVEL_CHARS + 1} characters long"),
    ],
)
def test_a_name_that_cannot_be_a_topic_level_is_explained(name: str, problem: str) -> None:
    said = topic_level_problem(name)
    assert said is not None and problem in said and "printable characters without" in said


@pytest.mark.parametrize(
    "name", ["drainage", "enforcement-zone-2", "G01-M1", "night shift 2", "排水队", "a" * 128]
)
def test_ordinary_names_are_fine(name: str) -> None:
    assert topic_level_problem(name) is None


@given(st.text(max_size=200))
def test_every_accepted_name_makes_exactly_one_publishable_level(name: str) -> None:
    if topic_level_problem(name) is None:
        topic = Topics("gridgate").tickets(name)
        assert topic.split("/") == ["gridgate", "tickets", name]
        assert not any(c in topic for c in "+#\x00") and all(c.isprintable() for c in topic)


def test_routing_yaml_refuses_teams_and_categories_that_are_no_topic_level(tmp_path: Path) -> None:
    for doc, where in [
        ('teams:\n  "night\\tshift": {}\n', "teams"),
        ("fallback_team: '#'\n", "fallback_team"),
        ("fault_team: 'a/b'\n", "fault_team"),
        ("categories:\n  ponding: {team: 'dr+ain'}\n", "categories.ponding.team"),
        ("categories:\n  'pond/ing': {}\n", "categories"),
        ("categories:\n  ponding: {code: 'EX/01'}\n", "categories.ponding.code"),
    ]:
        path = tmp_path / "routing.yaml"
        path.write_text(doc)
        with pytest.raises(ConfigError) as err:
            load_routing(path)
        assert where in err.value.render() and "topic level" in err.value.render(), doc


def test_grid_ids_parents_and_team_overrides_must_be_topic_levels() -> None:
    for props, where in [
        ({"id": "G#1"}, "properties.id"),
        ({"id": "G1", "teams": {"ponding": "night\tshift"}}, "properties.teams.ponding"),
        ({"id": "G1-M1", "parent": "G/1"}, "properties.parent"),
    ]:
        doc = grid_doc()
        doc["features"][0]["properties"] = props
        with pytest.raises(ConfigError) as err:
            GridIndex.from_geojson(doc, "outside")
        assert where in err.value.render() and "topic level" in err.value.render()
    with pytest.raises(ValueError, match="fallback_grid"):
        GatewayConfig(fallback_grid="out side\n")
    with pytest.raises(ValueError, match="maintenance_team"):
        GatewayConfig(maintenance_team="maint+")
    assert GatewayConfig(broker={"topic_prefix": "city/gridgate"}).broker.topic_prefix == "city/gridgate"
    for prefix in ("grid\tgate", "city//gridgate", "city/"):
        with pytest.raises(ValueError, match="topic_prefix"):
            GatewayConfig(broker={"topic_prefix": prefix})


def test_devices_yaml_refuses_a_maintenance_team_that_is_no_topic_level(tmp_path: Path) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text(
        json.dumps(
            {
                "devices": [
                    {"id": "MH-1", "type": "manhole", "lat": 30, "lon": 120, "maintenance_team": "a\tb"}
                ]
            }
        )
    )
    result = runner.invoke(app, ["config", "check", "-c", str(devices)])
    assert result.exit_code == 2 and "devices[0].maintenance_team" in result.output
    assert "control character U+0009" in result.output


def test_the_replay_ring_serves_a_resume_and_counts_what_it_no_longer_holds() -> None:
    loop = asyncio.new_event_loop()
    try:
        hub = StreamHub(queue_max=10, replay_max=100)
        evs = [event("ponding", f"camera:c{i}", 1.0, CAMERA) for i in range(150)]
        for ev in evs:
            ev.grid_id = "G1"
        hub.on_events(evs)  # nobody listens: the ring still keeps the last 100
        first, last = hub.first_id, hub.last_id
        assert last - first + 1 == 150
        _, backlog, gap = hub.connect("late", StreamFilter(), loop, since_id=last - 20)
        assert [m.id for m in backlog] == list(range(last - 19, last + 1)) and gap is None
        _, backlog, gap = hub.connect("later", StreamFilter(), loop, since_id=first)
        assert len(backlog) == 100 and gap is not None
        assert (gap.count, gap.last_id, gap.next_id) == (49, first, backlog[0].id)
        _, backlog, gap = hub.connect("g2", StreamFilter(grids=frozenset({"G2"})), loop, since_id=last - 5)
        assert backlog == [] and gap is None
        client, backlog, gap = hub.connect("now", StreamFilter(), loop)
        assert backlog == [] and gap is None and client.last_id == last
    finally:
        loop.close()


def test_an_open_api_on_the_network_is_refused_unless_allowed_and_then_warned(tmp_path: Path) -> None:
    routing = f"tickets: {{routing_file: {ROUTING_FILE}}}\n"
    gw = tmp_path / "gateway.yaml"
    gw.write_text(routing + "api: {host: 0.0.0.0, port: 8088}\n")
    result = runner.invoke(app, ["config", "check", "-c", str(gw)])
    assert result.exit_code == 2 and "api.host '0.0.0.0' is not a loopback address" in result.output
    assert "auth.allow_open: true" in result.output
    gw.write_text(routing + "api: {host: 0.0.0.0, port: 8088}\nauth: {allow_open: true}\n")
    result = runner.invoke(app, ["config", "check", "-c", str(gw)])
    out = " ".join(result.output.split())
    assert result.exit_code == 0 and "warning: the API listens on 0.0.0.0:8088 with no auth.tokens" in out
    assert "can read and change tickets as admin" in out
    # loopback, or tokens, or nobody let in: nothing to warn about
    assert open_api_exposure(GatewayConfig(api={"host": "::1"})) is None
    assert open_api_exposure(GatewayConfig(api={"host": "localhost"})) is None
    token = {"name": "cc", "role": "command_centre", "token": "x" * 20}
    assert open_api_exposure(GatewayConfig(api={"host": "0.0.0.0"}, auth={"tokens": [token]})) is None
    assert (
        open_api_exposure(GatewayConfig(api={"host": "0.0.0.0"}, auth={"open_on_localhost": False})) is None
    )
    with pytest.raises(ValueError, match=r"gateway\.city\.local"):
        GatewayConfig(api={"host": "gateway.city.local"})
