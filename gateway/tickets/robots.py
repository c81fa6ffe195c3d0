"""Group-chat robots: WeCom (企业微信), DingTalk (钉钉) and Feishu/Lark (飞书) custom robots.

A robot is a webhook with a body formatter and a signer: a `RobotChannel` delivered by an
`OutboxNotifier`, sharing the webhooks' outbox, ordering, retries and dead letters; only the card,
the request and the reading of the answer differ. Quiet hours may hold its cards (`quiet.py`).

- WeCom: `POST {base}/cgi-bin/webhook/send?key=KEY`, a markdown message; no signature.
- DingTalk: `POST {base}/robot/send?access_token=KEY&timestamp=MS&sign=SIGN`, with
  SIGN = base64(HMAC-SHA256(key=secret, msg="{MS}\\n{secret}")) (URL-encoded in the query).
- Feishu: `POST {base}/open-apis/bot/v2/hook/KEY`, the body carrying `timestamp` (seconds, a string)
  and `sign` = base64(HMAC-SHA256(key="{timestamp}\\n{secret}", msg=b"")).

Each answers HTTP 200 with an error code in its JSON (`errcode` for WeCom and DingTalk, `code` for
Feishu): non-zero is a failure with the vendor's message; rate limits are retried, anything else
(bad key, bad signature, keyword or IP refused) is final. The key sits in the URL: logs, errors and
dead letters carry the URL with the key replaced by `***`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from gateway.tickets.cards import Card, card_of, dingtalk_body, feishu_body, wecom_body
from gateway.tickets.models import ChangeKind, TicketChange
from gateway.tickets.quiet import QuietHours, is_urgent
from gateway.tickets.webhook import (
    DELIVERED_OK,
    ChangeFilter,
    OutboxRow,
    Post,
    Verdict,
    http_verdict,
)
from gridgate.config import QuietHoursConfig, RobotConfig

REDACTED = "***"


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk's `sign` (before URL encoding): base64 HMAC-SHA256 of "{timestamp}\\n{secret}"."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """Feishu's `sign`: base64 HMAC-SHA256 keyed by "{timestamp}\\n{secret}" over an empty message."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True)
class Vendor:
    base_url: str
    path: str  # `{key}` where the key is part of the path
    key_param: str | None  # the query parameter holding the key, if it is not in the path
    code_fields: tuple[str, ...]  # where the answer's error code is, first found wins
    message_fields: tuple[str, ...]
    retryable: frozenset[int]  # error codes another attempt can fix (rate limits, busy)
    body: Callable[[Card], dict[str, Any]]


VENDORS: dict[str, Vendor] = {
    # 45009: api freq out of limit; -1: system busy. 93000: invalid webhook url (bad key)
    "wecom": Vendor(
        "https://qyapi.weixin.qq.com",
        "/cgi-bin/webhook/send",
        "key",
        ("errcode",),
        ("errmsg",),
        frozenset({45009, -1}),
        wecom_body,
    ),
    # 130101: sending too fast; -1: busy. 310000: sign, keyword or IP refused; 300001: bad token
    "dingtalk": Vendor(
        "https://oapi.dingtalk.com",
        "/robot/send",
        "access_token",
        ("errcode",),
        ("errmsg",),
        frozenset({130101, -1}),
        dingtalk_body,
    ),
    # 9499 and 11232: too many requests / frequency limited. 19021: bad sign; 19024: keyword; 19001: bad hook
    "feishu": Vendor(
        "https://open.feishu.cn",
        "/open-apis/bot/v2/hook/{key}",
        None,
        ("code", "StatusCode"),
        ("msg", "StatusMessage"),
        frozenset({9499, 11232}),
        feishu_body,
    ),
}


def vendor_answer(resp: httpx.Response, vendor: Vendor) -> tuple[int, str] | None:
    """(code, message) from a vendor's JSON answer; None if it is not one (a proxy's page)."""
    try:
        doc = resp.json()
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    code = next((doc[f] for f in vendor.code_fields if f in doc), None)
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    message = next((doc[f] for f in vendor.message_fields if f in doc), "")
    return code, str(message)[:200]


