"""The text of a ticket card for a group chat, in Chinese, and its shape per robot vendor. Pure.

Everything that came from outside (a ticket's title is an event's message, maybe a citizen's words)
is flattened to one line of at most 120 characters with markdown, mention and HTML syntax replaced
by full-width look-alikes, so a report cannot forge a link, a heading or an @all in a city's group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from gateway.tickets.models import ChangeKind, Ticket, TicketChange, Timer
from gateway.tickets.sla import RUNNING, deadline
from gateway.tickets.states import TicketStatus

CATEGORY_ZH = {
    "illegal_parking": "违停",
    "ponding": "积水",
    "water_high": "水位超高",
    "bin_full": "垃圾桶满",
    "bin_overflow": "垃圾满溢",
    "bin_fire": "垃圾桶起火",
    "bin_fallen": "垃圾桶倾倒",
    "manhole_open": "井盖打开",
    "manhole_tilt": "井盖倾斜",
    "gas_high": "气体超标",
    "device_offline": "设备离线",
    "battery_low": "设备电量低",
    "sensor_fault": "设备故障",
    "stuck_sensor": "传感器卡滞",
    "tamper": "设备被破坏",
}
SEVERITY_ZH = {"critical": "紧急", "major": "重要", "minor": "一般", "info": "提示"}
STATUS_ZH = {
    TicketStatus.new: "新建",
    TicketStatus.dispatched: "已派单",
    TicketStatus.accepted: "已接单",
    TicketStatus.on_site: "已到场",
    TicketStatus.resolved: "已办结（待核实）",
    TicketStatus.closed: "已结案",
    TicketStatus.cancelled: "已撤销",
    TicketStatus.reopened: "返工",
}
ROLE_ZH = {"worker": "网格员", "grid_head": "网格长", "leader": "挂包领导"}
TIMER_ZH = {Timer.accept: "接单时限", Timer.on_site: "到场时限", Timer.resolve: "办结时限"}
LINK_TEXT = "查看工单"
MAX_TEXT = 120
# markup of WeCom / DingTalk / Feishu markdown and lark_md, and mentions: their full-width twins
_FLATTEN = str.maketrans(
    {
        "[": "［",
        "]": "］",
        "(": "（",
        ")": "）",
        "<": "＜",
        ">": "＞",
        "*": "＊",
        "_": "＿",
        "`": "｀",
        "#": "＃",
        "|": "｜",
        "~": "～",
        "@": "＠",
        "!": "！",
        "\\": "＼",
        "&": "＆",
        "\r": " ",
        "\n": " ",
        "\t": " ",
    }
)


def plain(text: str, limit: int = MAX_TEXT) -> str:
    """One line of outside text, safe inside any vendor's markdown; cut at `limit` characters."""
    flat = "".join(ch for ch in text.translate(_FLATTEN) if ch.isprintable())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def ticket_link(base_url: str | None, ticket_id: str) -> str | None:
    """The dashboard's page of a ticket: `{base}/#ticket={id}`."""
    if base_url is None:
        return None
    return f"{base_url.rstrip('/')}/#ticket={quote(ticket_id, safe='')}"


@dataclass(frozen=True)
class Card:
    title: str
    lines: list[tuple[str, str]]
    link: str | None
    urgent: bool


def _headline(change: TicketChange, category: str) -> str:
    t = change.ticket
    if change.kind is ChangeKind.created:
        return f"新工单：{category}"
    if change.kind is ChangeKind.escalated:
        return f"督办升级：{category}"
    if change.kind is ChangeKind.reminder:
        if t.category == "device_offline":
            return f"第 {change.reminder} 次提醒：{category}仍未处理"
        return f"第 {change.reminder} 次催办：{category}尚未接单"
    if change.to_status is not None:
        return f"工单{STATUS_ZH[change.to_status]}：{category}"
    return f"工单更新：{category}"


