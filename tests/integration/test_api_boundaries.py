"""The API's edges through a running gateway on a real broker: topic names, personal data, body
limits (over raw sockets against the running uvicorn), query bounds and the error schemas."""

from __future__ import annotations

import json
import select
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect

from gateway.service import Gateway
from tests.integration.spine_helpers import gateway_config
from tests.integration.test_tickets_api import TOKENS, auth, open_tickets, secret
from tests.integration.test_tickets_webhook import Receiver
from tests.servers import Collector, Mosquitto, pub, wait_until
from tests.ticket_helpers import ROUTING_FILE, grid_doc

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
CONTACT = {
    "email": "min.citizen@example.org",
    "phone": "+86 138 0000 1111",
    "first_name": "Min",
    "last_name": "Zhao",
}
REPORT = {
    "service_code": "bin_overflow",
    "lat": "30.2201",
    "long": "120.1201",
    "description": "Rubbish all over the pavement",
}


@contextmanager
def api_gateway(tmp_path: Path, mosquitto: Mosquitto, **changes: Any) -> Iterator[Gateway]:
    """The gateway of test_tickets_api (its tokens and grids), with `tickets`/`api`/other changes."""
    api = changes.pop("api", {})
    grids = tmp_path / "ticket-grids.geojson"
    grids.write_text(json.dumps(grid_doc()))
    tickets = {"routing_file": ROUTING_FILE, "offline_grace_s": 0, "tick_s": 0.1, "update_coalesce_s": 0}
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "none"},
        tickets=tickets | changes.pop("tickets", {}),
        auth={"tokens": [{"name": n, "token": secret(n), **spec} for n, spec in TOKENS.items()]},
        **changes,
    )
    cfg = cfg.model_copy(update={"grids_file": grids, "api": cfg.api.model_copy(update=api)})
    with Gateway(cfg) as gateway:
        yield gateway


@pytest.fixture
def gw(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Gateway]:
    with api_gateway(tmp_path, mosquitto) as gateway:
        yield gateway


def client(gw: Gateway, base: str = "") -> httpx.Client:
    return httpx.Client(base_url=(gw.api_url or "") + base, timeout=10)


# ---- item 9: every name that becomes a topic level --------------------------------------------


def test_a_team_that_cannot_be_a_topic_level_is_refused_and_the_gateway_stays_connected(
    gw: Gateway, mosquitto: Mosquitto
) -> None:
    ids = open_tickets(gw)
    api = client(gw)
    with Collector.on(mosquitto, ["gridgate/tickets/#", "gridgate/dead-letter"]) as seen:
        connects = gw.metrics.mqtt_connects
        for team, problem in [
            ("night shift\t2", "control character U+0009"),
            ("crew\x00", "control character U+0000"),
            ("#", "wildcard '#'"),
            ("night+day", "wildcard '+'"),
            ("roads/north", "contains '/'"),
            ("", "is empty"),
            (" drainage", "white space"),
            ("x" * 200, "200 characters"),
        ]:
            r = api.post(
                f"/api/v1/tickets/{ids['ponding']}/reassign", json={"team": team}, headers=auth("cc")
            )
            assert r.status_code == 422, (team, r.text)
            body = r.json()
            assert problem in body["detail"] and body["errors"][0]["loc"] == ["body", "team"], body
        # a well-formed name nobody configured: refused, naming the teams there are
        r = api.post(
            f"/api/v1/tickets/{ids['ponding']}/reassign", json={"team": "night-shift"}, headers=auth("cc")
        )
        assert r.status_code == 422 and "unknown team 'night-shift'" in r.json()["detail"]
        assert "drainage" in r.json()["detail"] and "enforcement-zone-2" in r.json()["detail"]
        assert r.json()["errors"] == []
        # the gateway never lost the broker, and a real reassign is still dispatched
        r = api.post(
            f"/api/v1/tickets/{ids['ponding']}/reassign", json={"team": "sanitation"}, headers=auth("cc")
        )
        assert r.status_code == 200 and r.json()["team"] == "sanitation"
        seen.wait_for(lambda ms: any(m.topic == "gridgate/tickets/sanitation" for m in ms))
        # a device's own maintenance team (devices.yaml) is a known team too
        r = api.post(
            f"/api/v1/tickets/{ids['bin_full']}/reassign", json={"team": "covers"}, headers=auth("cc")
        )
        assert r.status_code == 200 and r.json()["team"] == "covers"
        # an edge box's event kind is a level of {p}/alerts/{grid}/{kind}: refused as a dead letter
        doc = {
            "edge_id": "box-1",
            "camera_id": "cam-1",
            "seq": 1,
            "phase": "new",
            "event_id": "01JEDGEBADKIND000000000001",
            "kind": "illegal+parking",
            "zone": "gate",
            "location": {"lat": 30.25, "lon": 120.15},
            "confidence": 0.9,
            "started_at": datetime.now(UTC).isoformat(),
            "at": datetime.now(UTC).isoformat(),
        }
        pub(mosquitto, "gridgate/edge/box-1/events", json.dumps(doc))
        seen.wait_for(lambda ms: any(m.topic == "gridgate/dead-letter" for m in ms))
        [dead] = seen.on_topic("gridgate/dead-letter")
        assert dead.json()["reason"] == "bad_payload" and "kind: 'illegal+parking'" in dead.json()["detail"]
        assert gw.metrics.mqtt_connects == connects and gw.mqtt.connected.is_set()


