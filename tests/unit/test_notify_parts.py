"""The pure parts of paging: quiet hours, urgency, cards, vendor answers, signatures, config."""

from __future__ import annotations

import json
from datetime import datetime, time
from pathlib import Path
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.tickets.cards import card_of, feishu_body, plain, wecom_body
from gateway.tickets.channels import outbox_channels
from gateway.tickets.models import ChangeKind, Target, Ticket, TicketChange
from gateway.tickets.quiet import QuietHours, is_urgent, quiet_until
from gateway.tickets.robots import RobotChannel, dingtalk_sign, feishu_sign, robot_verdict
from gateway.tickets.webhook import HELD, OutboxRow, WebhookChannel, WebhookOutbox
from gridgate.config import (
    GatewayConfig,
    QuietHoursConfig,
    QuietWindow,
    RobotConfig,
    UrgentRule,
    WebhookConfig,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NIGHT = QuietWindow(start=time(22, 0), end=time(7, 0))


def at(h: int, m: int = 0, day: int = 1) -> float:
    return datetime(2026, 12, day, h, m, tzinfo=SHANGHAI).timestamp()


def ticket(**kw: object) -> Ticket:
    base: dict[str, object] = {
        "category": "ponding",
        "group": "standing_water",
        "grid_id": "G1",
        "team": "drainage",
        "dedup_key": "k",
        "first_seen": 0.0,
        "last_seen": 0.0,
        "created_at": 0.0,
        "updated_at": 0.0,
        "cycle_started_at": 0.0,
        "accept_by": 60.0,
        "on_site_by": 600.0,
        "resolve_by": 86400.0,
    }
    return Ticket(**(base | kw))


def created(t: Ticket, when: float = 0.0) -> TicketChange:
    return TicketChange(kind=ChangeKind.created, at=when, ticket=t, target=Target(team=t.team, person="w1"))


# ---- quiet hours ----------------------------------------------------------------------------------


def test_quiet_until_over_midnight() -> None:
    assert quiet_until(at(21, 59), NIGHT, SHANGHAI) is None
    assert quiet_until(at(22, 0), NIGHT, SHANGHAI) == at(7, 0, day=2)
    assert quiet_until(at(23, 0), NIGHT, SHANGHAI) == at(7, 0, day=2)
    assert quiet_until(at(3, 0, day=2), NIGHT, SHANGHAI) == at(7, 0, day=2)
    assert quiet_until(at(7, 0, day=2), NIGHT, SHANGHAI) is None
    day = QuietWindow(start=time(12, 0), end=time(14, 0))
    assert quiet_until(at(13, 0), day, SHANGHAI) == at(14, 0)
    assert quiet_until(at(11, 0), day, SHANGHAI) is None
    assert quiet_until(at(23, 0), QuietWindow(start=time(1, 0), end=time(1, 0)), SHANGHAI) is None


@settings(max_examples=300, deadline=None)
@given(
    when=st.floats(min_value=1.6e9, max_value=2.2e9),
    start=st.times(),
    end=st.times(),
    zone=st.sampled_from(["Asia/Shanghai", "UTC", "Europe/Berlin", "America/New_York"]),
)
def test_quiet_until_is_a_later_time_at_the_window_end(
    when: float, start: time, end: time, zone: str
) -> None:
    tz = ZoneInfo(zone)
    window = QuietWindow(start=start.replace(microsecond=0), end=end.replace(microsecond=0))
    until = quiet_until(when, window, tz)
    if until is None:
        return
    assert when < until <= when + 86_400 + 3_600
    if zone in ("Asia/Shanghai", "UTC"):  # no daylight saving: exact
        assert datetime.fromtimestamp(until, tz).time() == window.end
        assert quiet_until(until, window, tz) is None  # over at its end
        assert quiet_until(max(when, until - 1), window, tz) == until  # and quiet until then


def test_urgent_rules_by_category_and_severity() -> None:
    rules = QuietHoursConfig().urgent
    assert is_urgent(ticket(category="manhole_open", severity="minor"), rules)
    assert is_urgent(ticket(category="water_high", severity="critical"), rules)
    assert not is_urgent(ticket(category="water_high", severity="major"), rules)
    assert not is_urgent(ticket(category="ponding", severity="critical"), rules)
    assert is_urgent(ticket(category="ponding"), [UrgentRule(category="ponding", min_severity="minor")])


def test_a_category_may_have_its_own_window() -> None:
    cfg = QuietHoursConfig(by_category={"illegal_parking": QuietWindow(start=time(20, 0), end=time(8, 0))})
    quiet = QuietHours(cfg, "Asia/Shanghai")
    assert quiet.hold_until(ticket(category="illegal_parking"), at(21, 0)) == at(8, 0, day=2)
    assert quiet.hold_until(ticket(category="ponding"), at(21, 0)) is None
    assert quiet.hold_until(ticket(category="gas_high"), at(23, 0)) is None  # urgent


# ---- cards ----------------------------------------------------------------------------------------

MARKUP = set("[]()<>*_`#|~@!\\&\r\n\t")


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_outside_text_cannot_carry_markup_or_mentions(text: str) -> None:
    out = plain(text)
    assert not MARKUP & set(out)
    assert len(out) <= 120 and out.isprintable()


def test_a_hostile_title_cannot_forge_a_link_or_a_mention() -> None:
    t = ticket(title="[点我](https://evil.example) <@all> @all\n### 假标题")
    body = wecom_body(card_of(created(t), SHANGHAI, base_url="https://grid.example.cn"))
    content = body["markdown"]["content"]
    assert "https://evil.example)" not in content and "<@all>" not in content and "\n### 假" not in content
    assert content.count("](") == 1  # the ticket link only


def test_card_in_chinese_with_local_deadline_and_link() -> None:
    t = ticket(lat=30.22, lon=120.12, accept_by=at(23, 1), on_site_by=at(23, 10), resolve_by=at(23, 0, day=2))
    card = card_of(
        created(t, at(23, 0)), SHANGHAI, base_url="https://grid.example.cn/", grid_names={"G1": "西湖一网格"}
    )
    assert card.title == "新工单：积水" and card.link == f"https://grid.example.cn/#ticket={t.id}"
    facts = dict(card.lines)
    assert facts["类型"] == "积水" and facts["等级"] == "重要" and facts["网格"] == "西湖一网格"
    assert facts["接单时限"] == "12-01 23:01" and facts["状态"] == "新建"
    body = feishu_body(card)
    assert body["card"]["header"]["template"] == "blue" and body["msg_type"] == "interactive"


# ---- vendor answers and signatures -------------------------------------------------------------------


def answer(doc: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(doc).encode())


def test_vendor_codes_decide_retry() -> None:
    assert robot_verdict(answer({"errcode": 0, "errmsg": "ok"}), "wecom").error is None
    rate = robot_verdict(answer({"errcode": 45009, "errmsg": "api freq out of limit"}), "wecom")
    assert rate.error and "45009" in rate.error and not rate.final
    bad_key = robot_verdict(answer({"errcode": 93000, "errmsg": "invalid webhook url"}), "wecom")
    assert bad_key.final and "invalid webhook url" in (bad_key.error or "")
    assert not robot_verdict(answer({"errcode": 130101, "errmsg": "send too fast"}), "dingtalk").final
    assert robot_verdict(answer({"errcode": 310000, "errmsg": "sign not match"}), "dingtalk").final
    assert not robot_verdict(answer({"code": 9499, "msg": "too many request"}), "feishu").final
    assert robot_verdict(answer({"code": 19021, "msg": "sign match fail"}, 400), "feishu").final
    assert robot_verdict(answer({"StatusCode": 0, "StatusMessage": "success"}), "feishu").error is None
    # no vendor answer: a 200 from a proxy is retried, a 502 too, a 404 is not
    assert not robot_verdict(httpx.Response(200, content=b"<html>"), "wecom").final
    assert not robot_verdict(httpx.Response(502), "dingtalk").final
    assert robot_verdict(httpx.Response(404), "dingtalk").final


@settings(max_examples=300)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=10,
        ).map(lambda d: json.dumps(d).encode()),
    ),
    status=st.sampled_from([200, 400, 429, 500]),
    vendor=st.sampled_from(["wecom", "dingtalk", "feishu"]),
)
def test_any_answer_gets_a_verdict(body: bytes, status: int, vendor: str) -> None:
    v = robot_verdict(httpx.Response(status, content=body), vendor)
    assert v.error is None or isinstance(v.error, str)
    if v.error is None:
        assert status == 200  # delivered only on the vendor's own code 0


