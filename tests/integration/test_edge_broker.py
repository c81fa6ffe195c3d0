"""The edge publisher against a real Mosquitto: broker down for a while -> events wait in the disk
queue and all arrive, in order, when it returns; LWT and `online` on the status topic."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.config import EdgeBrokerConfig
from edge.publisher import EdgePublisher
from edge.queue import DiskQueue, Outgoing
from edge.stats import CameraStats, EdgeStats
from gridgate.topics import Topics
from tests.conftest import _need
from tests.servers import MOSQUITTO, Collector, Mosquitto, wait_until

pytestmark = pytest.mark.integration

EDGE = "edge-t"
TOPICS = Topics("gridgate")


class DurableSubscriber(Collector):
    """A gateway stand-in with a persistent session: the broker keeps its messages across restarts."""

    def __init__(self, server: Mosquitto, topics: list[str]) -> None:
        super().__init__(server.host, server.port, topics, 1, client_id="gateway-under-test")
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="gateway-under-test", clean_session=False
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.1, 0.5)


def publisher(server: Mosquitto, tmp_path: Path, reconnect_max_s: float = 1.0) -> EdgePublisher:
    broker = EdgeBrokerConfig(
        host=server.host, port=server.port, keepalive_s=5, reconnect_max_s=reconnect_max_s
    )
    return EdgePublisher(broker, EDGE, "edge-t-pub", DiskQueue(tmp_path / "outbox.sqlite"), inflight=20)


def event(pub: EdgePublisher, n: int, picture: bool = True) -> None:
    items = []
    if picture:
        items.append(
            Outgoing(
                TOPICS.edge_evidence(EDGE, f"E{n}", "exceeded.jpg"), b"\xff\xd8" + bytes(2000), "evidence"
            )
        )
    pub.enqueue(
        items, lambda seq: Outgoing(TOPICS.edge_events(EDGE), json.dumps({"seq": seq, "n": n}).encode())
    )


@pytest.fixture
def durable_mosquitto(tmp_path: Path) -> Any:
    _need(MOSQUITTO, "mosquitto", "mosquitto mosquitto-clients")
    data = tmp_path / "mosq-data"
    data.mkdir()
    with Mosquitto(
        tmp_path, extra=["persistence true", f"persistence_location {data}/", "autosave_interval 1"]
    ) as s:
        yield s


def test_broker_down_events_queue_and_arrive_in_order(durable_mosquitto: Mosquitto, tmp_path: Path) -> None:
    server = durable_mosquitto
    sub = DurableSubscriber(
        server, [f"gridgate/edge/{EDGE}/events", f"gridgate/edge/{EDGE}/evidence/#"]
    ).start()
    pub = publisher(server, tmp_path).start()
    try:
        assert pub.connected.wait(10)
        for n in range(10):
            event(pub, n)
        sub.wait_count(10, f"gridgate/edge/{EDGE}/events", timeout=10)
        wait_until(lambda: pub.queue.depth()[0] == 0, 10, "queue drained")

        server.stop()
        wait_until(lambda: not pub.connected.is_set(), 10, "publisher noticing the outage")
        for n in range(10, 60):
            event(pub, n)
        time.sleep(1.5)  # a few failed reconnects
        assert pub.queue.depth()[0] == 100  # 50 events + 50 pictures, on disk
        server.start()
        sub.wait_count(60, f"gridgate/edge/{EDGE}/events", timeout=30)
        wait_until(lambda: pub.queue.depth()[0] == 0, 10, "queue drained after the outage")
    finally:
        pub.stop()
        sub.stop()
    events = [m.json() for m in sub.on_topic(f"gridgate/edge/{EDGE}/events")]
    first_seen: list[int] = []
    for e in events:
        if e["seq"] not in first_seen:
            first_seen.append(e["seq"])
    assert first_seen == list(range(1, 61))  # every event, in order (QoS 1 may repeat one, never reorder)
    assert next(e["n"] for e in events if e["seq"] == 60) == 59
    # each picture arrived before the event message naming it
    topics = [m.topic for m in sub.messages]
    for n in (0, 30, 59):
        pic = topics.index(f"gridgate/edge/{EDGE}/evidence/E{n}/exceeded.jpg")
        ev = next(i for i, m in enumerate(sub.messages) if m.topic.endswith("/events") and m.json()["n"] == n)
        assert pic < ev


def test_queue_survives_a_restart_of_the_edge(mosquitto: Mosquitto, tmp_path: Path) -> None:
    broker = EdgeBrokerConfig(host="127.0.0.1", port=1, reconnect_max_s=1)  # nothing listens: offline
    pub = EdgePublisher(broker, EDGE, "edge-t-pub", DiskQueue(tmp_path / "outbox.sqlite")).start()
    for n in range(5):
        event(pub, n, picture=False)
    pub.stop(drain_s=0)
    pub.queue.close()
    with Collector.on(mosquitto, f"gridgate/edge/{EDGE}/events") as sub:
        pub2 = publisher(mosquitto, tmp_path).start()
        try:
            msgs = sub.wait_count(5, timeout=10)
        finally:
            pub2.stop()
    assert [m.json()["seq"] for m in msgs] == [1, 2, 3, 4, 5]


def test_status_online_lwt_offline_and_stats(mosquitto: Mosquitto, tmp_path: Path) -> None:
    status = f"gridgate/edge/{EDGE}/status"
    with Collector.on(mosquitto, status) as sub:
        pub = publisher(mosquitto, tmp_path).start()
        try:
            sub.wait_for(lambda ms: any(m.text == "online" for m in ms), 10)
            stats = EdgeStats(
                edge_id=EDGE, at="2026-05-04T09:00:00Z", uptime_s=1, queue_depth=0, queue_bytes=0,
                queue_dropped=0, evidence_bytes=0, broker_connected=True,
                cameras=[CameraStats(
                    camera_id="c1", connected=True, fps_in=5, fps_analysed=2, inference_ms_p50=20,
                    inference_ms_p95=30, latency_ms_p95=40, reconnects_1h=0, stalls_1h=0, dropped_frames=0,
                    frames_in=10, analysed=4, tracks=1, active_events=0,
                )],
            )  # fmt: skip
            assert pub.publish_status(stats.model_dump_json().encode())
            got = sub.wait_for(lambda ms: any(m.payload.startswith(b"{") for m in ms), 10)
            doc = next(m.json() for m in got if m.payload.startswith(b"{"))
            assert EdgeStats.model_validate(doc).cameras[0].fps_analysed == 2
            # a crash: the TCP connection drops without DISCONNECT -> the broker publishes the LWT
            sock = pub.client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)
            sub.wait_for(lambda ms: any(m.text == "offline" for m in ms), 15)
            n_online = sum(m.text == "online" for m in sub.messages)
            sub.wait_for(lambda ms: sum(m.text == "online" for m in ms) > n_online, 15)  # reconnected
        finally:
            pub.stop()
        sub.wait_for(lambda ms: ms[-1].text == "offline", 10)  # a clean stop says so too
    # the retained state a newcomer sees
    with Collector.on(mosquitto, status) as late:
        late.wait_for(lambda ms: len(ms) >= 1, 10)
        assert late.messages[0].retain and late.messages[0].text == "offline"
