"""The dashboard (`/`) and the grid worker's page (`/m/`) in real headless Chromium.

Debian's `chromium` driven by Playwright (never a downloaded browser) against a running gateway on
a real Mosquitto: the map draws the grids, an alert published with mosquitto_pub reaches the feed
within 2 s, a grid worker at a phone viewport accepts, arrives and resolves a ticket with a photo
and the board, the figures and the ticket's evidence follow, and a read-only token acts through
neither page. Screenshots of both pages land in the test's tmp dir, and in docs/screenshots/
(the README's) with GRIDGATE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.service import Gateway
from gateway.tickets.models import Ticket
from tests.integration.spine_helpers import gateway_config
from tests.servers import Mosquitto, pub, wait_until
from tests.ticket_helpers import ROUTING_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TOKENS = {
    "centre": {"role": "command_centre"},
    "worker-li": {"role": "grid_worker", "grids": ["G1"]},
    "screen": {"role": "read_only"},
}
DESKTOP = {"width": 1600, "height": 1250}
PHONE = {"width": 390, "height": 844}
PARKING_ID = "01JEDGEPARKING0000000000001"
BEHIND_S = 5  # the dashboard says it is behind when an alert arrives this late (dashboard.js)
NEAR_WG1 = {"latitude": 30.2403, "longitude": 120.1502, "accuracy": 12}  # about 35 m from the gauge


def secret(name: str) -> str:
    return f"{name}-token-0123456789abcdef"


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; `make test` does it as root)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright missing: pip install -e '.[dev]'"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def gw(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Gateway]:
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "none"},
        tickets={"routing_file": ROUTING_FILE, "offline_grace_s": 0, "tick_s": 0.2, "update_coalesce_s": 0},
        auth={"tokens": [{"name": n, "token": secret(n), **spec} for n, spec in TOKENS.items()]},
    )
    with Gateway(cfg) as gateway:
        yield gateway


def signed_in(browser: Any, who: str, **context: Any) -> Any:
    """A page whose browser already holds `who`'s token (as after signing in once)."""
    ctx = browser.new_context(**context)
    token = json.dumps(secret(who))
    ctx.add_init_script(f"if (location.protocol === 'http:') localStorage.setItem('gridgate.token', {token})")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the policy allows the gateway's own origin only: anything else a page loads is refused, and said
    page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
    page.errors = errors
    return page


def picture_from_the_browser(
    page: Any, text: str, width: int = 640, height: int = 360, kind: str = "image/jpeg"
) -> bytes:
    """A real picture (street colours and a caption), drawn on a canvas and encoded by Chromium."""
    data_url = page.evaluate(
        """([text, w, h, kind]) => {
            const c = document.createElement('canvas'); c.width = w; c.height = h;
            const g = c.getContext('2d');
            g.fillStyle = '#556b7d'; g.fillRect(0, 0, w, h);
            g.fillStyle = '#2f3b45'; g.fillRect(0, h * 0.6, w, h * 0.4);
            g.fillStyle = '#e8e8e8'; g.font = '32px sans-serif'; g.fillText(text, 24, 60);
            return c.toDataURL(kind, 0.8);
        }""",
        [text, width, height, kind],
    )
    return base64.b64decode(data_url.split(",", 1)[1])


def video_event(snapshot_bytes: int) -> str:
    """An edge box's illegal-parking event at a school gate in G1, with one snapshot."""
    now = datetime.now(UTC)
    started = now - timedelta(seconds=185)
    return json.dumps(
        {
            "edge_id": "edge-1",
            "camera_id": "cam-1",
            "seq": 1,
            "phase": "new",
            "event_id": PARKING_ID,
            "kind": "illegal_parking",
            "zone": "school-gate",
            "location": {"lat": 30.262, "lon": 120.128},
            "severity": "major",
            "confidence": 0.87,
            "started_at": started.isoformat(),
            "at": now.isoformat(),
            "measurements": {"dwell_s": 185.0, "track_id": 12},
            "evidence": [{"name": "stopped.jpg", "taken_at": started.isoformat(), "bytes": snapshot_bytes}],
        }
    )


