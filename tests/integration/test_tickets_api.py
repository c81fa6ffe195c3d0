"""The ticket API, the WebSocket stream and Open311 through a running gateway on a real broker."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from gateway.api.open311 import REQUEST_FIELDS
from gateway.service import Gateway
from gateway.tickets.states import TicketStatus
from tests.integration.spine_helpers import gateway_config
from tests.servers import Mosquitto, pub, wait_until
from tests.ticket_helpers import CAMERA, ROUTING_FILE, event, grid_doc

pytestmark = pytest.mark.integration
S = TicketStatus

TOKENS = {
    "admin": {"role": "admin"},
    "cc": {"role": "command_centre"},
    "drainage": {"role": "team", "team": "drainage"},
    "worker-G2": {"role": "grid_worker", "grids": ["G2"]},
    "ro": {"role": "read_only"},
    "app": {"role": "reporter"},
}
G2_SPOT = (30.25, 120.25)
SERVICE_FIELDS = ["service_code", "service_name", "description", "metadata", "type", "keywords", "group"]


def secret(name: str) -> str:
    return f"{name}-token-0123456789abcdef"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret(name)}"}


@pytest.fixture
def gw(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Gateway]:
    grids = tmp_path / "ticket-grids.geojson"
    grids.write_text(json.dumps(grid_doc()))
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "none"},
        tickets={"routing_file": ROUTING_FILE, "offline_grace_s": 0, "tick_s": 0.1, "update_coalesce_s": 0},
        auth={"tokens": [{"name": n, "token": secret(n), **spec} for n, spec in TOKENS.items()]},
    )
    cfg = cfg.model_copy(update={"grids_file": grids})
    with Gateway(cfg) as gateway:
        yield gateway


def open_tickets(gw: Gateway) -> dict[str, str]:
    """A ponding ticket in G1-M1 (drainage), parking in G2 (zone 2 enforcement), a bin in G1."""
    assert gw.tickets is not None
    now = time.time()
    gw.tickets.on_events(
        [
            event("ponding", "camera:cam-1", now, CAMERA),
            event("illegal_parking", "camera:cam-2", now, G2_SPOT),
            event("bin_full", "device:BIN-9", now, (30.28, 120.18)),
        ]
    )
    assert gw.tickets.drain(10)
    return {t.category: t.id for t in gw.tickets.store.list_tickets()}


def test_ticket_api_filters_actions_roles_and_reports(gw: Gateway) -> None:
    ids = open_tickets(gw)
    api = httpx.Client(base_url=gw.api_url or "", timeout=10)
    # health and metrics stay open; everything else wants a token
    assert api.get("/healthz").status_code == 200 and "gridgate_stream_clients" in api.get("/metrics").text
    r = api.get("/api/v1/tickets")
    assert r.status_code == 401 and "bearer token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert api.get("/api/v1/tickets", headers={"Authorization": "Bearer nope"}).status_code == 401

    def listed(**params: Any) -> list[str]:
        r = api.get("/api/v1/tickets", params=params, headers=auth("ro"))
        assert r.status_code == 200, r.text
        assert int(r.headers["x-total-count"]) >= len(r.json())
        return sorted(t["category"] for t in r.json())

    assert listed() == ["bin_full", "illegal_parking", "ponding"]
    assert listed(state="dispatched,accepted") == listed(state=["dispatched", "accepted"]) == listed()
    assert listed(state="closed") == []
    assert listed(team="drainage") == ["ponding"] and listed(grid_id="G2") == ["illegal_parking"]
    assert listed(micro_grid_id="G1-M1") == ["ponding"] and listed(category="bin_full") == ["bin_full"]
    assert listed(breached=False) == listed() and listed(breached=True) == []
    assert listed(since="2100-01-01T00:00:00Z") == [] and len(listed(until="2100-01-01T00:00:00Z")) == 3
    assert len(listed(limit=1)) == 1
    bad = api.get("/api/v1/tickets", params={"state": "done"}, headers=auth("ro"))
    assert bad.status_code == 422 and "unknown state 'done'" in bad.json()["detail"]

    detail = api.get(f"/api/v1/tickets/{ids['ponding']}", headers=auth("ro")).json()
    assert detail["ticket"]["team"] == "drainage" and [e["kind"] for e in detail["events"]] == ["ponding"]
    assert [(h["from_status"], h["to_status"]) for h in detail["history"]] == [
        (None, "new"),
        ("new", "dispatched"),
    ]
    assert api.get("/api/v1/tickets/nope", headers=auth("ro")).status_code == 404

    def post(who: str, tid: str, action: str, **body: Any) -> httpx.Response:
        return api.post(f"/api/v1/tickets/{tid}/{action}", json=body, headers=auth(who))

    ponding, parking = ids["ponding"], ids["illegal_parking"]
    # roles and scope
    r = post("ro", ponding, "accept")
    assert r.status_code == 403 and "may only read" in r.json()["detail"]
    r = post("worker-G2", ponding, "accept")
    assert r.status_code == 403 and "is in grid 'G1'" in r.json()["detail"]
    r = post("drainage", parking, "accept")
    assert r.status_code == 403 and "belongs to team 'enforcement-zone-2'" in r.json()["detail"]
    assert post("app", ponding, "comment", note="hi").status_code == 403
    # the drainage team works its ticket; the command centre verifies it
    r = post("drainage", ponding, "accept", note="on my way", by="li.wei")
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    r = post("drainage", ponding, "accept")
    assert r.status_code == 409 and "cannot go from accepted to accepted" in r.json()["detail"]
    assert post("drainage", "nope", "accept").status_code == 404
    assert post("drainage", ponding, "arrive").json()["status"] == "on_site"
    assert post("drainage", ponding, "resolve", note="pumped").json()["status"] == "resolved"
    r = post("drainage", ponding, "close")
    assert r.status_code == 403 and "command centre" in r.json()["detail"]
    assert post("cc", ponding, "close", note="checked on camera").json()["status"] == "closed"
    assert post("cc", ponding, "resolve").status_code == 409
    # a worker acts in its own grid; reassign and comment
    r = post("worker-G2", parking, "reassign", assignee="worker-G2b", note="nearer")
    assert r.status_code == 200 and r.json()["assignee"] == "worker-G2b"
    assert post("worker-G2", parking, "reassign").status_code == 422  # neither assignee nor team
    assert post("worker-G2", parking, "comment", note="").status_code == 422
    assert post("worker-G2", parking, "comment", note="plate noted").status_code == 200
    trail = api.get(f"/api/v1/tickets/{ponding}", headers=auth("ro")).json()["history"]
    assert [(h["actor"], h["to_status"], h["note"]) for h in trail[2:]] == [
        ("li.wei@drainage", "accepted", "on my way"),
        ("drainage", "on_site", ""),
        ("drainage", "resolved", "pumped"),
        ("cc", "closed", "checked on camera"),
    ]
    # the problem comes back at the same place: reopened, and a hotspot of two occurrences
    assert gw.tickets is not None
    gw.tickets.on_events([event("ponding", "camera:cam-1", time.time(), CAMERA)])
    assert gw.tickets.drain(10)
    assert gw.tickets.get(ponding).status is S.reopened

    grids = {g["id"]: g for g in api.get("/api/v1/grids", headers=auth("ro")).json()}
    assert grids["G1"]["open_tickets"] == 2 and grids["G1"]["tickets"] == {"dispatched": 1, "reopened": 1}
    assert grids["G2"]["open_tickets"] == 1 and grids["G1"]["micro_grids"] == ["G1-M1"]
    assert grids["G1"]["grid_head"] == "head-G1" and grids["outside"]["fallback"] is True
    micro = api.get("/api/v1/grids", params={"level": "micro_grid"}, headers=auth("ro")).json()
    assert [(g["id"], g["open_tickets"]) for g in micro] == [("G1-M1", 1)]
    assert api.get("/api/v1/grids/G2", headers=auth("ro")).json()["open_tickets"] == 1
    assert api.get("/api/v1/grids/nowhere", headers=auth("ro")).status_code == 404

    sla = api.get("/api/v1/reports/sla", headers=auth("ro")).json()
    rows = {(g["grid_id"], g["category"]): g for g in sla["groups"]}
    assert set(rows) == {("G1", "ponding"), ("G1", "bin_full"), ("G2", "illegal_parking")}
    assert sla["total"]["tickets"] == 3
    by_cat = api.get("/api/v1/reports/sla", params={"by": "category"}, headers=auth("ro")).json()
    assert {g["category"] for g in by_cat["groups"]} == {"ponding", "bin_full", "illegal_parking"}

    hot = api.get("/api/v1/reports/hotspots", params={"min_count": 2}, headers=auth("ro")).json()
    assert [(h["category"], h["occurrences"], h["micro_grid_id"]) for h in hot["hotspots"]] == [
        ("ponding", 2, "G1-M1")
    ]
    assert hot["by_category"] == {"ponding": 1}
    assert (
        api.get("/api/v1/reports/hotspots", params={"min_count": 3}, headers=auth("ro")).json()["hotspots"]
        == []
    )


def test_websocket_streams_alerts_and_ticket_changes(gw: Gateway, mosquitto: Mosquitto) -> None:
    ws_url = (gw.api_url or "").replace("http://", "ws://") + "/api/v1/stream"
    with (
        connect(f"{ws_url}?token={secret('cc')}") as everything,
        connect(f"{ws_url}?grid_id=G2&types=ticket") as g2_only,
    ):
        hello = json.loads(everything.recv(5))
        assert hello["type"] == "hello" and hello["who"] == "cc"
        # no token in the query: the first message carries it
        g2_only.send(json.dumps({"type": "auth", "token": secret("ro")}))
        assert json.loads(g2_only.recv(5))["filters"]["grid_id"] == ["G2"]
        wait_until(lambda: gw.stream.clients == 2, 5, "two clients")
        # a real gauge raises water_high through the broker: an alert, then a ticket
        body = json.dumps({"ts": time.time() - 1200, "water_level_cm": 22})
        pub(mosquitto, "gridgate/devices/water_gauge/WG-1/up", body)
        got: list[dict[str, Any]] = []
        while {m["type"] for m in got} != {"alert", "ticket"}:
            got.append(json.loads(everything.recv(10)))
        alert = next(m for m in got if m["type"] == "alert")
        assert (alert["event"]["kind"], alert["grid_id"], alert["team"]) == ("water_high", "G1", "drainage")
        ticket = next(m for m in got if m["type"] == "ticket")
        assert (ticket["kind"], ticket["ticket"]["category"], ticket["to_status"]) == (
            "created",
            "water_high",
            "dispatched",
        )
        # an action through the API streams too; the G2 client saw nothing of G1
        api = httpx.Client(base_url=gw.api_url or "", timeout=10)
        tid = ticket["ticket"]["id"]
        assert api.post(f"/api/v1/tickets/{tid}/accept", headers=auth("cc")).status_code == 200
        while (update := json.loads(everything.recv(10))).get("reason") != "accept":
            pass
        assert (update["type"], update["kind"], update["reason"], update["to_status"]) == (
            "ticket",
            "updated",
            "accept",
            "accepted",
        )
        assert gw.tickets is not None
        gw.tickets.on_events([event("illegal_parking", "camera:cam-2", time.time(), G2_SPOT)])
        g2 = json.loads(g2_only.recv(10))
        assert g2["type"] == "ticket" and g2["ticket"]["grid_id"] == "G2"
        everything.send(json.dumps({"type": "ping"}))
        while (m := json.loads(everything.recv(10)))["type"] != "pong":
            assert m["type"] in ("ticket", "alert")
    # a bad token is refused with a reason
    with connect(f"{ws_url}?token=wrong") as refused:
        err = json.loads(refused.recv(5))
        assert err["type"] == "error" and err["status"] == 401
    wait_until(lambda: gw.stream.clients == 0, 5, "clients gone")


def _xml_requests(body: bytes) -> list[dict[str, str]]:
    root = ET.fromstring(body)
    assert root.tag == "service_requests"
    assert all(child.tag == "request" for child in root)
    return [{el.tag: el.text or "" for el in req} for req in root]


def test_open311_georeport_v2_json_and_xml(gw: Gateway) -> None:
    api = httpx.Client(base_url=(gw.api_url or "") + "/open311/v2", timeout=10)
    # services: the public categories, not device faults
    services = api.get("/services.json").json()
    codes = [s["service_code"] for s in services]
    assert "ponding" in codes and "bin_overflow" in codes and "device_offline" not in codes
    for s in services:
        assert list(s) == SERVICE_FIELDS and s["metadata"] is False and s["type"] == "realtime"
    ponding = next(s for s in services if s["service_code"] == "ponding")
    assert (ponding["service_name"], ponding["group"]) == ("Standing water", "Drainage and water utility")
    root = ET.fromstring(api.get("/services.xml").content)
    assert root.tag == "services" and len(root) == len(services)
    for el in root:
        assert el.tag == "service" and [c.tag for c in el] == SERVICE_FIELDS
    assert root[0].find("metadata").text == "false"  # type: ignore[union-attr]
    assert api.get("/services/ponding.json").json() == {"service_code": "ponding", "attributes": []}
    defn = ET.fromstring(api.get("/services/ponding.xml").content)
    assert defn.tag == "service_definition" and [c.tag for c in defn] == ["service_code", "attributes"]
    # errors in the spec's format, both formats
    r = api.get("/services/nope.json")
    assert r.status_code == 404 and r.json()[0]["code"] == 404 and "nope" in r.json()[0]["description"]
    err = ET.fromstring(api.get("/services/nope.xml").content)
    assert err.tag == "errors" and err[0].tag == "error" and err[0].find("code").text == "404"  # type: ignore[union-attr]

    report = {
        "service_code": "bin_overflow",
        "lat": "30.2201",
        "long": "120.1201",
        "address_string": "12 West Lake Road",
        "description": "Rubbish all over the pavement",
        "media_url": "https://photos.example/1.jpg",
        "email": "citizen@example.org",
        "first_name": "Min",
    }
    r = api.post("/requests.json", data=report)
    assert r.status_code == 403 and "api_key" in r.json()[0]["description"]
    r = api.post("/requests.json", data=report | {"api_key": secret("ro")})
    assert r.status_code == 403 and "may not file reports" in r.json()[0]["description"]
    assert (
        api.post("/requests.json", data={"api_key": secret("app"), "lat": "1", "long": "2"}).status_code
        == 400
    )
    r = api.post("/requests.json", data=report | {"api_key": secret("app"), "lat": "north"})
    assert r.status_code == 400 and "decimal degrees" in r.json()[0]["description"]
    assert (
        api.post("/requests.json", data=report | {"api_key": secret("app"), "service_code": "x"}).status_code
        == 404
    )
    nowhere = {k: v for k, v in report.items() if k not in ("lat", "long", "address_string")}
    r = api.post("/requests.json", data=nowhere | {"api_key": secret("app")})
    assert r.status_code == 400 and "location is required" in r.json()[0]["description"]

    r = api.post("/requests.json", data=report | {"api_key": secret("app")})
    assert r.status_code == 201, r.text
    [created] = r.json()
    rid = created["service_request_id"]
    # the id, and no token beside it (FixMyStreet would read an empty element as the id)
    assert rid and "token" not in created and "Sanitation" in created["service_notice"]
    assert gw.tickets is not None
    t = gw.tickets.get(rid)
    token = t.sources[0].removeprefix("citizen:")
    assert (t.category, t.team, t.grid_id, t.micro_grid_id, t.sources) == (
        "bin_overflow",
        "sanitation",
        "G1",
        "G1-M1",
        [f"citizen:{token}"],
    )
    # a second citizen a few metres away: the same ticket (dedup), said so
    r = api.post(
        "/requests.xml", data=report | {"api_key": secret("app"), "lat": "30.22012", "description": "again"}
    )
    [joined] = _xml_requests(r.content)
    assert (
        r.status_code == 201 and joined["service_request_id"] == rid and "joined" in joined["service_notice"]
    )
    assert gw.tickets.get(rid).count == 2
    assert api.get(f"/tokens/{token}.json").json() == [{"token": token, "service_request_id": rid}]

    [req] = api.get("/requests.json", params={"service_request_id": rid}).json()
    assert list(req) == list(REQUEST_FIELDS)
    assert (req["status"], req["service_code"], req["service_name"]) == (
        "open",
        "bin_overflow",
        "Overflowing bin",
    )
    assert (req["description"], req["address"], req["media_url"]) == (
        "Rubbish all over the pavement",
        "12 West Lake Road",
        "https://photos.example/1.jpg",
    )
    assert req["lat"] == pytest.approx(30.2201) and req["long"] == pytest.approx(120.1201)
    assert req["agency_responsible"] == "Sanitation" and req["requested_datetime"].endswith("+00:00")
    assert "citizen@example.org" not in json.dumps(req)  # contact details stay private
    [xreq] = _xml_requests(api.get(f"/requests/{rid}.xml").content)
    assert list(xreq) == list(REQUEST_FIELDS) and xreq["status"] == "open" and xreq["lat"] == str(req["lat"])
    assert api.get(f"/requests/{rid}.json").json() == [req]
    r = api.get("/requests/nope.json")
    assert r.status_code == 404 and r.json()[0]["code"] == 404
    assert [q["service_request_id"] for q in api.get("/requests.json", params={"status": "open"}).json()] == [
        rid
    ]
    assert api.get("/requests.json", params={"service_code": "ponding"}).json() == []
    assert api.get("/requests.json", params={"end_date": "2001-01-01T00:00:00Z"}).json() == []
    assert api.get("/requests.json", params={"status": "maybe"}).status_code == 400
    assert api.get("/requests.json", params={"start_date": "yesterday"}).status_code == 400

    # resolved and verified: closed for Open311
    staff = httpx.Client(base_url=gw.api_url or "", timeout=10)
    assert staff.post(f"/api/v1/tickets/{rid}/resolve", headers=auth("admin")).status_code == 200
    assert api.get(f"/requests/{rid}.json").json()[0]["status"] == "closed"
    assert staff.post(f"/api/v1/tickets/{rid}/close", headers=auth("cc")).status_code == 200
    closed = api.get("/requests.json", params={"status": "closed"}).json()
    assert [(q["service_request_id"], q["status"]) for q in closed] == [(rid, "closed")]
    assert closed[0]["status_notes"] == "Fixed and verified."
    assert api.get("/requests.json", params={"status": "open"}).json() == []
    [x] = _xml_requests(api.get("/requests.xml", params={"status": "closed"}).content)
    assert x["status"] == "closed"
