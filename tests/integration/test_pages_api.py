"""The API the pages read and the photo upload, through a running gateway on a real broker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.service import Gateway
from tests.integration.spine_helpers import gateway_config
from tests.servers import Mosquitto
from tests.ticket_helpers import CAMERA, ROUTING_FILE, event, grid_doc

pytestmark = pytest.mark.integration

TOKENS = {
    "cc": {"role": "command_centre"},
    "worker-G1": {"role": "grid_worker", "grids": ["G1"]},
    "worker-G2": {"role": "grid_worker", "grids": ["G2"]},
    "drainage": {"role": "team", "team": "drainage"},
    "ro": {"role": "read_only"},
    "app": {"role": "reporter"},
}
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 500
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 500
MAX_PHOTO = 4096


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}-token-0123456789abcdef"}


@pytest.fixture
def gw(mosquitto: Mosquitto, tmp_path: Path, ticket_db_url: str) -> Iterator[Gateway]:
    """A gateway whose tickets (and their photos' list) are in SQLite, then in PostgreSQL."""
    grids = tmp_path / "ticket-grids.geojson"
    grids.write_text(json.dumps(grid_doc()))
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "none"},
        tickets={
            "routing_file": ROUTING_FILE,
            "database_url": ticket_db_url,
            "offline_grace_s": 0,
            "tick_s": 0.1,
            "update_coalesce_s": 0,
        },
        auth={"tokens": [{"name": n, "token": auth(n)["Authorization"][7:], **s} for n, s in TOKENS.items()]},
        limits={"max_photo_bytes": MAX_PHOTO, "max_photos_per_upload": 2, "max_photos_per_ticket": 3},
        map={"datum": "gcj02"},
    )
    with Gateway(cfg.model_copy(update={"grids_file": grids})) as gateway:
        yield gateway


@pytest.fixture
def api(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.api_url or "", timeout=10) as client:
        yield client


def ponding_ticket(gw: Gateway) -> str:
    """A ponding ticket in G1-M1 (team drainage), from a camera event."""
    assert gw.tickets is not None
    gw.tickets.on_events([event("ponding", "camera:cam-1", time.time(), CAMERA)])
    assert gw.tickets.drain(10)
    return gw.tickets.store.list_tickets()[0].id


def upload(
    api: httpx.Client, who: str, tid: str, photos: list[tuple[str, bytes]], **form: Any
) -> httpx.Response:
    files = [("photos", (name, data, "image/jpeg")) for name, data in photos]
    return api.post(f"/api/v1/tickets/{tid}/photos", files=files, data=form, headers=auth(who))


def snapshot(api: httpx.Client, tid: str) -> dict[str, Any]:
    d = api.get(f"/api/v1/tickets/{tid}", headers=auth("cc")).json()
    return {"ticket": d["ticket"], "history": d["history"], "photos": d["photos"]}


