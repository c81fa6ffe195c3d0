"""The files `gridgate mqtt acl` writes, on a real Mosquitto: each device publishes only its own
topics, the gateway reads every uplink, an edge box publishes under its own edge topics."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from typer.testing import CliRunner

from edge.config import EdgeBrokerConfig
from edge.publisher import EdgePublisher
from edge.queue import DiskQueue, Outgoing
from gateway.broker_acl import read_credentials
from gateway.service import Gateway
from gridgate.cli import app
from gridgate.config import GatewayConfig, load_gateway_config
from tests.servers import MOSQUITTO, Mosquitto, wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NOT_AUTHORIZED = 0x87


class Client:
    """An MQTT 5 client with a user name: MQTT 5 makes Mosquitto say when it refuses a publish
    (PUBACK 0x87), where 3.1.1 acknowledges it and drops it silently."""

    def __init__(self, broker: Mosquitto, username: str | None, password: str | None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.granted: list[int] = []
        self.connack: int | None = None
        self._cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        wait_until(lambda: self.connack is not None, 10, "CONNACK")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connack = rc.value

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Properties) -> None:
        self.acks[mid] = rc.value

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        self.granted = [rc.value for rc in rcs]

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (0: accepted)."""
        mid = self.c.publish(topic, payload, qos=1).mid
        wait_until(lambda: mid in self.acks, 10, f"PUBACK for {topic}")
        return self.acks[mid]

    def subscribe(self, *filters: str) -> list[int]:
        self.granted = []
        self.c.subscribe([(f, 1) for f in filters])
        wait_until(lambda: self.granted, 10, f"SUBACK for {filters}")
        return self.granted

    def topics(self) -> list[str]:
        with self._cond:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass(frozen=True)