# ---- item 10: citizens' personal data ---------------------------------------------------------


def test_citizens_contact_details_reach_only_admin_and_the_command_centre(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.failing = False
    receiver.thread.start()
    webhook = {"name": "platform", "url": receiver.url, "secret": "k" * 32, "backoff_base_s": 0.1}
    with (
        api_gateway(tmp_path, mosquitto, tickets={"webhooks": [webhook]}) as gw,
        Collector.on(mosquitto, "gridgate/#") as on_mqtt,
    ):
        ws_url = (gw.api_url or "").replace("http://", "ws://") + "/api/v1/stream"
        with connect(f"{ws_url}?token={secret('admin')}") as stream:
            assert json.loads(stream.recv(5))["type"] == "hello"
            wait_until(lambda: gw.stream.clients == 1, 5, "the stream client")
            r = client(gw, "/open311/v2").post(
                "/requests.json", data=REPORT | CONTACT | {"api_key": secret("app")}
            )
            assert r.status_code == 201, r.text
            rid = r.json()[0]["service_request_id"]
            streamed = [str(stream.recv(5))]  # the alert, then the new ticket
            while json.loads(streamed[-1])["type"] != "ticket":
                streamed.append(str(stream.recv(5)))
        on_mqtt.wait_for(lambda ms: [m for m in ms if m.topic.startswith("gridgate/tickets/")])
        wait_until(lambda: receiver.accepted, 10, "the webhook delivery")
        api = client(gw)
        for who in ("admin", "cc"):
            [reporter] = api.get(f"/api/v1/tickets/{rid}", headers=auth(who)).json()["reporters"]
            assert {k: reporter[k] for k in CONTACT} == CONTACT and reporter["filed_by"] == "app"
        for who in ("drainage", "worker-G2", "ro", "app"):
            r = api.get(f"/api/v1/tickets/{rid}", headers=auth(who))
            assert r.status_code == 200 and r.json()["reporters"] is None
            assert not leaks(r.text), who
        everywhere = [
            api.get("/api/v1/tickets", headers=auth("admin")).text,
            api.get("/api/v1/events", headers=auth("admin")).text,
            api.get("/api/v1/devices", headers=auth("admin")).text,
            client(gw, "/open311/v2").get(f"/requests/{rid}.xml").text,
            client(gw, "/open311/v2").get("/requests.json").text,
            *streamed,
            *(m.text for m in on_mqtt.messages),
            *(a["body"].decode() for a in receiver.attempts),
        ]
        assert everywhere and not [text for text in everywhere if leaks(text)]
    receiver.server.shutdown()


def leaks(text: str) -> bool:
    return any(value in text for value in (CONTACT["email"], CONTACT["phone"], CONTACT["last_name"]))


# ---- item 11: request bodies ------------------------------------------------------------------


def raw_post(
    gw: Gateway, path: str, headers: dict[str, str], size: int, *, chunked: bool = False
) -> tuple[int, bytes, int]:
    """POST `size` bytes over a raw socket, stopping as soon as the server answers.

    Returns the status, the response body and how many body bytes went out before the answer.
    """
    url = urlsplit(gw.api_url or "")
    sock = socket.create_connection((url.hostname or "", url.port or 80), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # "sent" is near what it read
    head = {"Host": f"{url.hostname}:{url.port}", "Content-Type": "application/x-www-form-urlencoded"}
    head |= {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)}
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in (head | headers).items()), "", ""]
    sock.sendall("\r\n".join(lines).encode())
    piece = b"description=" + b"x" * (64 * 1024 - 12)
    sent = 0
    try:
        while sent < size and not select.select([sock], [], [], 0)[0]:
            chunk = piece[: size - sent]
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if chunked and sent >= size:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were still sending
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < content_length(data):
        more = sock.recv(65536)
        if not more:
            break
        data += more
    sock.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1], sent


