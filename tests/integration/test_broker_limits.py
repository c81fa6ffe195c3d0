"""The broker's limits, attacked with a real Mosquitto: what it drops is warned about, and a topic it
would refuse never leaves the gateway (Mosquitto closes the connection on a malformed PUBLISH)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.mqtt import publish_topic_problem
from gateway.service import Gateway
from tests.integration.spine_helpers import gateway_config
from tests.servers import MOSQUITTO, Collector, Mosquitto, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "topic",
    ["gridgate/tickets/night shift\t2", "gridgate/tickets/#", "gridgate/tickets/+", "a\x00b", "", "x\x7f"],
)
def test_topics_a_broker_refuses_are_named(topic: str) -> None:
    assert publish_topic_problem(topic) is not None
    assert publish_topic_problem("gridgate/tickets/night shift 2") is None


def test_a_bad_topic_never_takes_the_connection_down(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"})
    with Collector.on(mosquitto, "gridgate/tickets/#") as col, Gateway(cfg) as gw:
        for bad in ("gridgate/tickets/night shift\t2", "gridgate/tickets/#", "gridgate/tickets/a\x00"):
            gw.mqtt.publish(bad, b"{}", 1)
        gw.mqtt.publish("gridgate/tickets/night shift 2", b"{}", 1)
        col.wait_count(1, "gridgate/tickets/#", timeout=5)
        time.sleep(1.0)
        assert gw.mqtt.connects == 1 and gw.mqtt.connected.is_set()
        assert gw.mqtt.refused_publishes == 3
        assert [m.topic for m in col.messages] == ["gridgate/tickets/night shift 2"]


def _publish(broker: Mosquitto, n: int) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="limits-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [
        client.publish("gridgate/devices/water_gauge/WG-1/up", f'{{"water_level_cm": {i % 5}}}', qos=1)
        for i in range(n)
    ]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_messages_the_broker_dropped_while_the_gateway_was_away_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI installs it")
    # Mosquitto's own default queue (1000) scaled down, and $SYS every second
    with Mosquitto(tmp_path, extra=["max_queued_messages 100", "sys_interval 1"]) as broker:
        cfg = gateway_config(tmp_path, broker, {"api": "none"})
        with Gateway(cfg) as gw:
            wait_until(lambda: gw.mqtt.dropped_seen is not None, 10, "the broker's $SYS drop counter")
            time.sleep(1.0)  # a checkpoint saves what was seen
        _publish(broker, 500)  # the gateway is away: its session queues 100, the broker drops the rest
        caplog.set_level(logging.WARNING, "gridgate.mqtt")
        with Gateway(cfg) as gw:
            wait_until(lambda: gw.mqtt.broker_dropped >= 300, 15, "the drop noticed")
            gw.flush()
            assert gw.metrics.messages_in <= 101
        assert any("event=broker_dropped_messages" in r.message for r in caplog.records)


def test_a_broker_that_lost_the_session_is_warned(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"})
    caplog.set_level(logging.WARNING, "gridgate.mqtt")
    with Gateway(cfg) as gw:
        assert gw.mqtt.sessions_lost == 0  # a first start expects no session
        mosquitto.stop()
        mosquitto.start()  # persistence false: our session is gone
        wait_until(lambda: gw.mqtt.connects >= 2, 20, "the reconnect")
        assert gw.mqtt.sessions_lost == 1
    assert any("event=mqtt_session_lost" in r.message for r in caplog.records)
