"""Webhooks to a real local HTTP receiver that fails at first, across a gateway restart."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.service import Gateway
from gateway.tickets.webhook import DEAD, DELIVERED, PENDING, WebhookOutbox, verify
from tests.integration.spine_helpers import gateway_config
from tests.servers import Collector, Mosquitto, wait_until
from tests.ticket_helpers import CAMERA, ROUTING_FILE, event

pytestmark = pytest.mark.integration
SECRET = "city-platform-hmac-key-0123456789"


class Receiver:
    """An external grid platform: answers 503 while `failing`, keeps one copy per idempotency key."""

    def __init__(self, status_when_failing: int = 503) -> None:
        self.failing = True
        self.status_when_failing = status_when_failing
        self.attempts: list[dict[str, Any]] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.attempts.append({"headers": headers, "body": body})
                    if receiver.failing:
                        status = receiver.status_when_failing
                    else:
                        status = 200
                        key = headers["idempotency-key"]
                        receiver.accepted.setdefault(key, {"headers": headers, "body": body, "copies": 0})
                        receiver.accepted[key]["copies"] += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/gridgate"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def config(tmp_path: Path, mosquitto: Mosquitto, *webhooks: dict[str, Any]) -> Any:
    return gateway_config(
        tmp_path,
        mosquitto,
        {"api": "none"},
        tickets={
            "routing_file": ROUTING_FILE,
            "offline_grace_s": 0,
            "tick_s": 0.1,
            "webhooks": list(webhooks),
        },
    )


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "city",
        "url": url,
        "secret": SECRET,
        "timeout_s": 2,
        "max_attempts": 100,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        **extra,
    }


def test_delivered_once_signed_and_nothing_lost_across_a_restart(
    mosquitto: Mosquitto, tmp_path: Path, receiver: Receiver
) -> None:
    cfg = config(tmp_path, mosquitto, hook(receiver.url, teams=["drainage"]))
    with Gateway(cfg) as gw:
        assert gw.tickets is not None
        gw.tickets.on_events(
            [
                event("ponding", "camera:cam-1", time.time(), CAMERA),
                event("illegal_parking", "camera:cam-2", time.time(), (30.25, 120.25)),  # not drainage
            ]
        )
        assert gw.tickets.drain(10)
        wait_until(lambda: len(receiver.attempts) >= 3, 10, "three failed attempts")
        ticket = gw.tickets.store.list_tickets(team="drainage")[0]
    # the gateway is gone while the platform still fails: the change waits in the outbox
    stopped_at = len(receiver.attempts)
    outbox = WebhookOutbox(cfg.tickets.url(cfg.storage))
    [row] = outbox.rows("city")
    assert (row["status"], row["ticket_id"], row["kind"]) == (PENDING, ticket.id, "created")
    assert row["attempts"] >= 3 and "HTTP 503" in row["last_error"]
    outbox.close()
    time.sleep(0.3)
    assert len(receiver.attempts) == stopped_at  # nobody is sending now
    receiver.failing = False
    with Gateway(cfg) as gw2:
        wait_until(lambda: receiver.accepted, 10, "delivery after the restart")
        wait_until(lambda: gw2.outbox and gw2.outbox.rows("city")[0]["status"] == DELIVERED, 5, "marked")
        time.sleep(0.3)
        metrics = urllib.request.urlopen(f"{gw2.api_url}/metrics").read().decode()
        assert 'gridgate_webhook_delivered_total{endpoint="city"} 1.0' in metrics
    [(key, got)] = receiver.accepted.items()
    assert got["copies"] == 1  # delivered once: one success, never resent
    body = json.loads(got["body"])
    assert key == body["change_id"] and body["kind"] == "created" and body["ticket"]["id"] == ticket.id
    assert body["type"] == "ticket_change" and "code" in body and body["service_code"] == "ponding"
    h = got["headers"]
    assert h["x-gridgate-signature"].startswith("sha256=") and SECRET not in json.dumps(h)
    assert verify(SECRET, got["body"], h["x-gridgate-timestamp"], h["x-gridgate-signature"])
    assert not verify("wrong", got["body"], h["x-gridgate-timestamp"], h["x-gridgate-signature"])
    assert not verify(SECRET, got["body"] + b" ", h["x-gridgate-timestamp"], h["x-gridgate-signature"])
    # every attempt carried the same idempotency key; the parking ticket was filtered out
    assert {a["headers"]["idempotency-key"] for a in receiver.attempts} == {key}
    assert int(h["x-gridgate-attempt"]) == len(receiver.attempts)


def test_dead_letter_after_max_attempts_and_at_once_on_a_final_4xx(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with (
        Receiver(503) as down,
        Receiver(400) as refusing,
        Collector.on(mosquitto, "gridgate/dead-letter") as col,
    ):
        cfg = config(
            tmp_path,
            mosquitto,
            hook(down.url, name="down", max_attempts=3),
            hook(refusing.url, name="refusing", secret=None, categories=["ponding"]),
        )
        with Gateway(cfg) as gw:
            assert gw.tickets is not None
            gw.tickets.on_events([event("ponding", "camera:cam-1", time.time(), CAMERA)])
            msgs = col.wait_count(2, timeout=10)
            letters = {m.json()["endpoint"]: m.json() for m in msgs}
            assert letters["down"]["reason"] == letters["refusing"]["reason"] == "webhook_failed"
            assert letters["down"]["attempts"] == 3 and "HTTP 503" in letters["down"]["detail"]
            assert letters["refusing"]["attempts"] == 1 and "not retried" in letters["refusing"]["detail"]
            assert len(down.attempts) == 3 and len(refusing.attempts) == 1
            assert "x-gridgate-signature" not in refusing.attempts[0]["headers"]  # no secret: unsigned
            assert gw.outbox is not None
            [row] = gw.outbox.rows("down", DEAD)
            assert row["attempts"] == 3 and "HTTP 503" in row["last_error"]
            metrics = urllib.request.urlopen(f"{gw.api_url}/metrics").read().decode()
            assert 'gridgate_webhook_dead_letters{endpoint="down"} 1.0' in metrics
            assert 'gridgate_webhook_dead_letters{endpoint="refusing"} 1.0' in metrics