def uplink(mosquitto: Mosquitto, dtype: str, device: str, **fields: Any) -> None:
    pub(mosquitto, f"gridgate/devices/{dtype}/{device}/up", json.dumps(fields))


def only_ticket(gw: Gateway, category: str) -> Ticket:
    assert gw.tickets is not None
    found: list[Ticket] = []

    def seen() -> bool:
        found[:] = [t for t in gw.tickets.store.list_tickets() if t.category == category]  # type: ignore[union-attr]
        return bool(found)

    wait_until(seen, timeout=10, what=f"a {category} ticket")
    return found[0]


def test_dashboard_and_grid_worker_pages(
    gw: Gateway, mosquitto: Mosquitto, browser: Any, tmp_path: Path
) -> None:
    api = httpx.Client(base_url=gw.api_url or "", headers={"Authorization": f"Bearer {secret('centre')}"})
    base = gw.api_url or ""
    dash = signed_in(browser, "centre", viewport=DESKTOP)
    dash.goto("about:blank")
    pub(mosquitto, "gridgate/edge/edge-1/frames/cam-1", picture_from_the_browser(dash, "cam-1 Qingchun Rd"))

    # the map renders the grids; the stream is live
    dash.goto(base + "/")
    dash.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert dash.locator("#map path.grid").count() == 1  # the test's one grid, G1
    assert dash.locator("#map path.device").count() == 6
    dash.wait_for_selector("[data-camera='cam-1'] img[src^='blob:']", timeout=5_000)
    dash.wait_for_selector("#stream-state.live", timeout=5_000)

    # an alert published with mosquitto_pub reaches the feed within 2 s
    started = time.monotonic()
    uplink(mosquitto, "water_gauge", "WG-1", ts=time.time() - 1200, water_level_cm=22)
    dash.wait_for_selector("#feed li[data-kind='water_high']", timeout=2_000)
    assert time.monotonic() - started < 2.0
    ticket = only_ticket(gw, "water_high")
    card = f"[data-ticket='{ticket.id}']"
    dash.wait_for_selector(f"#board [data-state='dispatched'] {card}", timeout=5_000)
    uplink(mosquitto, "bin", "BIN-1", ts=time.time(), fill_pct=96)  # about 1.9 km from the worker
    bin_id = only_ticket(gw, "bin_full").id
    dash.wait_for_selector("[data-figure='open'] .v >> text='2'", timeout=5_000)

    # the grid worker signs in on the phone page, then accepts, arrives and resolves with a photo
    phone_ctx = browser.new_context(
        viewport=PHONE,
        is_mobile=True,
        has_touch=True,
        locale="zh-CN",
        geolocation=NEAR_WG1,
        permissions=["geolocation"],
    )
    phone = phone_ctx.new_page()
    phone.goto(base + "/m/")
    phone.fill("#signin input", secret("worker-li"))
    phone.click("#signin button[type=submit]")
    phone.wait_for_selector("body[data-ready='1']", timeout=10_000)
    assert phone.evaluate("navigator.serviceWorker.ready.then(r => r.scope)") == base + "/m/"
    phone.wait_for_selector(f"{card} >> text=/距离 \\d+ m/", timeout=5_000)  # by the phone's GPS
    assert phone.eval_on_selector_all(".mcard", "cs => cs.map(c => c.dataset.ticket)") == [ticket.id, bin_id]
    assert "剩余" in phone.inner_text(f"{card} .clock")  # the SLA clock runs
    phone.click(f"{card} [data-action='accept']")
    phone.wait_for_selector(f"{card}[data-status='accepted']", timeout=5_000)
    phone.click(f"{card} [data-action='arrive']")
    phone.wait_for_selector(f"{card}[data-status='on_site']", timeout=5_000)
    phone.click(f"{card} [data-action='resolve']")
    photo = picture_from_the_browser(phone, "fixed: drain cleared")
    wide = picture_from_the_browser(phone, "the whole street", 4000, 1500, "image/png")  # a 6 MP camera
    phone.set_input_files(
        f"{card} input[name=photos]",
        files=[
            {"name": "fix.jpg", "mimeType": "image/jpeg", "buffer": photo},
            {"name": "street.png", "mimeType": "image/png", "buffer": wide},
        ],
    )
    phone.fill(f"{card} textarea", "排水口已疏通")
    assert phone.locator(f"{card} .photos img").count() == 2  # what will be sent, before it goes
    phone.screenshot(path=str(tmp_path / "worker-phone.png"), full_page=True)
    phone.click(f"{card} button[type=submit]")
    phone.wait_for_selector(card, state="detached", timeout=5_000)
    # no signal in the street: the installed page still opens (the service worker's copy)
    phone_ctx.set_offline(True)
    phone.reload()
    phone.wait_for_selector("h1 >> text='网格员工单'", timeout=5_000)
    phone_ctx.set_offline(False)

    detail = api.get(f"/api/v1/tickets/{ticket.id}").json()
    assert detail["ticket"]["status"] == "resolved"
    arrived = next(h for h in detail["history"] if h["to_status"] == "on_site")
    assert arrived["actor"] == "worker-li"
    assert arrived["detail"]["position"] == {"lat": 30.2403, "lon": 120.1502, "accuracy_m": 12.0}
    resolved = detail["history"][-1]
    assert resolved["note"] == "排水口已疏通"
    assert resolved["detail"]["photos"] == [p["name"] for p in detail["photos"]]
    # the small photo goes as it was; the wide one as a JPEG 2560 pixels long (the page shrinks it)
    small, shrunk = detail["photos"]
    assert api.get(small["url"]).content == photo
    assert (shrunk["filename"], shrunk["content_type"]) == ("street.jpg", "image/jpeg")

    # the board, the figures and the ticket's evidence follow on the dashboard
    dash.wait_for_selector(f"#board [data-state='resolved'] {card}", timeout=5_000)
    dash.wait_for_selector("[data-figure='open'] .v >> text='1'", timeout=5_000)
    dash.click(f"#board {card} .title")
    dash.wait_for_selector("#detail.show img.photo:nth-child(2)[src^='blob:']", timeout=5_000)
    widths = "[...document.querySelectorAll('#detail img.photo')].map(i => i.naturalWidth)"
    wait_until(lambda: dash.evaluate(widths) == [640, 2560], 5, "both photos shown")
    dash.click("#detail button")
    dash.click(f"#board [data-state='resolved'] {card} [data-action='close']")
    dash.wait_for_selector("[data-figure='closure_rate'] .v >> text='50%'", timeout=5_000)
    dash.wait_for_selector("#units tr[data-unit='drainage'] >> text='100%'", timeout=5_000)  # ranked first
    assert dash.get_attribute("#units tr[data-unit]", "data-unit") == "drainage"
    assert api.get(f"/api/v1/tickets/{ticket.id}").json()["ticket"]["status"] == "closed"

    # a video event shows its snapshot in the feed; more of the street for the screenshot
    snapshot = picture_from_the_browser(dash, "cam-1: parked 3 min")
    pub(mosquitto, f"gridgate/edge/edge-1/evidence/{PARKING_ID}/stopped.jpg", snapshot)
    pub(mosquitto, "gridgate/edge/edge-1/events", video_event(len(snapshot)))
    dash.wait_for_selector("#feed li[data-kind='illegal_parking'] img[src^='blob:']", timeout=5_000)
    # the event store keeps it at the next checkpoint: then the camera has a place and an alarm
    wait_until(lambda: api.get("/api/v1/cameras").json()[0]["lat"] == 30.262, 5, "cam-1's place")
    [camera] = api.get("/api/v1/cameras").json()
    assert (camera["state"], camera["edge_online"], camera["active_alarms"]) == ("ok", True, 1)
    uplink(mosquitto, "manhole", "MH-1", ts=time.time(), open=True, tilt_deg=2.0)
    dash.wait_for_selector("#feed li[data-kind='manhole_open']", timeout=5_000)
    open_id = only_ticket(gw, "manhole_open").id
    dash.wait_for_selector(f"#board [data-ticket='{open_id}']", timeout=5_000)
    # WGS-84 to GCJ-02 for a Chinese base map: the reference pair of npm coordtransform's README
    shifted = dash.evaluate("import('/js/datum.js').then(d => d.wgs84ToGcj02(39.915, 116.404))")
    assert shifted == pytest.approx([39.91640428150164, 116.41024449916938], abs=1e-9)
    dash.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # the centre reassigns to a known team and comments, through the board's buttons
    board_card = f"#board [data-ticket='{open_id}']"
    dash.click(f"{board_card} [data-action='reassign']")
    dash.select_option(f"{board_card} .inline select", "maintenance")
    dash.click(f"{board_card} .inline button")
    wait_until(lambda: api.get(f"/api/v1/tickets/{open_id}").json()["ticket"]["team"] == "maintenance", 5)
    dash.wait_for_selector(f"{board_card} >> text=/maintenance/", timeout=5_000)
    dash.click(f"{board_card} [data-action='comment']")
    dash.fill(f"{board_card} .inline input", "已通知养护班组")
    dash.click(f"{board_card} .inline button")

    def last_entry() -> dict[str, Any]:
        return api.get(f"/api/v1/tickets/{open_id}").json()["history"][-1]

    wait_until(lambda: last_entry()["note"] == "已通知养护班组", 5)
    assert last_entry()["actor"] == "centre"
    # device health filters by type and grid
    dash.select_option("#device-type", "bin")
    dash.locator("#devices tr[data-device]").nth(1).wait_for(state="detached", timeout=5_000)
    assert dash.locator("#devices tr[data-device='BIN-1']").count() == 1
    dash.select_option("#device-type", "")
    dash.select_option("#device-grid", "outside")
    dash.wait_for_selector("#devices tr[data-device='WG-OUT']", timeout=5_000)
    assert dash.locator("#devices tr[data-device]").count() == 1
    assert dash.errors == []

    # a read-only token sees both pages and can act through neither
    screen = signed_in(browser, "screen", viewport=DESKTOP)
    screen.goto(base + "/")
    screen.wait_for_selector(f"body[data-ready='1'] #board [data-ticket='{open_id}']", timeout=10_000)
    assert screen.locator("#board [data-action]").count() == 0
    screen.click("#lang")  # English, remembered
    screen.wait_for_selector("body[data-ready='1'] h1 >> text='Grid command centre'", timeout=10_000)
    screen_phone = signed_in(browser, "screen", viewport=PHONE, is_mobile=True)
    screen_phone.goto(base + "/m/")
    screen_phone.wait_for_selector(f"body[data-ready='1'] [data-ticket='{open_id}']", timeout=10_000)
    assert screen_phone.locator("#banner").is_visible()
    assert screen_phone.locator("[data-action]").count() == 0
    status = screen_phone.evaluate(
        """(id) => import('/js/api.js').then(api => api.post(`/api/v1/tickets/${id}/accept`))
            .then(() => 200, (err) => err.status)""",
        open_id,
    )
    assert status == 403
    assert api.get(f"/api/v1/tickets/{open_id}").json()["ticket"]["status"] == "dispatched"
    assert screen.errors == [] and screen_phone.errors == []

    # a box whose Last Will said offline: its cameras are offline too
    pub(mosquitto, "gridgate/edge/edge-1/status", "offline")
    wait_until(lambda: api.get("/api/v1/cameras").json()[0]["state"] == "offline", 5, "cam-1 offline")

    if os.environ.get("GRIDGATE_UPDATE_SCREENSHOTS") == "1":  # refresh the README's pictures
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("dashboard.png", "worker-phone.png"):
            shutil.copyfile(tmp_path / name, SCREENSHOTS / name)


