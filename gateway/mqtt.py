"""The gateway's MQTT connection (paho-mqtt 2.x): persistent session, QoS 1, reconnect with backoff.

Messages are handled on the network thread, which keeps the per-message cost at its lowest: the
MQTT client, not JSON or the database, is the bottleneck of a Python consumer (shared/BENCHMARKS.md).
paho reads a packet with three or more `recv()` calls and answers each QoS 1 message with its own
`send()`; `BufferedSocket` gives it the same socket interface over 256 KiB reads and one write per
batch of PUBACKs, which roughly halves the client's CPU per message. Before it sends that batch it
calls `before_send` (the gateway's journal flush), so no PUBACK leaves before its message is on disk.

A publish to a topic the broker would refuse (a wildcard, an empty level, a control character) is
dropped, logged and counted here: Mosquitto answers a malformed PUBLISH by closing the connection,
and one bad name must never cut the gateway off from its broker.
"""

from __future__ import annotations

import logging
import ssl
import threading
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridgate.broker_auth import apply_credentials
from gridgate.config import BrokerConfig

log = logging.getLogger("gridgate.mqtt")


READ_SIZE = 256 * 1024


class BufferedSocket:
    """A socket for paho: reads in large chunks, and holds writes made while a batch is read.

    paho already supports sockets with `pending()` (its TLS path): bytes waiting here make its loop
    skip `select()` and read again, so no buffered packet waits for the network.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._in = b""
        self._pos = 0  # read offset into _in: slicing forward, never shifting the buffer
        self._out = bytearray()
        self._out_lock = threading.Lock()
        self.holding = False  # set while a batch of packets is read: PUBACKs wait for one write
        self.before_send: Callable[[], None] | None = None  # runs before any byte leaves (journal flush)

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._in):
            data = self._sock.recv(READ_SIZE)  # BlockingIOError / SSLWantReadError pass through to paho
            if len(data) <= bufsize:
                return data
            self._in, self._pos = data, 0
        end = self._pos + bufsize
        chunk = self._in[self._pos : end]
        self._pos = end
        return chunk

    def buffered(self) -> int:
        return len(self._in) - self._pos if self._pos < len(self._in) else 0

    def pending(self) -> int:
        self.flush()
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return self.buffered() + inner + (1 if self._out else 0)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        with self._out_lock:
            self._out += data
        if not self.holding or len(self._out) >= READ_SIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        with self._out_lock:
            if self._out and self.before_send is not None:
                self.before_send()
            while self._out:
                try:
                    sent = self._sock.send(self._out)
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    return  # the kernel buffer is full: pending() makes the loop come back
                except OSError:
                    self._out.clear()  # the connection is gone; paho notices and reconnects
                    return
                del self._out[:sent]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class FastClient(mqtt.Client):
    """paho's client over a `BufferedSocket`, reading every buffered packet per loop turn."""

    on_read_done: Callable[[], None] | None = None  # called once all buffered packets were handled
    before_send: Callable[[], None] | None = None  # given to every socket: see BufferedSocket

    def _create_socket(self) -> Any:
        sock = BufferedSocket(super()._create_socket())
        sock.before_send = self.before_send
        return sock

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        sock = self._sock
        if not isinstance(sock, BufferedSocket):
            return super().loop_read(max_packets)
        sock.holding = True
        try:
            rc = super().loop_read(max_packets)
            while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is sock and sock.buffered():
                rc = super().loop_read(max_packets)
        finally:
            sock.holding = False
            sock.flush()
            if self.on_read_done is not None:
                self.on_read_done()
        return rc


def configure_client(client: mqtt.Client, cfg: BrokerConfig) -> None:
    """What every gateway connection shares: in-flight window, reconnect backoff, credentials, TLS."""
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=int(cfg.reconnect_max_s))
    apply_credentials(client, cfg.username, cfg.secret() if cfg.username else None, cfg.tls)


class BrokerUnavailable(Exception):
    """The broker did not accept a connection in time."""


def publish_topic_problem(topic: str) -> str | None:
    """None when a broker accepts `topic` in a PUBLISH; else what is wrong with it (MQTT 3.1.1 4.7)."""
    if not topic:
        return "the topic is empty"
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return "the topic is longer than 65535 bytes"
    for i, ch in enumerate(topic):
        if ch in "+#":
            return f"the topic contains the wildcard {ch!r} at position {i}"
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\ufffe\uffff":
            return f"the topic contains U+{ord(ch):04X} at position {i}, which the broker refuses"
    return None


