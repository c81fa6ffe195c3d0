"""A broker session that acknowledges a message only when its owner says its effects are durable.

Each bucket of devices (and the lead dispatcher's event feed) has a client id of its own and a
persistent session (clean_session false), so the broker keeps its subscriptions and queues its
messages while nobody holds it, and hands what was never acknowledged to whoever connects next
with that id: the replica that takes the bucket over. Acknowledgements go out in the order the
messages came (MQTT 3.1.1 4.6), after a checkpoint saved what they did (`mark` / `ack`).

A reconnect of the same session starts a new connection: the broker sends every unacknowledged
message again, so the owner is told (`on_reconnect`) to go back to its last checkpoint first.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.mqtt import BufferedSocket, FastClient, configure_client
from gridgate.config import BrokerConfig

log = logging.getLogger("gridgate.cluster")

SUBSCRIBE_CHUNK = 1000  # topic filters per SUBSCRIBE packet


class AckingSession:
    """`start()`, then messages reach `on_message(topic, payload)` on the network thread."""

    def __init__(
        self,
        cfg: BrokerConfig,
        client_id: str,
        filters: list[str],
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.filters = filters
        self._handler = on_message
        self._on_reconnect = on_reconnect
        self.client = FastClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        configure_client(self.client, cfg)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_message = self._message
        self.client.on_subscribe = self._subscribed
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker answered the last SUBSCRIBE: it keeps the session
        self._last_sub: int | None = None
        self.paused = False  # being handed over: new messages are left for the next owner
        self.generation = 0  # connections so far: a mark is only good on the connection it was made
        self._unacked: deque[int] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.received = 0

    def _connected(
        self, client: mqtt.Client, _ud: object, flags: mqtt.ConnectFlags, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("event=mqtt_refused client_id=%s reason=%s", self.client_id, rc)
            return
        with self._lock:
            self.generation += 1
            again = self.generation > 1
            self._unacked.clear()  # their ids belong to the old connection; the broker resends them
        if again and self._on_reconnect is not None:
            self._on_reconnect()
        for i in range(0, len(self.filters), SUBSCRIBE_CHUNK):
            _rc, self._last_sub = client.subscribe([(f, 1) for f in self.filters[i : i + SUBSCRIBE_CHUNK]])
        log.info(
            "event=session_connected client_id=%s filters=%d session_present=%s",
            self.client_id,
            len(self.filters),
            flags.session_present,
        )
        self.connected.set()

    def _subscribed(self, _c: mqtt.Client, _ud: object, mid: int, _codes: object, _p: object) -> None:
        if mid == self._last_sub:
            self.subscribed.set()

    def _disconnected(self, _c: mqtt.Client, _ud: object, _f: object, rc: object, _p: object) -> None:
        self.connected.clear()
        log.warning("event=session_disconnected client_id=%s reason=%s", self.client_id, rc)

    def _message(self, _c: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        if self.paused:
            return  # never acknowledged: the broker gives it to the next owner of this session
        topic = msg._topic.decode("utf-8", "replace")
        try:
            self._handler(topic, msg.payload)
        except Exception:  # a bug must not stop the network thread; the message is still acknowledged
            log.exception("event=handler_crashed client_id=%s topic=%s", self.client_id, topic)
        with self._lock:
            self._unacked.append(msg.mid)
            self.received += 1

    def mark(self) -> tuple[int, int]:
        """(connection, count): the messages handled so far, for `ack` once they are durable."""
        with self._lock:
            return self.generation, len(self._unacked)

    def ack(self, mark: tuple[int, int]) -> int:
        """Acknowledge the first `count` messages of `mark`, if still on that connection; how many."""
        generation, count = mark
        with self._lock:
            if generation != self.generation:
                return 0
            mids = [self._unacked.popleft() for _ in range(min(count, len(self._unacked)))]
        sock = self.client.socket()
        if isinstance(sock, BufferedSocket):
            sock.holding = True  # one write for the batch of PUBACKs
        try:
            for mid in mids:
                self.client.ack(mid, 1)
        finally:
            if isinstance(sock, BufferedSocket):
                sock.holding = False
                sock.flush()
        return len(mids)

    def start(self) -> AckingSession:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._thread = threading.Thread(
            target=self.client.loop_forever,
            kwargs={"retry_first_connection": True},
            name=f"gridgate-{self.client_id}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Disconnect, leaving every unacknowledged message to the session's next owner."""
        self.paused = True
        self.client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout=5)
