"""Group robots end to end: a device uplink through Mosquitto and the gateway to local stand-ins
for WeCom, DingTalk and Feishu, with signatures recomputed here, vendor errors, and a restart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.service import Gateway
from gateway.tickets.quiet import QuietHours
from gateway.tickets.robots import RobotChannel
from gateway.tickets.service import TicketService
from gateway.tickets.webhook import DEAD, DELIVERED, HELD, OutboxNotifier, WebhookOutbox
from gridgate.clock import FakeClock
from gridgate.config import RemindersConfig, RobotConfig, StorageConfig
from tests.integration.spine_helpers import gateway_config
from tests.robot_receiver import RobotReceiver
from tests.servers import Collector, Mosquitto, pub, wait_until
from tests.ticket_helpers import CAMERA, ROUTING_FILE, event, grids, tickets_cfg

pytestmark = pytest.mark.integration

PUBLIC = "https://grid.example.cn"
DT_SECRET = "SEC0123456789abcdef-dingtalk"
FS_SECRET = "feishu-signing-secret-42"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def receiver() -> Iterator[RobotReceiver]:
    with RobotReceiver() as r:
        yield r


def robots(base: str) -> list[dict[str, Any]]:
    fast = {"base_url": base, "timeout_s": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2}
    return [
        {"name": "covers-wecom", "vendor": "wecom", "key": "wk-5f1c", **fast},
        {"name": "covers-ding", "vendor": "dingtalk", "key": "dt-9a7e", "secret": DT_SECRET, **fast},
        {"name": "covers-feishu", "vendor": "feishu", "key": "fs-hook-3b2d", "secret": FS_SECRET, **fast},
        {"name": "revoked", "vendor": "wecom", "key": "wk-revoked", **fast},
    ]


def config(tmp_path: Path, mosquitto: Mosquitto, base: str) -> Any:
    return gateway_config(
        tmp_path,
        mosquitto,
        {"api": "none"},
        tickets={
            "routing_file": ROUTING_FILE,
            "offline_grace_s": 0,
            "tick_s": 0.1,
            "public_base_url": PUBLIC,
            "robots": robots(base),
        },
    )


def b64_hmac(key: bytes, msg: bytes) -> str:
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def test_a_device_alarm_reaches_three_robots_signed_retried_and_once(
    mosquitto: Mosquitto, tmp_path: Path, receiver: RobotReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script["wecom"].append({"errcode": 45009, "errmsg": "api freq out of limit"})
    receiver.always["wk-revoked"] = {"errcode": 93000, "errmsg": "invalid webhook url"}
    cfg = config(tmp_path, mosquitto, receiver.url)
    caplog.set_level(logging.INFO, logger="gridgate")
    with Gateway(cfg) as gw:
        assert gw.tickets is not None
        pub(mosquitto, "gridgate/devices/manhole/MH-1/up", json.dumps({"ts": time.time(), "open": True}))
        wait_until(lambda: len(receiver.of("wecom", "wk-5f1c")) >= 2, 10, "WeCom retried after 45009")
        wait_until(lambda: receiver.of("dingtalk") and receiver.of("feishu"), 10, "DingTalk and Feishu")
        wait_until(lambda: receiver.of("wecom", "wk-revoked"), 10, "the revoked robot tried")
        [ticket] = gw.tickets.store.list_tickets()
        assert gw.outbox is not None
        wait_until(
            lambda: [r["status"] for r in gw.outbox.rows("robot:covers-wecom")] == [DELIVERED], 5, "delivered"
        )
        wait_until(lambda: gw.outbox.rows("robot:revoked", DEAD), 5, "the revoked robot's card dead")
        time.sleep(0.5)  # the revoked robot would retry by now, were it retried
        [dead] = gw.outbox.rows("robot:revoked")
        sent_before_restart = len(receiver.requests)
    link = f"{PUBLIC}/#ticket={ticket.id}"
    assert ticket.category == "manhole_open"

    # WeCom: markdown in Chinese with the link; first answer 45009 (rate limit) was retried
    first, second = receiver.of("wecom", "wk-5f1c")
    assert first.raw == second.raw
    content = second.body["markdown"]["content"]
    assert second.body["msgtype"] == "markdown"
    assert "新工单：井盖打开" in content and "【紧急】" in content and "Test grid" in content
    assert f"[查看工单]({link})" in content and ticket.id in content

    # DingTalk: actionCard to the ticket, signed in the query; recompute the signature here
    [ding] = receiver.of("dingtalk")
    assert ding.query["access_token"] == "dt-9a7e"
    ts = ding.query["timestamp"]
    assert abs(int(ts) / 1000 - time.time()) < 60
    assert ding.query["sign"] == b64_hmac(DT_SECRET.encode(), f"{ts}\n{DT_SECRET}".encode())
    card = ding.body["actionCard"]
    assert ding.body["msgtype"] == "actionCard" and card["singleURL"] == link
    assert "井盖打开" in card["title"] and "**网格**：Test grid" in card["text"]

    # Feishu: interactive card, timestamp (seconds, a string) and sign in the body
    [fs] = receiver.of("feishu")
    assert fs.path == "/open-apis/bot/v2/hook/fs-hook-3b2d"
    assert isinstance(fs.body["timestamp"], str) and abs(int(fs.body["timestamp"]) - time.time()) < 60
    assert fs.body["sign"] == b64_hmac(f"{fs.body['timestamp']}\n{FS_SECRET}".encode(), b"")
    assert fs.body["msg_type"] == "interactive"
    assert "井盖打开" in fs.body["card"]["header"]["title"]["content"]
    [button] = fs.body["card"]["elements"][1]["actions"]
    assert button["url"] == link and button["text"]["content"] == "查看工单"

    # a bad key (93000) is final: one attempt, dead in the outbox, logged without the key
    assert len(receiver.of("wecom", "wk-revoked")) == 1
    assert dead["status"] == DEAD and dead["attempts"] == 1
    assert "93000" in dead["last_error"] and "invalid webhook url" in dead["last_error"]
    assert "not retried" in dead["last_error"]
    [line] = [r.getMessage() for r in caplog.records if "event=webhook_dead_letter" in r.getMessage()]
    assert "endpoint=robot:revoked" in line and "93000" in line and "key=***" in line
    assert all("wk-revoked" not in r.getMessage() and DT_SECRET not in r.getMessage() for r in caplog.records)

    # a restart sends nothing again: every card is delivered (or dead) in the outbox
    with Gateway(cfg) as gw2:
        assert gw2.tickets is not None and len(gw2.tickets.store.list_tickets()) == 1
        time.sleep(1.0)
    assert len(receiver.requests) == sent_before_restart


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=SHANGHAI).timestamp()


def test_quiet_hours_hold_a_non_urgent_card_until_seven_and_urgent_ones_page_at_once(
    tmp_path: Path, receiver: RobotReceiver
) -> None:
    clock = FakeClock(local(2026, 12, 1, 23, 0))
    tcfg = tickets_cfg(routing_file=ROUTING_FILE, quiet_hours={"start": "22:00", "end": "07:00"})
    svc = TicketService.build(tcfg, StorageConfig(data_dir=tmp_path), grids(), clock)
    outbox = WebhookOutbox(svc.store.url)
    robot = RobotConfig(
        name="night", vendor="wecom", key="wk-night", base_url=receiver.url, backoff_base_s=0.05
    )
    assert tcfg.quiet_hours is not None
    channel = RobotChannel(
        robot, SHANGHAI, base_url=PUBLIC, quiet=QuietHours(tcfg.quiet_hours, "Asia/Shanghai")
    )
    notifier = OutboxNotifier(channel, robot, outbox, origin="gw-test", clock=clock).start()
    svc.add_notifier(notifier)
    try:
        svc.process([event("ponding", "camera:cam-1", clock.now(), CAMERA)])
        svc.process([event("manhole_open", "device:MH-1", clock.now(), (30.25, 120.15))])
        wait_until(
            lambda: [r["status"] for r in outbox.rows("robot:night")] == [HELD, DELIVERED],
            5,
            "the urgent card delivered, the other held",
        )
        time.sleep(1.0)
        [urgent] = receiver.of("wecom")
        assert "井盖打开" in urgent.body["markdown"]["content"]
        ponding = svc.store.list_tickets(category="ponding")[0]
        # the SLA clocks do not stop for the night: the deadlines are the routing's, from 23:00
        assert (ponding.accept_by, ponding.on_site_by) == (clock.now() + 60, clock.now() + 600)

        clock.t = local(2026, 12, 2, 6, 59)
        notifier.wake()
        time.sleep(1.5)
        assert len(receiver.of("wecom")) == 1  # still quiet at 06:59

        clock.t = local(2026, 12, 2, 7, 0)
        notifier.wake()
        wait_until(lambda: len(receiver.of("wecom")) == 2, 5, "the held card at 07:00")
        time.sleep(1.2)
        morning = receiver.of("wecom")
        assert len(morning) == 2 and "新工单：积水" in morning[1].body["markdown"]["content"]
        assert svc.get(ponding.id).accept_by == ponding.accept_by
    finally:
        notifier.stop()
        outbox.close()
        svc.stop()


def test_a_reminder_goes_on_the_team_topic_and_to_the_robot(
    mosquitto: Mosquitto, tmp_path: Path, receiver: RobotReceiver
) -> None:
    clock = FakeClock(time.time())
    cfg = config(tmp_path, mosquitto, receiver.url)
    cfg = cfg.model_copy(
        update={
            "tickets": cfg.tickets.model_copy(
                update={
                    "robots": [cfg.tickets.robots[0].model_copy(update={"teams": ["drainage"]})],
                    "reminders": RemindersConfig(every_min=5),
                }
            )
        }
    )
    with Collector.on(mosquitto, "gridgate/tickets/#") as col, Gateway(cfg, clock=clock) as gw:
        assert gw.tickets is not None
        gw.tickets.on_events([event("ponding", "camera:cam-1", clock.now(), CAMERA)])
        assert gw.tickets.drain(10)
        wait_until(lambda: receiver.of("wecom"), 10, "the created card")
        clock.advance(5 * 60)
        msgs = col.wait_for(lambda ms: any(m.json()["kind"] == "reminder" for m in ms), 10)
        wait_until(
            lambda: [r for r in receiver.of("wecom") if "催办" in r.raw.decode()], 10, "the reminder card"
        )
    [msg] = [m for m in msgs if m.json()["kind"] == "reminder"]
    body = msg.json()
    assert msg.topic == "gridgate/tickets/drainage"
    assert (body["reminder"], body["reason"], body["target"]["role"]) == (1, "not_accepted", "worker")
    cards = [r.body["markdown"]["content"] for r in receiver.of("wecom")]
    # the accept SLA ran out in the same 5 minutes: escalation goes on beside the reminder
    assert [c.split("\n")[0] for c in cards] == [
        "### 新工单：积水",
        "### 督办升级：积水",
        "### 第 1 次催办：积水尚未接单",
    ]