def test_photo_upload_limits_leave_a_refused_ticket_unchanged(gw: Gateway, api: httpx.Client) -> None:
    tid = ponding_ticket(gw)
    assert api.post(f"/api/v1/tickets/{tid}/accept", headers=auth("drainage")).status_code == 200
    before = snapshot(api, tid)
    refusals = [
        (
            upload(api, "drainage", tid, [("fake.jpg", b"GIF89a" + b"\x00" * 100)]),
            415,
            "not a JPEG, PNG or WebP",
        ),
        (
            upload(api, "drainage", tid, [("big.jpg", JPEG + b"\x00" * MAX_PHOTO)]),
            413,
            f"at most {MAX_PHOTO}",
        ),
        (upload(api, "drainage", tid, [("a.jpg", JPEG)] * 3), 413, "3 photos in one upload; at most 2"),
        (upload(api, "drainage", tid, [], resolve="true"), 422, "no photo"),
        (upload(api, "ro", tid, [("a.jpg", JPEG)]), 403, "may only read"),
        (upload(api, "worker-G2", tid, [("a.jpg", JPEG)]), 403, "is in grid 'G1'"),
        (upload(api, "drainage", "nope", [("a.jpg", JPEG)]), 404, "does not exist"),
    ]
    for r, status, says in refusals:
        assert r.status_code == status and says in r.json()["detail"], r.text
        assert snapshot(api, tid) == before
    # the body limit stops a huge upload before it is read: 413, unchanged
    huge = [("photos", (f"p{i}.jpg", JPEG + b"\x00" * MAX_PHOTO * 2, "image/jpeg")) for i in range(2)]
    r = api.post(f"/api/v1/tickets/{tid}/photos", files=huge, headers=auth("drainage"))
    assert r.status_code == 413 and snapshot(api, tid) == before
    assert not list((gw.cfg.storage.data_dir / "photos").glob("**/*.*"))

    # two photos resolve the ticket in one step, typed by their bytes
    r = upload(
        api, "drainage", tid, [("fix.jpg", JPEG), ("after.png", PNG)], resolve="true", note="pumped", by="li"
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ticket"]["status"] == "resolved"
    assert [p["content_type"] for p in body["photos"]] == ["image/jpeg", "image/png"]
    assert {p["actor"] for p in body["photos"]} == {"li@drainage"}
    detail = snapshot(api, tid)
    assert [p["name"] for p in detail["photos"]] == [p["name"] for p in body["photos"]]
    assert detail["history"][-1]["to_status"] == "resolved" and detail["history"][-1]["note"] == "pumped"
    # a resolved ticket cannot be resolved again: the photo is not kept either
    r = upload(api, "drainage", tid, [("again.jpg", JPEG)], resolve="true")
    assert r.status_code == 409 and snapshot(api, tid) == detail
    # the ticket's limit of 3: one more fits (as a comment), two more do not
    assert upload(api, "drainage", tid, [("a.jpg", JPEG), ("b.jpg", JPEG)]).status_code == 409
    r = upload(api, "drainage", tid, [("c.jpg", JPEG)])
    assert r.status_code == 201 and r.json()["ticket"]["status"] == "resolved"
    assert snapshot(api, tid)["history"][-1]["action"] == "comment"

    # served back through the API with the same role checks, typed as stored
    url = body["photos"][1]["url"]
    assert api.get(url).status_code == 401
    got = api.get(url, headers=auth("ro"))
    assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"
    assert (
        api.get(
            f"/api/v1/tickets/{tid}/photos/01HZZZZZZZZZZZZZZZZZZZZZZZ.jpg", headers=auth("ro")
        ).status_code
        == 404
    )
    assert len(api.get(f"/api/v1/tickets/{tid}/photos", headers=auth("ro")).json()) == 3
    # Open311 shows the first photo as the request's media_url
    req = api.get(f"/open311/v2/requests/{tid}.json", headers=auth("ro")).json()[0]
    assert req["media_url"] == str(api.base_url).rstrip("/") + body["photos"][0]["url"]


def test_pages_read_me_map_figures_and_my_tickets(gw: Gateway, api: httpx.Client) -> None:
    tid = ponding_ticket(gw)
    me = api.get("/api/v1/me", headers=auth("worker-G1")).json()
    assert (me["role"], me["grids"], me["can_write"]) == ("grid_worker", ["G1"], True)
    assert "accept" in me["actions"] and "close" not in me["actions"] and "drainage" in me["teams"]
    ro = api.get("/api/v1/me", headers=auth("ro")).json()
    assert (ro["can_write"], ro["actions"]) == (False, [])
    assert api.get("/api/v1/me").status_code == 401
    assert [t["id"] for t in api.get("/api/v1/me/tickets", headers=auth("worker-G1")).json()] == [tid]
    assert api.get("/api/v1/me/tickets", headers=auth("worker-G2")).json() == []
    assert [t["id"] for t in api.get("/api/v1/me/tickets", headers=auth("drainage")).json()] == [tid]

    assert api.get("/api/v1/map", headers=auth("ro")).json() == {
        "datum": "gcj02",
        "tiles": None,
        "tiles_attribution": "",
        "tiles_max_zoom": 19,
    }
    doc = api.get("/api/v1/map/grids", headers=auth("ro"))
    assert doc.headers["content-type"] == "application/geo+json"
    assert sorted(f["properties"]["id"] for f in doc.json()["features"]) == ["G1", "G1-M1", "G2"]

    def figures() -> dict[str, Any]:
        r = api.get("/api/v1/figures", params={"day_start": "2000-01-01T00:00:00Z"}, headers=auth("ro"))
        assert r.status_code == 200, r.text
        return r.json()

    f = figures()
    assert (f["open"], f["overdue"], f["due"], f["closed"], f["closure_rate_pct"]) == (1, 0, 1, 0, 0.0)
    assert f["events_today"] == {} and f["median_accept_s"] is None  # this event came in by hand
    for who, action in (
        ("drainage", "accept"),
        ("drainage", "arrive"),
        ("drainage", "resolve"),
        ("cc", "close"),
    ):
        assert api.post(f"/api/v1/tickets/{tid}/{action}", headers=auth(who)).status_code == 200
    f = figures()
    assert (f["open"], f["closed"], f["closed_on_time"]) == (0, 1, 1)
    assert (f["closure_rate_pct"], f["on_time_closure_rate_pct"], f["reopen_rate_pct"]) == (100.0, 100.0, 0.0)
    assert f["median_accept_s"] is not None and f["median_accept_s"] >= 0
    assert [(u["team"], u["due"], u["closed_on_time"]) for u in f["units"]] == [("drainage", 1, 1)]
    assert api.post(f"/api/v1/tickets/{tid}/reopen", headers=auth("cc")).status_code == 200
    assert figures()["reopen_rate_pct"] == 100.0

    # pages and their assets are served without a token; the data behind them is not
    for path, kind in (
        ("/", "text/html"),
        ("/m/", "text/html"),
        ("/m/manifest.webmanifest", "manifest+json"),
    ):
        r = api.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"], path
    leaflet = api.get("/vendor/leaflet/leaflet.js")
    assert leaflet.status_code == 200 and leaflet.headers["x-content-type-options"] == "nosniff"
    policy = api.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert api.get("/api/v1/cameras").status_code == 401
    assert api.get("/api/v1/cameras", headers=auth("ro")).json() == []


def test_open311_media_url_keeps_the_citizens_own_picture(gw: Gateway, api: httpx.Client) -> None:
    """A citizen's report names its picture; the worker's photo is the media_url only without one."""
    report = {"service_code": "bin_overflow", "lat": "30.2201", "long": "120.1201", "description": "rubbish"}
    own = report | {"media_url": "https://photos.example/1.jpg", "api_key": auth("app")["Authorization"][7:]}
    r = api.post("/open311/v2/requests.json", data=own)
    assert r.status_code == 201, r.text
    rid = r.json()[0]["service_request_id"]
    assert upload(api, "cc", rid, [("fix.jpg", JPEG)]).status_code == 201
    [req] = api.get(f"/open311/v2/requests/{rid}.json", headers=auth("ro")).json()
    assert req["media_url"] == "https://photos.example/1.jpg"
