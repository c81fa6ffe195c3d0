"""The MQTT topic scheme of DESIGN.md, with one configurable prefix.

Every name that becomes one level of a topic (a team, a grid, an event kind, a device, edge box
or camera id) must pass `topic_level_problem`: a `/` would split the level, `+` and `#` are
wildcards nobody may publish to, and a NUL or control character makes a packet the broker
refuses by disconnecting the client. `TopicLevel` is the same check as a pydantic type, for
config files and API bodies.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

MAX_LEVEL_CHARS = 128
LEVEL_RULE = f"a topic level is 1-{MAX_LEVEL_CHARS} printable characters without '/', '+' or '#'"


def topic_level_problem(name: str) -> str | None:
    """None when `name` can be one MQTT topic level; else a sentence saying what is wrong with it."""
    shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
    if not name:
        return f"is empty ({LEVEL_RULE})"
    if len(name) > MAX_LEVEL_CHARS:
        return f"{shown} is {len(name)} characters long ({LEVEL_RULE})"
    for i, ch in enumerate(name):
        if ch == "/":
            return f"{shown} contains '/' at position {i}, which would split the topic level ({LEVEL_RULE})"
        if ch in "+#":
            return f"{shown} contains the MQTT wildcard {ch!r} at position {i} ({LEVEL_RULE})"
        if unicodedata.category(ch) == "Cc":
            return f"{shown} contains the control character U+{ord(ch):04X} at position {i} ({LEVEL_RULE})"
        if not ch.isprintable() and ch != " ":
            return (
                f"{shown} contains the non-printable character U+{ord(ch):04X} at position {i} ({LEVEL_RULE})"
            )
    if name != name.strip():
        return f"{shown} starts or ends with white space (remove it; {LEVEL_RULE})"
    return None


def _valid_level(name: str) -> str:
    problem = topic_level_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


TopicLevel = Annotated[str, AfterValidator(_valid_level)]
"""A str that can be one MQTT topic level (validated with `topic_level_problem`)."""


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    device_type: str
    device_id: str
    channel: str  # "up" or "status"


@dataclass(frozen=True, slots=True)
class EdgeTopic:
    edge_id: str
    channel: str  # "events", "status", "evidence" or "frames"
    event_id: str | None = None  # evidence only
    name: str | None = None  # evidence: the picture's name; frames: the camera id


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "gridgate"

    # sensor -> gateway
    def device_up(self, device_type: str, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_type}/{device_id}/up"

    def device_status(self, device_type: str, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_type}/{device_id}/status"

    @property
    def device_filter(self) -> str:
        # everything under devices/, so a malformed topic is rejected (unknown_topic), not ignored
        return f"{self.prefix}/devices/#"

    # edge -> gateway
    def edge_events(self, edge_id: str) -> str:
        return f"{self.prefix}/edge/{edge_id}/events"

    def edge_status(self, edge_id: str) -> str:
        return f"{self.prefix}/edge/{edge_id}/status"

    def edge_evidence(self, edge_id: str, event_id: str, name: str) -> str:
        return f"{self.prefix}/edge/{edge_id}/evidence/{event_id}/{name}"

    def edge_frame(self, edge_id: str, camera_id: str) -> str:
        """A camera's latest analysed frame with the detections drawn (retained JPEG)."""
        return f"{self.prefix}/edge/{edge_id}/frames/{camera_id}"

    @property
    def edge_filter(self) -> str:
        return f"{self.prefix}/edge/#"

    def parse_edge(self, topic: str) -> EdgeTopic | None:
        """`{p}/edge/{id}/events|status`, `{p}/edge/{id}/evidence/{event}/{name}` or
        `{p}/edge/{id}/frames/{camera}`; None otherwise."""
        head = self.prefix + "/edge/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if not all(parts):
            return None
        if len(parts) == 2 and parts[1] in ("events", "status"):
            return EdgeTopic(parts[0], parts[1])
        if len(parts) == 4 and parts[1] == "evidence":
            return EdgeTopic(parts[0], "evidence", parts[2], parts[3])
        if len(parts) == 3 and parts[1] == "frames":
            return EdgeTopic(parts[0], "frames", name=parts[2])
        return None

    # gateway -> people
    def alert(self, grid_id: str, kind: str) -> str:
        return f"{self.prefix}/alerts/{grid_id}/{kind}"

    def tickets(self, team: str) -> str:
        return f"{self.prefix}/tickets/{team}"

    def maintenance(self, team: str) -> str:
        return f"{self.prefix}/maintenance/{team}/faults"

    # between gateway roles (--role ingest -> --role dispatch)
    @property
    def internal_events(self) -> str:
        """Event changes from the ingest replicas to the lead dispatcher (JSON list of events, QoS 1)."""
        return f"{self.prefix}/internal/events"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}/dead-letter"

    def parse_device(self, topic: str) -> DeviceTopic | None:
        """`{p}/devices/{type}/{id}/{up|status}` -> its parts, or None for any other topic."""
        head = self.prefix + "/devices/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or not all(parts) or parts[2] not in ("up", "status"):
            return None
        return DeviceTopic(parts[0], parts[1], parts[2])