def test_signatures_match_published_examples() -> None:
    # DingTalk's worked example (timestamp 1700000000000, secret "secret"), URL-encoded as sent
    assert (
        quote_plus(dingtalk_sign("secret", "1700000000000"))
        == "OuzzJR5%2BxZ4%2FEYwqtNt6sMYZQMTa%2FHEGvc9miJe7XzY%3D"
    )
    # Feishu keys the HMAC with "{timestamp}\n{secret}" over an empty message: not DingTalk's scheme
    assert feishu_sign("secret", "1700000000") != dingtalk_sign("secret", "1700000000")


def robot(vendor: str, **kw: object) -> RobotChannel:
    cfg = RobotConfig(name="r", vendor=vendor, key="KEY-123", secret="SEC-456", **kw)  # type: ignore[arg-type]
    return RobotChannel(cfg, SHANGHAI)


def test_requests_and_logs_per_vendor() -> None:
    row = OutboxRow(1, "c1", "t1", "created", b'{"msg_type":"interactive"}', 0, 0.0)
    wecom = robot("wecom").post(row, 1, 1_700_000_000.5)
    assert wecom.url == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY-123"
    ding = httpx.URL(robot("dingtalk").post(row, 1, 1_700_000_000.5).url)
    assert ding.params["timestamp"] == "1700000000500" and ding.params["access_token"] == "KEY-123"
    assert ding.params["sign"] == dingtalk_sign("SEC-456", "1700000000500")
    fs = robot("feishu", base_url="https://open.larksuite.com").post(row, 1, 1_700_000_000.5)
    assert fs.url == "https://open.larksuite.com/open-apis/bot/v2/hook/KEY-123"
    assert json.loads(fs.content) == {
        "timestamp": "1700000000",
        "sign": feishu_sign("SEC-456", "1700000000"),
        "msg_type": "interactive",
    }
    for vendor in ("wecom", "dingtalk", "feishu"):
        ch = robot(vendor)
        assert "KEY-123" not in ch.url_for_logs and "***" in ch.url_for_logs
        assert ch.redact("refused https://x/?key=KEY-123 SEC-456") == "refused https://x/?key=*** ***"