def _next_deadline(t: Ticket) -> tuple[str, float] | None:
    running = [(deadline(t, timer), timer) for timer in Timer if t.status in RUNNING[timer]]
    if not running:
        return None
    at, timer = min(running, key=lambda x: x[0])
    return TIMER_ZH[timer], at


def card_of(
    change: TicketChange,
    tz: ZoneInfo,
    *,
    base_url: str | None = None,
    grid_names: Mapping[str, str] | None = None,
    urgent: bool = False,
) -> Card:
    """What a person reads about one change: headline, facts, and the link to the ticket."""
    t = change.ticket
    names = grid_names or {}
    category = CATEGORY_ZH.get(t.category, plain(t.category, 40))
    grid = plain(names.get(t.grid_id) or t.grid_id, 60)
    if t.micro_grid_id:
        grid += " / " + plain(names.get(t.micro_grid_id) or t.micro_grid_id, 60)

    def local(at: float) -> str:
        return datetime.fromtimestamp(at, tz).strftime("%m-%d %H:%M")

    lines = [
        ("类型", category),
        ("等级", SEVERITY_ZH.get(t.severity, plain(t.severity, 20))),
        ("状态", STATUS_ZH[t.status]),
        ("网格", grid),
    ]
    if t.lat is not None and t.lon is not None:
        lines.append(("位置", f"{t.lat:.5f}, {t.lon:.5f}"))
    if t.title and t.title != t.category:
        lines.append(("描述", plain(t.title)))
    who = change.target.person or "（未指定）"
    role = ROLE_ZH.get(change.target.role or "", "")
    lines.append(("处置", f"{plain(change.target.team, 40)} · {role}{plain(who, 40)}"))
    due = _next_deadline(t)
    if due is not None:
        label, at = due
        lines.append((label, local(at) + (" （已超时）" if at <= change.at else "")))
    lines.append(("工单号", t.id))
    return Card(
        title=("【紧急】" if urgent else "") + _headline(change, category),
        lines=lines,
        link=ticket_link(base_url, t.id),
        urgent=urgent,
    )


def _markdown_lines(card: Card, quote_prefix: str = "") -> str:
    return "\n".join(f"{quote_prefix}**{k}**：{v}" for k, v in card.lines)


def wecom_body(card: Card) -> dict[str, Any]:
    """企业微信群机器人 markdown (content up to 4096 bytes)."""
    text = f"### {card.title}\n{_markdown_lines(card, '> ')}"
    if card.link:
        text += f"\n[{LINK_TEXT}]({card.link})"
    return {"msgtype": "markdown", "markdown": {"content": text}}


def dingtalk_body(card: Card) -> dict[str, Any]:
    """钉钉自定义机器人: an actionCard with one button to the ticket, markdown without a link."""
    text = f"### {card.title}\n\n" + "\n\n".join(f"**{k}**：{v}" for k, v in card.lines)
    if card.link:
        return {
            "msgtype": "actionCard",
            "actionCard": {
                "title": card.title,
                "text": text,
                "btnOrientation": "0",
                "singleTitle": LINK_TEXT,
                "singleURL": card.link,
            },
        }
    return {"msgtype": "markdown", "markdown": {"title": card.title, "text": text}}


def feishu_body(card: Card) -> dict[str, Any]:
    """飞书自定义机器人 interactive card: a coloured header, the facts, a button to the ticket."""
    elements: list[dict[str, Any]] = [
        {"tag": "div", "text": {"tag": "lark_md", "content": _markdown_lines(card)}}
    ]
    if card.link:
        elements.append(
            {
                "tag": "action",
                "actions": [
                    {
                        "tag": "button",
                        "text": {"tag": "plain_text", "content": LINK_TEXT},
                        "type": "primary",
                        "url": card.link,
                    }
                ],
            }
        )
    return {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {
                "title": {"tag": "plain_text", "content": card.title},
                "template": "red" if card.urgent else "blue",
            },
            "elements": elements,
        },
    }