def robot_verdict(resp: httpx.Response, vendor_name: str) -> Verdict:
    """The vendor's code decides where there is one (even on a 4xx); else the HTTP status does."""
    answer = vendor_answer(resp, VENDORS[vendor_name])
    if answer is None:
        if 200 <= resp.status_code < 300:
            return Verdict(f"HTTP {resp.status_code} without a {vendor_name} answer: {resp.text[:200]!r}")
        return http_verdict(resp)
    code, message = answer
    if code == 0:
        return DELIVERED_OK
    final = code not in VENDORS[vendor_name].retryable
    return Verdict(f"{vendor_name} error {code}: {message} (HTTP {resp.status_code})", final)


KEY_CHARS = re.compile(r"[A-Za-z0-9_.~-]+")


def robot_key(cfg: RobotConfig) -> str:
    """The robot's key, refused (ValueError saying why) when it cannot be a webhook key."""
    key = cfg.key_value()
    if key.startswith(("http://", "https://")):
        raise ValueError(
            f"robot {cfg.name!r}: the key is a whole address; give only the part after "
            "key= (WeCom), access_token= (DingTalk) or /hook/ (Feishu)"
        )
    if not KEY_CHARS.fullmatch(key):
        raise ValueError(
            f"robot {cfg.name!r}: the key has characters a {cfg.vendor} key never has "
            "(only letters, digits and - _ . ~); check what was copied"
        )
    return key


class RobotChannel:
    """One `tickets.robots` entry: which changes, the card, the signed request, the answer."""

    dead_letter_reason = "robot_failed"

    def __init__(
        self,
        cfg: RobotConfig,
        tz: ZoneInfo,
        *,
        base_url: str | None = None,
        grid_names: Mapping[str, str] | None = None,
        quiet: QuietHours | None = None,
    ) -> None:
        self.cfg = cfg
        self.vendor = VENDORS[cfg.vendor]
        self.name = self.endpoint = f"robot:{cfg.name}"
        self.key = robot_key(cfg)
        self.secret = cfg.secret_value()
        self.tz = tz
        self.public_base_url = base_url
        self.grid_names = grid_names or {}
        self.quiet = quiet
        # marked 【紧急】 on the card: the quiet-hours rules, or their defaults without quiet hours
        self.urgent = (quiet.cfg if quiet else QuietHoursConfig()).urgent
        host = (cfg.base_url or self.vendor.base_url).rstrip("/")
        self.api_url = host + self.vendor.path.format(key=self.key)
        redacted_path = self.vendor.path.format(key=REDACTED)
        param = f"?{self.vendor.key_param}={REDACTED}" if self.vendor.key_param else ""
        self.url_for_logs = host + redacted_path + param
        self.filter = ChangeFilter.of(cfg.teams, cfg.categories, cfg.kinds, cfg.grids)

    def wants(self, change: TicketChange) -> bool:
        if change.kind is ChangeKind.updated and change.to_status is None:
            return False  # a count-only update: nothing a person must do, no page
        return self.filter.matches(change)

    def body(self, change: TicketChange) -> bytes:
        card = card_of(
            change,
            self.tz,
            base_url=self.public_base_url,
            grid_names=self.grid_names,
            urgent=is_urgent(change.ticket, self.urgent),
        )
        return orjson.dumps(self.vendor.body(card))

    def hold_until(self, change: TicketChange) -> float | None:
        return None if self.quiet is None else self.quiet.hold_until(change.ticket, change.at)

    def post(self, row: OutboxRow, attempt: int, now: float) -> Post:
        params: dict[str, str] = {}
        content = row.body
        if self.vendor.key_param:
            params[self.vendor.key_param] = self.key
        if self.secret is not None and self.cfg.vendor == "dingtalk":
            ts = str(int(now * 1000))
            params |= {"timestamp": ts, "sign": dingtalk_sign(self.secret, ts)}
        elif self.secret is not None and self.cfg.vendor == "feishu":
            ts = str(int(now))
            content = orjson.dumps(
                {"timestamp": ts, "sign": feishu_sign(self.secret, ts)} | orjson.loads(content)
            )
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "gridgate-robot/1"}
        return Post(str(httpx.URL(self.api_url, params=params)), headers, content)

    def verdict(self, resp: httpx.Response) -> Verdict:
        return robot_verdict(resp, self.cfg.vendor)

    def redact(self, text: str) -> str:
        for secret in (self.key, self.secret):
            if secret:
                text = text.replace(secret, REDACTED)
        return text
