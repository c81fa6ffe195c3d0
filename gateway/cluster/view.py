"""What an API replica (`--role api`) hears from the others: alerts and ticket changes.

The lead dispatcher publishes every alert and every ticket change on the broker (QoS 1). An API
replica listens with a clean session of its own (several may run; none needs what was said while
it was away: it reads the databases for that): alerts and ticket changes go to its WebSocket
clients as the lead dispatcher's own would, and each ticket change makes its ticket desk read that
ticket again, so what it serves and acts on is what the database holds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from gateway.mqtt import configure_client
from gridgate.config import BrokerConfig
from gridgate.models import Event
from gridgate.topics import Topics

log = logging.getLogger("gridgate.cluster")


class ViewFeed:
    def __init__(
        self,
        cfg: BrokerConfig,
        topics: Topics,
        on_alert: Callable[[Event], None],
        on_ticket_change: Callable[[dict[str, Any]], None],
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.client_id = f"{cfg.client_id}-api-{socket.gethostname()}-{os.getpid()}"[:120]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True, protocol=mqtt.MQTTv311
        )
        configure_client(self.client, cfg)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self._on_alert = on_alert
        self._on_ticket_change = on_ticket_change
        self.connected = threading.Event()
        self.alerts = self.changes = self.bad = 0

    def _connected(self, client: mqtt.Client, _ud: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            log.error("event=mqtt_refused client_id=%s reason=%s", self.client_id, rc)
            return
        client.subscribe([(f"{self.topics.prefix}/alerts/#", 1), (self.topics.tickets("#"), 1)])
        self.connected.set()

    def _message(self, _c: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic.startswith(f"{self.topics.prefix}/alerts/"):
                self._on_alert(Event.model_validate_json(msg.payload))
                self.alerts += 1
            else:
                doc = orjson.loads(msg.payload)
                if not isinstance(doc, dict) or not isinstance(doc.get("ticket"), dict):
                    raise ValueError("not a ticket change")
                self._on_ticket_change(doc)
                self.changes += 1
        except (ValidationError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            self.bad += 1
            log.warning("event=view_feed_rejected topic=%s error=%r", msg.topic, str(exc)[:200])
        except Exception:
            log.exception("event=view_feed_failed topic=%s", msg.topic)

    def start(self) -> ViewFeed:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
