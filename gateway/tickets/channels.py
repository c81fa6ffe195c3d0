"""The outbox's channels from config: every `tickets.webhooks` and `tickets.robots` entry."""

from __future__ import annotations

from collections.abc import Mapping
from zoneinfo import ZoneInfo

from gateway.tickets.quiet import QuietHours
from gateway.tickets.robots import RobotChannel
from gateway.tickets.webhook import Channel, RetryPolicy, WebhookChannel
from gridgate.config import GatewayConfig


def outbox_channels(
    cfg: GatewayConfig, grid_names: Mapping[str, str]
) -> tuple[list[tuple[Channel, RetryPolicy]], list[str]]:
    """The channels with their retry settings, and one problem per entry that cannot be built."""
    t = cfg.tickets
    tz = ZoneInfo(cfg.timezone)
    quiet = QuietHours(t.quiet_hours, cfg.timezone) if t.quiet_hours is not None else None
    out: list[tuple[Channel, RetryPolicy]] = []
    problems = []
    for i, w in enumerate(t.webhooks):
        try:
            out.append((WebhookChannel(w), w))
        except (ValueError, OSError) as exc:
            problems.append(f"tickets.webhooks[{i}]: {exc}")
    for i, r in enumerate(t.robots):
        try:
            robot = RobotChannel(r, tz, base_url=t.public_base_url, grid_names=grid_names, quiet=quiet)
            out.append((robot, r))
        except (ValueError, OSError) as exc:
            problems.append(f"tickets.robots[{i}] ({r.name}): {exc}")
    return out, problems
