"""MQTT publisher of the edge box: events and evidence through the disk queue, status and stats.

- Events (`{p}/edge/{edge_id}/events`, JSON `EdgeEventMessage`) and evidence pictures
  (`{p}/edge/{edge_id}/evidence/{event_id}/{name}`, raw JPEG) are QoS 1 and go through
  `DiskQueue`: a row leaves the queue only when paho's `on_publish` reports the broker's PUBACK.
  A picture is queued before the event message that names it, so the gateway has it first.
- At most `inflight` rows are handed to paho at once (its memory stays bounded); paho re-sends
  those itself after a reconnect, and the queue resumes after them, so order is kept. After a
  restart everything still queued is sent again from the oldest (at-least-once: the gateway
  dedups on `event_id` + `seq`).
- Status: LWT `offline` (retained), `online` (retained) on each connect, `offline` on a clean stop,
  and `EdgeStats` JSON (QoS 0, not retained, not queued: stale health is not worth replaying).
- Camera frames (`{p}/edge/{edge_id}/frames/{camera_id}`, the latest annotated JPEG): QoS 0,
  retained (a gateway that connects later gets the last one), not queued, like stats.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import EdgeBrokerConfig
from edge.queue import DiskQueue, Outgoing
from gridgate.broker_auth import apply_credentials
from gridgate.topics import Topics

log = logging.getLogger("gridgate.edge.publisher")


def make_client(broker: EdgeBrokerConfig, client_id: str, clean_session: bool = True) -> mqtt.Client:
    """A paho client for the box's broker: credentials, TLS and reconnect backoff from `broker:`."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    c.reconnect_delay_set(min_delay=1, max_delay=int(max(1, broker.reconnect_max_s)))
    apply_credentials(c, broker.username, broker.secret() if broker.username else None, broker.tls)
    return c


class EdgePublisher:
    def __init__(
        self, broker: EdgeBrokerConfig, edge_id: str, client_id: str, queue: DiskQueue, inflight: int = 50
    ) -> None:
        self.broker = broker
        self.edge_id = edge_id
        self.topics = Topics(broker.topic_prefix)
        self.queue = queue
        self.window = inflight
        self.connected = threading.Event()
        self.connects = 0
        self.published = 0  # rows acknowledged by the broker
        self._wake = threading.Condition()
        self._acks: list[int] = []
        self._inflight: dict[int, int] = {}  # paho mid -> queue row id
        self._cursor = 0  # highest row id handed to paho
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        status = self.topics.edge_status(edge_id)
        self.status_topic = status
        c = make_client(broker, client_id)
        c.max_inflight_messages_set(max(inflight, 20) + 10)  # + room for status messages
        c.max_queued_messages_set(0)
        c.will_set(status, b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self.client = c

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.broker.tls.enabled else 'mqtt'}://{self.broker.host}:{self.broker.port}"

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.error("event=mqtt_refused broker=%s edge_id=%s reason=%s", self.where, self.edge_id, rc)
            return
        self.connects += 1
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        depth, size = self.queue.depth()
        log.info(
            "event=mqtt_connected broker=%s edge_id=%s queued=%d queued_bytes=%d",
            self.where,
            self.edge_id,
            depth,
            size,
        )
        self.connected.set()
        with self._wake:
            self._wake.notify_all()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning(
                "event=mqtt_disconnected broker=%s edge_id=%s reason=%s inflight=%d",
                self.where,
                self.edge_id,
                rc,
                len(self._inflight),
            )

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._wake:
            self._acks.append(mid)
            self._wake.notify_all()

    # -- the sender (own thread) ----------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                acks, self._acks = self._acks, []
            done = [self._inflight.pop(mid) for mid in acks if mid in self._inflight]
            if done:
                self.queue.ack(done)
                self.published += len(done)
            sent = 0
            if self.connected.is_set() and len(self._inflight) < self.window:
                for row in self.queue.peek(self._cursor, self.window - len(self._inflight)):
                    info = self.client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        # paho kept it and sends it on reconnect; count it in flight either way
                        log.debug("event=publish_deferred topic=%s rc=%s", row.topic, info.rc)
                    self._inflight[info.mid] = row.id
                    self._cursor = row.id
                    sent += 1
            if sent == 0:
                with self._wake:
                    if not self._acks:
                        self._wake.wait(0.2)

    def notify(self) -> None:
        """Something was queued: send it now rather than at the next poll."""
        with self._wake:
            self._wake.notify_all()

    def enqueue(self, items: list[Outgoing], build_event: Any = None) -> int | None:
        seq = self.queue.put(items, build_event)
        self.notify()
        return seq

    def publish_status(self, payload: bytes) -> bool:
        """Stats: QoS 0, only while connected (never queued)."""
        if not self.connected.is_set():
            return False
        return self.client.publish(self.status_topic, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS

    def publish_frame(self, topic: str, jpeg: bytes) -> bool:
        """A camera's latest annotated frame: QoS 0, retained, only while connected (never queued)."""
        if not self.connected.is_set():
            return False
        return self.client.publish(topic, jpeg, qos=0, retain=True).rc == mqtt.MQTT_ERR_SUCCESS

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> EdgePublisher:
        """Connect in the background (the edge box works, queueing, while the broker is away)."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
        self.client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="edge-publisher", daemon=True)
        self._sender.start()
        return self

    def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty (True) or `timeout` passes."""
        done = threading.Event()

        def empty() -> bool:
            return self.queue.depth()[0] == 0 and not self._inflight

        deadline = timeout
        step = 0.05
        while deadline > 0:
            if empty():
                done.set()
                break
            self._stop.wait(step)
            deadline -= step
        return done.is_set()

    def stop(self, drain_s: float = 2.0) -> None:
        if self._sender is None:  # never started
            return
        if self.connected.is_set() and drain_s > 0:
            self.drain(drain_s)
        self._stop.set()
        self.notify()
        if self._sender is not None:
            self._sender.join(timeout=5)
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()