SYS_DROPPED = "$SYS/broker/publish/messages/dropped"  # Mosquitto: messages dropped by queue limits

# paho numbers QoS 1 publishes with 16-bit ids and overwrites a queued message whose id comes round
# again: it must never hold more than 65,535. Beyond this many, publishes wait in our own backlog.
PAHO_HELD_MAX = 50_000
BACKLOG_MAX = 1_000_000  # alerts, faults, tickets waiting for paho: beyond it the oldest are dropped
SHED_BACKLOG_MAX = 100_000  # dead letters: shed first, and kept fewer


class GatewayMQTT:
    """Subscribes to the gateway's topics and publishes its alerts, faults and dead letters."""

    def __init__(
        self,
        cfg: BrokerConfig,
        subscriptions: list[str],
        on_message: Callable[[str, bytes, int, bool], None],
        on_connect: Callable[[], None] | None = None,
        on_read_done: Callable[[], None] | None = None,
        before_send: Callable[[], None] | None = None,
        expect_session: bool = False,
        dropped_seen: int | None = None,
        shed_first: str | None = None,
    ) -> None:
        """`on_message(topic, payload, mid, dup)` runs on the network thread before the PUBACK is sent;
        `before_send` before any bytes leave (so the journal is written before its PUBACKs);
        `expect_session`: an earlier run used this client id, so the broker should still hold its
        session (a warning says so when it does not); `dropped_seen`: the broker's dropped-message
        counter as an earlier run last saw it (so drops while the gateway was down are noticed);
        `shed_first`: a topic (the dead letters) whose messages wait behind all others in a publish
        backlog and are the first dropped when it is full."""
        self.cfg = cfg
        self.subscriptions = [
            f"$share/{cfg.shared_group}/{s}" if cfg.shared_group else s for s in subscriptions
        ]
        self._handler = on_message
        self._on_connect_hook = on_connect
        self.connected = threading.Event()
        self.client = FastClient(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=False,  # persistent session: the broker keeps our QoS 1 messages while we are away
            protocol=mqtt.MQTTv311,
        )
        self._on_read_done_hook = on_read_done
        self.client.on_read_done = self._read_done
        self.shed_first = shed_first
        self._held = 0  # our publishes paho holds (in flight or queued)
        self._backlog: deque[tuple[str, bytes, int]] = deque()
        self._shed_backlog: deque[tuple[str, bytes, int]] = deque()
        self._backlog_lock = threading.Lock()
        self.publishes_dropped = 0  # alerts, faults, tickets dropped from a full backlog
        self.dead_letters_shed = 0  # dead letters dropped from a full backlog
        self.client.before_send = before_send
        self.expect_session = expect_session
        self.refused_publishes = 0  # publishes to topics a broker would refuse (never sent)
        self.sessions_lost = 0  # connections where the broker had not kept our persistent session
        self.broker_dropped = 0  # messages the broker says it dropped by its queue limits, since we met it
        self.dropped_seen = dropped_seen  # the broker's counter as last seen (saved across restarts)
        configure_client(self.client, cfg)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.connects = 0
        self._thread: threading.Thread | None = None

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
        client.subscribe([(s, 1) for s in self.subscriptions] + [(SYS_DROPPED, 0)])
        if (self.expect_session or self.connects > 1) and not flags.session_present:
            self.sessions_lost += 1
            log.warning(
                "event=mqtt_session_lost broker=%s client_id=%s fix='messages published while the "
                "gateway was away are lost: give the broker persistence (mosquitto: persistence true) "
                "and keep broker.client_id stable; see README, Reliability'",
                self.where,
                self.cfg.client_id,
            )
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
        topic = msg._topic.decode("utf-8", "replace")  # the broker checked UTF-8; never raise here
        if topic.startswith("$SYS/"):
            self._sys(topic, msg.payload)
            return
        try:
            self._handler(topic, msg.payload, msg.mid, bool(msg.dup))
        except Exception:  # a bug must not kill the network thread and stop ingest
            log.exception("event=handler_crashed topic=%s", topic)

    def _sys(self, topic: str, payload: bytes) -> None:
        """The broker's own counters: warn when it drops messages by its queue limits."""
        if topic != SYS_DROPPED:
            return
        try:
            total = int(payload)
        except ValueError:
            return
        seen, self.dropped_seen = self.dropped_seen, total
        if seen is None:
            return  # first sight of this broker: nothing to compare with
        new = total - seen if total >= seen else total  # lower: the broker restarted, counting from 0
        if new > 0:
            self.broker_dropped += new
            log.warning(
                "event=broker_dropped_messages broker=%s dropped=%d dropped_since_start=%d fix='the broker "
                "dropped messages past its queue limits (for some client: ours if the gateway was away "
                "or slow): raise max_queued_messages and max_inflight_messages (mosquitto.conf) to hold the "
                "longest gateway outage; see README, Reliability'",
                self.where,
                new,
                self.broker_dropped,
            )

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish, or refuse (logged, counted) a topic the broker would answer by disconnecting us."""
        problem = publish_topic_problem(topic)
        if problem is not None:
            self.refused_publishes += 1
            log.error(
                "event=publish_refused topic=%r reason=%r refused_total=%d fix='a name used in the topic "
                "(team, grid, kind) is invalid: correct it in the config or the API call that set it'",
                topic,
                problem,
                self.refused_publishes,
            )
            return
        with self._backlog_lock:
            if self._backlog or self._shed_backlog or self._held >= PAHO_HELD_MAX:
                self._hold(topic, payload, qos)
                return
            self._held += 1
        self._send(topic, payload, qos)

    def publish_wait(self, topic: str, payload: bytes, timeout_s: float) -> bool:
        """Publish at QoS 1 past the backlog and wait for the broker's PUBACK; True once it came."""
        with self._backlog_lock:
            self._held += 1
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            return False
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):  # paho refused it outright (queue full, bad topic)
            return False
        return info.is_published()

    def _send(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        if qos == 0 and info.rc != mqtt.MQTT_ERR_SUCCESS:  # not sent, never queued: no on_publish
            with self._backlog_lock:
                self._held -= 1

    def _hold(self, topic: str, payload: bytes, qos: int) -> None:
        """Queue a publish behind paho's (under `_backlog_lock`); a full backlog drops its oldest."""
        shed = topic == self.shed_first
        backlog, limit = (self._shed_backlog, SHED_BACKLOG_MAX) if shed else (self._backlog, BACKLOG_MAX)
        if not (self._backlog or self._shed_backlog):
            log.warning(
                "event=mqtt_publish_backlog broker=%s held_by_client=%d reason='the broker acknowledges our "
                "publishes slower than we make them: they wait here, in order'",
                self.where,
                self._held,
            )
        if len(backlog) >= limit:
            backlog.popleft()
            if shed:
                self.dead_letters_shed += 1
            else:
                self.publishes_dropped += 1
            n = self.dead_letters_shed if shed else self.publishes_dropped
            if n == 1 or n % 10_000 == 0:
                log.error(
                    "event=mqtt_publish_dropped broker=%s what=%s dropped_total=%d backlog_max=%d",
                    self.where,
                    "dead_letters" if shed else "alerts_and_tickets",
                    n,
                    limit,
                )
        backlog.append((topic, payload, qos))

    def _on_publish(self, *_args: object) -> None:
        with self._backlog_lock:
            self._held -= 1

    def _read_done(self) -> None:
        """After each batch read (PUBACKs among it): hand paho what waits in the backlog, then the hook."""
        if self._backlog or self._shed_backlog:
            batch: list[tuple[str, bytes, int]] = []
            with self._backlog_lock:
                while self._held < PAHO_HELD_MAX and (self._backlog or self._shed_backlog):
                    batch.append((self._backlog or self._shed_backlog).popleft())
                    self._held += 1
            for topic, payload, qos in batch:  # outside our lock: paho's on_publish takes it
                self._send(topic, payload, qos)
        if self._on_read_done_hook is not None:
            self._on_read_done_hook()

    @property
    def backlog(self) -> int:
        """Publishes waiting for room in paho (beyond PAHO_HELD_MAX held by it)."""
        return len(self._backlog) + len(self._shed_backlog)

    def start(self, wait_s: float = 10.0) -> None:
        """Connect and start the network thread; raise BrokerUnavailable if not connected in time."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        # our own thread around loop_forever: paho's loop_start() adds a wake-up syscall per PUBACK
        self._thread = threading.Thread(
            target=self.client.loop_forever,
            kwargs={"retry_first_connection": True},
            name="gridgate-mqtt",
            daemon=True,
        )
        self._thread.start()
        if wait_s and not self.connected.wait(wait_s):
            self.stop()
            raise BrokerUnavailable(
                f"no MQTT broker answered at {self.where} within {wait_s:.0f} s: "
                "start one or set broker.host/broker.port (GRIDGATE_BROKER__HOST, GRIDGATE_BROKER__PORT)"
            )

    def stop(self) -> None:
        self.client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout=5)