class Secured:
    broker: Mosquitto
    creds: dict[str, str]  # username -> password
    folder: Path  # what `gridgate mqtt acl` wrote


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    """Mosquitto with the password and ACL files generated from the shipped config."""
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")
    out = tmp_path / "mqtt"
    config = str(REPO / "config/gateway.yaml")
    args = ["mqtt", "acl", "-c", config, "-o", str(out), "--edge", "edge-1", "--reader", "command-centre"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    creds = read_credentials(out / "credentials.csv")
    assert not any(pw in result.output for pw in creds.values())  # printed where, never what
    extra = [f"password_file {out / 'passwd'}", f"acl_file {out / 'acl'}", "allow_anonymous false"]
    if os.geteuid() == 0:  # Mosquitto started as root drops to `mosquitto`, which cannot read our 0600 files
        extra.append("user root")
    with Mosquitto(tmp_path, extra=extra) as broker:
        yield Secured(broker, creds, out)


def login(secured: Secured, user: str) -> Client:
    client = Client(secured.broker, user, secured.creds[user])
    assert client.connack == 0, f"{user} refused: {client.connack:#x}"
    return client


def test_a_device_publishes_its_own_uplink_and_is_refused_another_devices(
    secured: Secured,
) -> None:
    gateway = login(secured, "gateway")
    assert gateway.subscribe("gridgate/devices/#", "gridgate/edge/#", "acme/covers/+/data") == [1, 1, 1]
    cover = login(secured, "MH-0001")
    try:
        assert cover.publish("gridgate/devices/manhole/MH-0001/up", b'{"tilt_deg": 1}') == 0
        assert cover.publish("gridgate/devices/manhole/MH-0001/status", b"online") == 0
        assert cover.publish("acme/covers/MH-0001/data", b"\x01" * 12) == 0  # its vendor topic
        for foreign in (
            "gridgate/devices/manhole/MH-0002/up",  # another device
            "gridgate/devices/bin/MH-0001/up",  # its id under another type
            "acme/covers/MH-0002/data",  # another device's vendor topic
            "gridgate/alerts/G01/manhole_open",  # the gateway's topics
            "gridgate/edge/edge-1/events",
        ):
            assert cover.publish(foreign) == NOT_AUTHORIZED, foreign
        # Mosquitto 2.0 may grant the subscription, but delivers nothing the user may not read
        assert cover.subscribe("gridgate/devices/#") in ([1], [NOT_AUTHORIZED])
        assert login(secured, "BIN-0001").publish("gridgate/devices/bin/BIN-0001/up") == 0
        wait_until(lambda: len(gateway.topics()) >= 4, 10, "the gateway's four uplinks")
        assert sorted(gateway.topics()) == [
            "acme/covers/MH-0001/data",
            "gridgate/devices/bin/BIN-0001/up",
            "gridgate/devices/manhole/MH-0001/status",
            "gridgate/devices/manhole/MH-0001/up",
        ]
        time.sleep(0.3)  # the broker hands a message to every subscriber in one pass
        assert cover.topics() == []
    finally:
        cover.close()
        gateway.close()


def test_an_edge_box_publishes_its_topics_and_hears_tickets(
    secured: Secured,
) -> None:
    gateway = login(secured, "gateway")
    gateway.subscribe("gridgate/edge/#")
    edge = login(secured, "edge-1")
    centre = login(secured, "command-centre")
    try:
        assert edge.subscribe("gridgate/tickets/+") == [1]
        assert centre.subscribe("gridgate/alerts/#", "gridgate/tickets/#", "gridgate/dead-letter") == [
            1,
            1,
            1,
        ]
        for topic in (
            "gridgate/edge/edge-1/events",
            "gridgate/edge/edge-1/status",
            "gridgate/edge/edge-1/evidence/01JEVENT/snapshot.jpg",
            "gridgate/edge/edge-1/frames/demo-street",
        ):
            assert edge.publish(topic) == 0, topic
        assert edge.publish("gridgate/edge/edge-2/events") == NOT_AUTHORIZED
        assert edge.publish("gridgate/devices/manhole/MH-0001/up") == NOT_AUTHORIZED
        assert gateway.publish("gridgate/tickets/drainage", b'{"ticket": 1}') == 0
        assert gateway.publish("gridgate/alerts/G01/ponding") == 0
        assert gateway.publish("gridgate/devices/manhole/MH-0001/up") == NOT_AUTHORIZED
        assert centre.publish("gridgate/alerts/G01/ponding") == NOT_AUTHORIZED
        wait_until(lambda: len(gateway.topics()) >= 4, 10, "the edge box's four messages")
        wait_until(lambda: edge.topics() == ["gridgate/tickets/drainage"], 10, "the ticket at the edge box")
        wait_until(lambda: len(centre.topics()) == 2, 10, "the ticket and the alert at the centre")
        assert "gridgate/edge/edge-2/events" not in gateway.topics()
    finally:
        for c in (edge, centre, gateway):
            c.close()


def test_wrong_passwords_and_strangers_are_turned_away(secured: Secured) -> None:
    for user, password in (("MH-0001", secured.creds["MH-0002"]), ("nobody", "x" * 32), (None, None)):
        client = Client(secured.broker, user, password)
        assert client.connack != 0, user
        client.close()


def test_the_gateway_runs_on_its_own_credentials(secured: Secured, tmp_path: Path) -> None:
    """The real gateway, as user `gateway`: it hears a device, reads $SYS, and its alert and ticket
    reach a reader and the edge box (Mosquitto 3.1.1 drops a refused publish silently: only the
    receivers can tell)."""
    broker = secured.broker
    shipped = load_gateway_config(REPO / "config/gateway.yaml")
    cfg = GatewayConfig(
        broker={
            "host": broker.host,
            "port": broker.port,
            "username": "gateway",
            "password_file": secured.folder / "gateway.password",
        },
        storage={"data_dir": tmp_path / "gw"},
        api={"enabled": False},
        devices_file=shipped.devices_file,
        grids_file=shipped.grids_file,
        vendor_topics=shipped.vendor_topics,
        tickets={"routing_file": shipped.tickets.routing_file, "offline_grace_s": 0},
    )
    centre = login(secured, "command-centre")
    edge = login(secured, "edge-1")
    gauge = login(secured, "WG-0001")
    try:
        centre.subscribe("gridgate/alerts/#", "gridgate/tickets/#")
        edge.subscribe("gridgate/tickets/+")
        with Gateway(cfg) as gw:
            wait_until(lambda: gw.mqtt.connected.is_set(), 10, "the gateway connected")
            assert gauge.publish("gridgate/devices/water_gauge/WG-0001/up", b'{"water_level_cm": 40}') == 0
            wait_until(lambda: gw.metrics.readings >= 1, 10, "the reading handled")
            wait_until(lambda: any("/alerts/" in t for t in centre.topics()), 10, "the alert at the centre")
            wait_until(lambda: any("/tickets/" in t for t in centre.topics()), 10, "the ticket at the centre")
            wait_until(lambda: edge.topics(), 10, "the ticket at the edge box")
            wait_until(lambda: gw.mqtt.dropped_seen is not None, 15, "$SYS read by the gateway")
            assert not gw.metrics.rejected
    finally:
        for c in (gauge, edge, centre):
            c.close()


def test_the_edge_publisher_runs_on_its_own_credentials(secured: Secured, tmp_path: Path) -> None:
    """The edge box's own publisher, as user `edge-1`: online, an event with its picture, stats and a
    frame all reach the gateway's user."""
    gateway = login(secured, "gateway")
    gateway.subscribe("gridgate/edge/#")
    broker = EdgeBrokerConfig(
        host=secured.broker.host,
        port=secured.broker.port,
        username="edge-1",
        password_file=secured.folder / "edge-1.password",
    )
    pub = EdgePublisher(broker, "edge-1", "gridgate-edge-edge-1", DiskQueue(tmp_path / "outbox.sqlite"))
    pub.start()
    try:
        wait_until(pub.connected.is_set, 10, "the edge box connected")
        picture = Outgoing(
            "gridgate/edge/edge-1/evidence/E1/stopped.jpg", b"\xff\xd8" + bytes(100), "evidence"
        )
        pub.enqueue([picture], lambda seq: Outgoing("gridgate/edge/edge-1/events", b'{"seq": %d}' % seq))
        wait_until(lambda: pub.publish_status(b'{"type": "edge_stats"}'), 10, "stats sent")
        wait_until(
            lambda: pub.publish_frame("gridgate/edge/edge-1/frames/demo-street", b"\xff\xd8"), 10, "frame"
        )
        expected = {
            "gridgate/edge/edge-1/status",
            "gridgate/edge/edge-1/evidence/E1/stopped.jpg",
            "gridgate/edge/edge-1/events",
            "gridgate/edge/edge-1/frames/demo-street",
        }
        wait_until(lambda: expected <= set(gateway.topics()), 10, f"{expected} at the gateway")
    finally:
        pub.stop()
        gateway.close()


def test_shared_subscriptions_pass_the_same_acl(secured: Secured) -> None:
    """broker.shared_group subscribes through `$share/{group}/...`: the ACL needs nothing more, and a
    device gains nothing by sharing."""
    gateway = login(secured, "gateway")
    cover = login(secured, "MH-0001")
    try:
        assert gateway.subscribe(
            "$share/gridgate/gridgate/devices/#", "$share/gridgate/acme/covers/+/data"
        ) == [1, 1]
        cover.subscribe("$share/x/gridgate/devices/#")
        assert login(secured, "BIN-0001").publish("gridgate/devices/bin/BIN-0001/up") == 0
        assert cover.publish("acme/covers/MH-0001/data") == 0
        wait_until(lambda: len(gateway.topics()) == 2, 10, "both uplinks at the gateway")
        time.sleep(0.3)
        assert cover.topics() == []
    finally:
        cover.close()
        gateway.close()
