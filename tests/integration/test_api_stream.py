"""A REAL slow WebSocket client: it stops reading while the gateway streams thousands of alerts,
is told what it lost instead of being closed, and gets it back by reconnecting with a resume point."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from websockets.sync.client import ClientConnection, connect

from gateway.service import Gateway
from tests.integration.test_api_boundaries import api_gateway
from tests.integration.test_tickets_api import secret
from tests.servers import Mosquitto, wait_until
from tests.ticket_helpers import CAMERA, event

pytestmark = pytest.mark.integration
ALERTS = 4000


def slow_socket(url: str) -> socket.socket:
    """A TCP connection with a tiny receive buffer: a client on a bad link that stops reading."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname or "", parts.port or 80))
    return sock


def read_until(ws: ClientConnection, last_id: int, timeout: float = 30) -> list[dict[str, Any]]:
    """Every message until the one with `id == last_id` (alerts) arrives."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not out or out[-1].get("id") != last_id:
        out.append(json.loads(ws.recv(max(0.1, deadline - time.monotonic()))))
    return out


def test_a_slow_client_is_told_what_it_lost_and_gets_it_back_on_resume(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with api_gateway(tmp_path, mosquitto, api={"stream_queue_max": 50}) as gw:
        ws_url = (gw.api_url or "").replace("http://", "ws://") + "/api/v1/stream"
        query = f"?token={secret('cc')}&types=alert"
        slow = connect(ws_url + query, sock=slow_socket(ws_url), compression=None, max_queue=1)
        hello = json.loads(slow.recv(5))
        assert hello["type"] == "hello"
        wait_until(lambda: gw.stream.clients == 1, 5, "the slow client")
        before = gw.stream.last_id
        started = datetime.now(UTC)
        publish_alerts(gw)  # the client reads nothing meanwhile
        last = gw.stream.last_id
        assert last - before == ALERTS
        time.sleep(0.5)
        # it reads again: the same connection, never closed for being slow, says what was lost
        got = read_until(slow, last)
        slow.close()
        gaps = [m for m in got if m["type"] == "dropped"]
        alerts = [m["id"] for m in got if m["type"] == "alert"]
        assert gaps and sum(g["count"] for g in gaps) == ALERTS - len(alerts) > 0
        assert alerts == sorted(alerts) and alerts[-1] == last
        missed = sorted(set(range(before + 1, last + 1)) - set(alerts))
        first_gap = gaps[0]
        assert first_gap["last_id"] < missed[0] and first_gap["next_id"] > missed[0]
        assert first_gap["total"] == first_gap["count"] and "since_id" in first_gap["resume"]

        # it reconnects from the last message it got before the gap: the ring has what it missed
        with connect(f"{ws_url}{query}&since_id={first_gap['last_id']}", compression=None) as again:
            assert json.loads(again.recv(5))["type"] == "hello"
            resumed = read_until(again, last)
        assert [m["type"] for m in resumed] == ["alert"] * len(resumed)  # nothing lost any more
        assert set(missed) <= {m["id"] for m in resumed}

        # or from a time: every alert published since then
        since = quote(started.isoformat())
        with connect(f"{ws_url}{query}&since={since}", compression=None) as by_time:
            assert json.loads(by_time.recv(5))["type"] == "hello"
            replayed = [m["id"] for m in read_until(by_time, last)]
        assert replayed == list(range(before + 1, last + 1))

        # resume points that are not one are refused, saying why
        with connect(f"{ws_url}{query}&since_id=soon") as bad:
            err = json.loads(bad.recv(5))
            assert err["type"] == "error" and err["status"] == 400 and "since_id 'soon'" in err["detail"]
        with connect(f"{ws_url}{query}&since=0.5") as bad:
            err = json.loads(bad.recv(5))
            assert err["status"] == 400 and "ISO 8601" in err["detail"]


def publish_alerts(gw: Gateway) -> None:
    """Thousands of alert messages of about 1 KB each, as fast as the hub takes them."""
    evs = [event("ponding", f"camera:c{i % 40}", time.time(), CAMERA) for i in range(ALERTS)]
    for i, ev in enumerate(evs):
        ev.grid_id = "G1"
        ev.measurements.update({"n": i, "note": "x" * 600})
    for start in range(0, ALERTS, 100):
        gw.stream.on_events(evs[start : start + 100])
