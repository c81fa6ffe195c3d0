"""The edge box listens to ticket changes (`{p}/tickets/{team}`) for false alarms about its events.

The gateway sends a change whose ticket a person ended with `resolution: false_alarm` together with
the ticket's event ids (`gateway.tickets.models.TicketChange.to_json`); each id this box kept frames
for is handed to `on_false_alarm` (the feedback store marks those frames). A persistent session
(`clean_session=False`, a fixed client id) makes the broker keep the changes while the box is away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, ValidationError

from edge.config import EdgeConfig
from edge.publisher import make_client
from gridgate.topics import Topics

log = logging.getLogger("gridgate.edge.tickets")

FALSE_ALARM = "false_alarm"


class TicketRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str


class TicketEnded(BaseModel):
    """The part of a ticket change this box reads; every other key is ignored."""

    model_config = ConfigDict(extra="ignore")

    change_id: str
    ticket: TicketRef
    to_status: str | None = None
    resolution: str | None = None
    event_ids: list[str] = []


def false_alarm_of(payload: bytes) -> TicketEnded | None:
    """The change if it ends a ticket as a false alarm, else None; ValidationError if it is no change."""
    change = TicketEnded.model_validate_json(payload)
    return change if change.resolution == FALSE_ALARM and change.event_ids else None


class TicketListener:
    """Subscribes to every team's ticket topic; `start()` connects in the background, `stop()`."""

    def __init__(
        self,
        cfg: EdgeConfig,
        on_false_alarm: Callable[[Iterable[str], str, datetime], int],
    ) -> None:
        self.cfg = cfg
        self.on_false_alarm = on_false_alarm
        self.topic = Topics(cfg.broker.topic_prefix).tickets("+")
        self.connected = threading.Event()
        self.received = 0
        self.false_alarms = 0
        self.rejected = 0
        self.client = make_client(cfg.broker, f"{cfg.client_id}-tickets"[:64], clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._started = False

    @property
    def where(self) -> str:
        b = self.cfg.broker
        return f"{'mqtts' if b.tls.enabled else 'mqtt'}://{b.host}:{b.port}"

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.error("event=mqtt_refused broker=%s client=tickets reason=%s", self.where, rc)
            return
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        log.info("event=ticket_listener_connected broker=%s topic=%s", self.where, self.topic)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if self._started:
            log.warning("event=ticket_listener_disconnected broker=%s reason=%s", self.where, rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        try:
            change = false_alarm_of(msg.payload)
        except ValidationError as exc:
            self.rejected += 1
            log.warning(
                "event=ticket_change_rejected topic=%s error=%r", msg.topic, str(exc).splitlines()[0][:200]
            )
            return
        if change is None:
            return
        self.false_alarms += 1
        try:
            marked = self.on_false_alarm(change.event_ids, change.ticket.id, datetime.now(UTC))
        except Exception:  # a disk problem must not kill paho's network thread
            log.exception("event=feedback_mark_failed ticket=%s", change.ticket.id)
            return
        log.info(
            "event=feedback_false_alarm ticket=%s change=%s status=%s events=%d frames_marked=%d",
            change.ticket.id,
            change.change_id,
            change.to_status,
            len(change.event_ids),
            marked,
        )

    def start(self) -> TicketListener:
        self._started = True
        b = self.cfg.broker
        self.client.connect_async(b.host, b.port, keepalive=b.keepalive_s)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.client.disconnect()
        self.client.loop_stop()