def content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def rss_bytes() -> int:
    """This process's resident memory: the gateway under test runs in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_bodies_are_limited_per_route_and_read_only_after_authentication(gw: Gateway) -> None:
    tid = open_tickets(gw)["ponding"]
    rss_before = rss_bytes()
    comment = f"/api/v1/tickets/{tid}/comment"
    bearer = {"Authorization": f"Bearer {secret('admin')}"}
    # no token: 401 before a byte of the body is read, declared or chunked
    for chunked in (False, True):
        status, body, sent = raw_post(gw, comment, {}, 200 * MIB, chunked=chunked)
        assert status == 401 and "bearer token" in json.loads(body)["detail"]
        assert sent < 100 * MIB, sent  # it never read the body: it would have taken all 200 MiB
    # Open311 with a wrong api_key outside the form: 403 in the spec's format, body unread
    status, body, sent = raw_post(gw, "/open311/v2/requests.json?api_key=wrong", {}, 200 * MIB)
    assert status == 403 and json.loads(body)[0]["code"] == 403 and sent < 100 * MIB
    # the key may be in the form (the spec): then the form is read, but never beyond the limit
    for chunked in (False, True):
        status, body, sent = raw_post(gw, "/open311/v2/requests.xml", {}, 200 * MIB, chunked=chunked)
        err = ET.fromstring(body)
        assert status == 413 and err.tag == "errors" and err.find("error/code").text == "413"  # type: ignore[union-attr]
        assert "at most 65536 bytes" in err.find("error/description").text and sent < 100 * MIB  # type: ignore[union-attr,operator]
    # a valid key does not lift the limit: 30 MiB declared, or streamed without a length
    for chunked in (False, True):
        status, body, sent = raw_post(gw, comment, bearer, 30 * MIB, chunked=chunked)
        assert status == 413 and "at most 32768 bytes" in json.loads(body)["detail"] and sent < 15 * MIB
    assert rss_bytes() - rss_before < 100 * MIB  # 860 MiB of bodies offered, none held
    # what fits still works: a 4,000-character comment in Chinese (12 KB of UTF-8)
    r = client(gw).post(comment, json={"note": "积水" * 2000}, headers=bearer)
    assert r.status_code == 200, r.text


# ---- item 12: query bounds and one error schema -----------------------------------------------


def test_queries_are_bounded_and_every_error_has_the_documented_schema(gw: Gateway) -> None:
    api = client(gw)
    ro = auth("ro")
    for path in ("/api/v1/tickets", "/api/v1/events"):
        for params, field in [
            ({"offset": 2**63}, "offset"),
            ({"offset": -1}, "offset"),
            ({"limit": 0}, "limit"),
            ({"since": "0.5"}, "since"),
            ({"since": "1700000000"}, "since"),
            ({"until": "yesterday"}, "until"),
        ]:
            r = api.get(path, params=params, headers=ro)
            assert r.status_code == 422, (path, params, r.text)
            body = r.json()
            assert set(body) == {"detail", "errors"} and body["errors"][0]["loc"] == ["query", field], body
            assert body["detail"].startswith(f"query.{field}: ")
        for since in ("2026-11-22T08:30:00Z", "2026-11-22T16:30:00+08:00", "2026-11-22"):
            assert api.get(path, params={"since": since}, headers=ro).status_code == 200, since
    # our own 422s, 401s and 404s have the same shape
    for r in (
        api.get("/api/v1/tickets", params={"state": "done"}, headers=ro),
        api.get("/api/v1/tickets"),
        api.get("/api/v1/tickets/nope", headers=ro),
        api.get("/api/v1/nothing-here", headers=ro),
    ):
        assert set(r.json()) == {"detail", "errors"} and isinstance(r.json()["detail"], str), r.text
    # and the schema says so
    spec = api.get("/openapi.json").json()
    listing = spec["paths"]["/api/v1/tickets"]["get"]
    assert listing["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    offset = next(p for p in listing["parameters"] if p["name"] == "offset")
    assert offset["schema"]["maximum"] < 2**63 and "HTTPValidationError" not in json.dumps(spec)


# ---- item 13: Open311 ---------------------------------------------------------------------------


def test_open311_answers_an_id_or_a_token_never_both_and_errors_in_the_spec_format(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with api_gateway(tmp_path, mosquitto, tickets={"rate_limit_per_grid_per_min": 1}) as gw:
        o = client(gw, "/open311/v2")
        first = o.post("/requests.xml", data=REPORT | {"api_key": secret("app")})
        [req] = ET.fromstring(first.content)
        assert first.status_code == 201 and [c.tag for c in req] == ["service_request_id", "service_notice"]
        assert req.find("service_request_id").text  # type: ignore[union-attr]
        # a second new problem in the same grid within the minute is queued: a token, no id element
        ponding = REPORT | {
            "service_code": "ponding",
            "lat": "30.28",
            "long": "120.18",
            "api_key": secret("app"),
        }
        queued = o.post("/requests.xml", data=ponding)
        [req] = ET.fromstring(queued.content)
        assert queued.status_code == 201 and [c.tag for c in req] == ["token", "service_notice"], queued.text
        token = req.find("token").text  # type: ignore[union-attr]
        assert o.post("/requests.json", data=ponding | {"lat": "30.27"}).json()[0].keys() == {
            "token",
            "service_notice",
        }
        assert o.get(f"/tokens/{token}.json").json() == [{"token": token}]  # still waiting for a ticket
        # unknown tokens, requests, paths and formats: 404/422 in the spec's format, JSON and XML
        for path, status in [
            ("/tokens/01NOSUCHTOKEN.json", 404),
            ("/requests/nope.json", 404),
            ("/nothing.json", 404),
            ("/services.yaml", 422),
        ]:
            r = o.get(path)
            assert r.status_code == status and r.headers["content-type"] == "application/json; charset=utf-8"
            [err] = r.json()
            assert err["code"] == status and err["description"], (path, r.text)
        err = ET.fromstring(o.get("/tokens/01NOSUCHTOKEN.xml").content)
        assert err.tag == "errors" and err.find("error/code").text == "404"  # type: ignore[union-attr]
        assert o.get("/services.json").headers["content-type"] == "application/json; charset=utf-8"
        r = o.post("/requests.json", data=REPORT | {"api_key": "not-a-key"})
        assert r.status_code == 403 and r.json()[0]["code"] == 403
        assert (
            o.post("/services.json").status_code == 405 and o.post("/services.json").json()[0]["code"] == 405
        )
        # a crash is a 500 in the spec's format under /open311/v2/, and an ErrorBody elsewhere
        assert gw.tickets is not None

        def broken(*_args: Any, **_kw: Any) -> None:
            raise RuntimeError("disk on fire")

        gw.tickets.store.get = broken  # type: ignore[method-assign]
        r = o.get("/requests/01ANY.json")
        assert r.status_code == 500 and r.json()[0]["code"] == 500 and "see the gateway log" in r.text
        err = ET.fromstring(o.get("/requests/01ANY.xml").content)
        assert err.find("error/code").text == "500"  # type: ignore[union-attr]
        r = client(gw).get("/api/v1/tickets/01ANY", headers=auth("ro"))
        assert r.status_code == 500 and set(r.json()) == {"detail", "errors"} and "disk on fire" not in r.text


# ---- item 15: an open API on the network ------------------------------------------------------


def test_an_open_api_beyond_loopback_says_so_at_start(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, auth={"allow_open": True})
    cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"host": "0.0.0.0"})})
    with caplog.at_level("WARNING", logger="gridgate.gateway"), Gateway(cfg):
        time.sleep(0.1)
    [line] = [r.getMessage() for r in caplog.records if "event=api_auth_open" in r.getMessage()]
    assert "address=0.0.0.0:0" in line and "can read and change tickets as admin" in line
