"""Dispatch channels behind one interface: the ticket code never knows which channel it feeds.

A `Notifier` gets every `TicketChange` (created / updated / escalated, with the ticket snapshot and
its target). `notify()` is called from the ticket worker thread and must return quickly: a slow
channel (webhooks) queues or persists the change and delivers it on its own thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import orjson

from gateway.tickets.models import TicketChange
from gridgate.topics import Topics

log = logging.getLogger("gridgate.tickets.notify")


@runtime_checkable
class Notifier(Protocol):
    """One dispatch channel (MQTT, webhook, WebSocket...)."""

    name: str

    def notify(self, change: TicketChange) -> None:
        """Take one change; never block for long (queue it if delivery is slow)."""
        ...


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


class FanOut:
    """Sends each change to every notifier; one failing channel never stops the others."""

    name = "fanout"

    def __init__(self, notifiers: Iterable[Notifier] = ()) -> None:
        self.notifiers: list[Notifier] = list(notifiers)
        self.failures: dict[str, int] = {}

    def add(self, notifier: Notifier) -> None:
        self.notifiers.append(notifier)

    def notify(self, change: TicketChange) -> None:
        for n in self.notifiers:
            try:
                n.notify(change)
            except Exception:
                self.failures[n.name] = self.failures.get(n.name, 0) + 1
                log.exception(
                    "event=notify_failed notifier=%s ticket=%s change=%s kind=%s",
                    n.name,
                    change.ticket.id,
                    change.id,
                    change.kind,
                )


class MQTTNotifier:
    """Publishes every change as JSON on `{prefix}/tickets/{team}` (QoS 1)."""

    name = "mqtt"

    def __init__(self, publisher: Publisher, topics: Topics, qos: int = 1) -> None:
        self.publisher = publisher
        self.topics = topics
        self.qos = qos

    def notify(self, change: TicketChange) -> None:
        topic = self.topics.tickets(change.target.team or change.ticket.team)
        self.publisher.publish(topic, orjson.dumps(change.to_json()), self.qos)


class MemoryNotifier:
    """Keeps every change in a list: for tests and for a local command-centre feed."""

    name = "memory"

    def __init__(self) -> None:
        self.changes: list[TicketChange] = []

    def notify(self, change: TicketChange) -> None:
        self.changes.append(change)