def test_count_only_updates_do_not_page_and_filters_route() -> None:
    ch = robot("wecom", teams=["drainage"], grids=["G1-M1"])
    t = ticket(micro_grid_id="G1-M1")
    assert ch.wants(created(t))
    count_only = TicketChange(kind=ChangeKind.updated, at=0, ticket=t, target=Target(team="drainage"))
    assert not ch.wants(count_only)
    assert not ch.wants(created(ticket(micro_grid_id="G1-M2")))
    assert not ch.wants(created(ticket(team="sanitation", micro_grid_id="G1-M1")))
    # webhooks route by grid the same way (and take count-only updates: they are not pages)
    hook = WebhookChannel(WebhookConfig(name="city", url="https://x.example/h", grids=["G1"]))
    assert hook.wants(count_only) and not hook.wants(created(ticket(grid_id="G2")))


def test_config_says_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="give key, key_env or key_file"):
        RobotConfig(name="r", vendor="wecom")
    with pytest.raises(ValidationError, match="at most one of secret, secret_env, secret_file"):
        RobotConfig(name="r", vendor="feishu", key="k", secret="a", secret_env="B")
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        GatewayConfig(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="environment variable GG_NO_SUCH_KEY is not set"):
        RobotConfig(name="r", vendor="wecom", key_env="GG_NO_SUCH_KEY").key_value()
    assert GatewayConfig().timezone == "Asia/Shanghai"


def test_a_pasted_address_or_a_mangled_key_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="the key is a whole address; give only the part after key="):
        robot_with_key("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc")
    with pytest.raises(ValueError, match="characters a wecom key never has"):
        robot_with_key("abc/../x?y")


def robot_with_key(key: str) -> RobotChannel:
    return RobotChannel(RobotConfig(name="r", vendor="wecom", key=key), SHANGHAI)


def test_held_rows_wait_for_their_time_and_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/o.sqlite"
    change = created(ticket())
    outbox = WebhookOutbox(url)
    assert outbox.add("robot:r", "gw", change, b"{}", 1.0, hold_until=100.0)
    assert not outbox.add("robot:r", "gw", change, b"{}", 2.0)  # the same change: kept once
    outbox.close()
    outbox = WebhookOutbox(url)
    assert outbox.counts("robot:r") == {HELD: 1}
    with outbox.head("robot:r") as head:
        assert head is None
    assert outbox.release("robot:r", clock_now=99.0, now=5.0) == 0
    assert outbox.release("robot:r", clock_now=100.0, now=5.0) == 1
    with outbox.head("robot:r") as head:
        assert head is not None and (head.row.change_id, head.row.next_attempt_at) == (change.id, 5.0)
    outbox.close()


def test_every_broken_channel_is_named_in_the_config_problems() -> None:
    cfg = GatewayConfig(
        tickets={
            "webhooks": [{"name": "city", "url": "https://x.example/h", "secret_env": "GG_UNSET_HOOK"}],
            "robots": [
                {"name": "ok", "vendor": "wecom", "key": "abc"},
                {"name": "night", "vendor": "feishu", "key_env": "GG_UNSET_ROBOT"},
            ],
        }
    )
    channels, problems = outbox_channels(cfg, {})
    assert [c.endpoint for c, _ in channels] == ["robot:ok"]
    assert problems == [
        "tickets.webhooks[0]: webhook 'city': environment variable GG_UNSET_HOOK is not set",
        "tickets.robots[1] (night): robot 'night' key: environment variable GG_UNSET_ROBOT is not set",
    ]
