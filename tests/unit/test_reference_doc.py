"""docs/reference.md lists every MQTT topic of gridgate/topics.py, every field of the payloads it
describes, and every route the API serves (its table is the one the app generates)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from edge.stats import CameraStats, EdgeStats
from gateway.api.reference import BEGIN, END, markdown, reference_app, route_docs
from gateway.tickets.models import Target
from gateway.tickets.states import TicketStatus
from gridgate.models import EdgeEventMessage, Event
from gridgate.topics import Topics

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs/reference.md").read_text(encoding="utf-8")
GUIDE = (REPO / "docs/operator-guide.md").read_text(encoding="utf-8")


def topic_patterns() -> list[str]:
    """Every topic (or filter) `Topics` builds, with its arguments' names as placeholders."""
    t = Topics("{p}")
    out = []
    for name, member in inspect.getmembers(Topics):
        if name.startswith("_") or name.startswith("parse"):
            continue
        if isinstance(member, property):
            out.append(getattr(t, name))
        elif inspect.isfunction(member):
            params = list(inspect.signature(member).parameters)[1:]
            out.append(getattr(t, name)(*(f"{{{p}}}" for p in params)))
    return out


@pytest.mark.parametrize("topic", topic_patterns())
def test_every_topic_is_in_the_reference(topic: str) -> None:
    assert f"`{topic}`" in DOC, f"docs/reference.md does not list {topic}"


def test_the_topic_scheme_was_found() -> None:
    assert len(topic_patterns()) >= 12 and "{p}/devices/{device_type}/{device_id}/up" in topic_patterns()


@pytest.mark.parametrize(
    "model", [Event, EdgeEventMessage, EdgeStats, CameraStats, Target], ids=lambda m: m.__name__
)
def test_every_payload_field_is_in_the_reference(model: type) -> None:
    missing = [f for f in model.model_fields if f"`{f}`" not in DOC]
    assert not missing, f"docs/reference.md does not describe {model.__name__}.{missing}"


def test_every_ticket_state_is_in_the_reference() -> None:
    assert all(f"`{s.value}`" in DOC for s in TicketStatus)


def test_the_api_table_is_the_one_the_app_generates() -> None:
    app = reference_app()
    block = DOC[DOC.index(BEGIN) : DOC.index(END) + len(END)]
    assert block == markdown(app), (
        "docs/reference.md's API table is out of date: "
        "run `python -m gateway.api.reference docs/reference.md`"
    )
    routes = route_docs(app)
    assert len(routes) >= 28
    for r in routes:
        assert f"| {r.method} | `{r.path}` |" in block
    assert any(r.method == "WS" and r.path == "/api/v1/stream" for r in routes)


def test_the_docs_link_each_other_and_the_readme_links_both() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/operator-guide.md" in readme and "docs/reference.md" in readme
    assert "(reference.md)" in GUIDE and "(operator-guide.md)" in DOC
    for heading in (
        "Deploying the central gateway",
        "Deploying an edge box",
        "Sizing the broker",
        "Adding a device type or a codec",
        "Drawing a zone",
        "Scaling out",
    ):
        assert re.search(rf"^## .*{heading}", GUIDE, re.M), f"operator guide lacks a section {heading!r}"
