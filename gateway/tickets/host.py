"""What the ticket service needs from the process that hosts it (the Gateway satisfies it).

The ticket desk depends on this interface, never on `gateway.service`: the gateway imports the
ticket service, not the other way round.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from gateway.grids import GridIndex
from gridgate.clock import Clock
from gridgate.config import GatewayConfig
from gridgate.models import Point
from gridgate.topics import Topics

if TYPE_CHECKING:
    from devices.registry import DeviceRegistry


class PointSink(Protocol):
    def add(self, point: Point) -> Any: ...


class BrokerLink(Protocol):
    """The MQTT client: publishes notifications; `connected` is the link state (storm control)."""

    @property
    def connected(self) -> threading.Event: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


class TicketHost(Protocol):
    """Config, grids, clock, broker link and topics, the sink runner and the device registry."""

    @property
    def cfg(self) -> GatewayConfig: ...

    @property
    def grids(self) -> GridIndex: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def mqtt(self) -> BrokerLink: ...

    @property
    def topics(self) -> Topics: ...

    @property
    def runner(self) -> PointSink: ...

    @property
    def registry(self) -> DeviceRegistry: ...