def test_a_robot_cards_link_opens_its_ticket(gw: Gateway, mosquitto: Mosquitto, browser: Any) -> None:
    """Robot cards link to `{public_base_url}/#ticket={id}` (docs/notifications.md)."""
    uplink(mosquitto, "water_gauge", "WG-1", ts=time.time() - 1200, water_level_cm=22)
    ticket = only_ticket(gw, "water_high")
    page = signed_in(browser, "centre", viewport=DESKTOP)
    page.goto(f"{gw.api_url}/#ticket={ticket.id}")
    page.wait_for_selector(f"#detail.show[data-ticket='{ticket.id}']", timeout=10_000)
    assert ticket.id in page.inner_text("#detail")
    assert page.errors == []


def test_the_feed_reconnects_resumes_and_says_when_it_is_behind(
    gw: Gateway, mosquitto: Mosquitto, browser: Any
) -> None:
    """Playwright sits in the WebSocket's path: it cuts the connection and tells of a gap."""
    sockets: list[Any] = []

    def through(ws: Any) -> None:
        ws.connect_to_server()  # messages pass both ways untouched
        sockets.append(ws)

    uplink(mosquitto, "water_gauge", "WG-1", ts=time.time() - 1200, water_level_cm=22)
    wait_until(lambda: gw.stream.last_id, 5, "the alert in the stream's replay ring")
    time.sleep(BEHIND_S + 0.5)  # the alert is old when the page opens
    dash = signed_in(browser, "screen", viewport=DESKTOP)
    dash.route_web_socket(re.compile(r".*/api/v1/stream.*"), through)
    dash.goto((gw.api_url or "") + "/")
    dash.wait_for_selector("body[data-ready='1'] #stream-state.live", timeout=10_000)
    # a (re)loaded screen starts with the last quarter hour from the ring, and is not "behind"
    dash.wait_for_selector("#feed li[data-kind='water_high']", timeout=5_000)
    assert not dash.locator("#behind").is_visible()

    sockets[0].close(code=1012, reason="gateway restarting")
    dash.wait_for_selector("#stream-state.reconnecting", timeout=2_000)
    uplink(mosquitto, "bin", "BIN-1", ts=time.time(), fill_pct=96)  # while it is away, or just after
    dash.wait_for_selector("#stream-state.live", timeout=5_000)
    assert len(sockets) == 2 and "since_id=" in sockets[1].url  # resumed after the last message it had
    dash.wait_for_selector("#feed li[data-kind='bin_full']", timeout=5_000)
    assert dash.locator("#feed li[data-kind='water_high']").count() == 1  # nothing twice

    sockets[1].send(json.dumps({"type": "dropped", "count": 7, "last_id": 2}))
    dash.wait_for_selector("#behind.show >> text=/漏收 7 条/", timeout=2_000)
    assert "behind" in (dash.get_attribute("#stream-state", "class") or "")


def test_a_video_tickets_detail_plays_its_clip(gw: Gateway, mosquitto: Mosquitto, browser: Any) -> None:
    """The edge box's clip.mp4 shows on the ticket as a `<video controls>` beside the snapshots."""
    event = json.loads(video_event(4))
    event["evidence"].append({"name": "clip.mp4", "taken_at": event["started_at"], "bytes": 1024})
    folder = f"gridgate/edge/edge-1/evidence/{PARKING_ID}"
    pub(mosquitto, f"{folder}/stopped.jpg", b"\xff\xd8\xff\xd9")
    pub(mosquitto, f"{folder}/clip.mp4", b"\0\0\0\x18ftypisom" + bytes(1012))
    pub(mosquitto, "gridgate/edge/edge-1/events", json.dumps(event))
    ticket = only_ticket(gw, "illegal_parking")
    page = signed_in(browser, "centre", viewport=DESKTOP)
    page.goto(f"{gw.api_url}/#ticket={ticket.id}")
    page.wait_for_selector("#detail.show video.clip[controls][src^='blob:']", timeout=10_000)
    assert page.locator("#detail video.clip").count() == 1
