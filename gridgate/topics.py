"""The MQTT topic scheme of DESIGN.md, with one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    device_type: str
    device_id: str
    channel: str  # "up" or "status"


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

    # gateway -> people
    def alert(self, grid_id: str, kind: str) -> str:
        return f"{self.prefix}/alerts/{grid_id}/{kind}"

    def tickets(self, team: str) -> str:
        return f"{self.prefix}/tickets/{team}"

    def maintenance(self, team: str) -> str:
        return f"{self.prefix}/maintenance/{team}/faults"

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
