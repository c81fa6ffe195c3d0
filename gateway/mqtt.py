"""The gateway's MQTT connection (paho-mqtt 2.x): persistent session, QoS 1, reconnect with backoff.

Messages are handled on paho's network thread, which keeps the per-message cost at its lowest
(the MQTT client is the bottleneck of a Python consumer, see shared/BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridgate.config import BrokerConfig

log = logging.getLogger("gridgate.mqtt")


class BrokerUnavailable(Exception):
    """The broker did not accept a connection in time."""


class GatewayMQTT:
    """Subscribes to the gateway's topics and publishes its alerts, faults and dead letters."""

    def __init__(
        self,
        cfg: BrokerConfig,
        subscriptions: list[str],
        on_message: Callable[[str, bytes], None],
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.subscriptions = [
            f"$share/{cfg.shared_group}/{s}" if cfg.shared_group else s for s in subscriptions
        ]
        self._handler = on_message
        self._on_connect_hook = on_connect
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=False,  # persistent session: the broker keeps our QoS 1 messages while we are away
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=int(cfg.reconnect_max_s))
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.secret())
        if cfg.tls.enabled:
            self.client.tls_set(
                ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(cfg.tls.insecure)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connects = 0

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.cfg.tls.enabled else 'mqtt'}://{self.cfg.host}:{self.cfg.port}"

    def _on_connect(
        self, client: mqtt.Client, _ud: object, flags: mqtt.ConnectFlags, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("event=mqtt_refused broker=%s reason=%s", self.where, rc)
            return
        self.connects += 1
        client.subscribe([(s, 1) for s in self.subscriptions])
        log.info(
            "event=mqtt_connected broker=%s client_id=%s session_present=%s topics=%s",
            self.where,
            self.cfg.client_id,
            flags.session_present,
            ",".join(self.subscriptions),
        )
        self.connected.set()
        if self._on_connect_hook is not None:
            self._on_connect_hook()

    def _on_disconnect(self, _c: mqtt.Client, _ud: object, _f: object, rc: object, _p: object) -> None:
        self.connected.clear()
        log.warning("event=mqtt_disconnected broker=%s reason=%s", self.where, rc)

    def _on_message(self, _c: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handler(msg.topic, msg.payload)
        except Exception:  # a bug must not kill the network thread and stop ingest
            log.exception("event=handler_crashed topic=%s", msg.topic)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos)

    def start(self, wait_s: float = 10.0) -> None:
        """Connect and start the network thread; raise BrokerUnavailable if not connected in time."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        if wait_s and not self.connected.wait(wait_s):
            self.stop()
            raise BrokerUnavailable(
                f"no MQTT broker answered at {self.where} within {wait_s:.0f} s: "
                "start one or set broker.host/broker.port (GRIDGATE_BROKER__HOST, GRIDGATE_BROKER__PORT)"
            )

    def stop(self) -> None:
        self.client.disconnect()
        deadline = time.monotonic() + 2
        while self.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.client.loop_stop()
