"""Alert hygiene: a cause mutes its symptoms (inhibition), maintenance windows mute what they cover.

`inhibit` (the causes index), `desk` (the per-event decision, pure), `schedule` (when a window is
open, pure), `windows` (the windows and their audit trail in the ticket database). The gateway
process decides for every event change, whichever worker raised it, before anything sees it
(Gateway._remember): muted events are stored, streamed and published with `suppressed_by`, and the
ticket desk skips them. docs/alert-hygiene.md has the rules and their reasons.
"""

from __future__ import annotations

from collections.abc import Callable

from devices.registry import DeviceRegistry
from gateway.hygiene.desk import MAINTENANCE, HygieneDesk
from gateway.hygiene.inhibit import CauseIndex
from gateway.hygiene.windows import (
    MaintenanceWindow,
    MaintenanceWindows,
    Target,
    WindowNotEndable,
    WindowNotFound,
)
from gridgate.models import Event

__all__ = [
    "MAINTENANCE",
    "CauseIndex",
    "HygieneDesk",
    "MaintenanceWindow",
    "MaintenanceWindows",
    "Target",
    "WindowNotEndable",
    "WindowNotFound",
    "behind_of",
    "target_of",
]


def behind_of(registry: DeviceRegistry) -> Callable[[Event], str | None]:
    """The `behind:` of an event's device (devices.yaml), or None."""

    def behind(ev: Event) -> str | None:
        if ev.source_type != "device":
            return None
        device = registry.get(ev.source_id)
        return device.behind if device is not None else None

    return behind


def target_of(ev: Event, registry: DeviceRegistry) -> Target | None:
    """What a maintenance window would have to cover for `ev`; None for sources windows never
    cover (citizens' reports)."""
    kind = ev.source_type
    if kind == "device":
        device = registry.get(ev.source_id)
        if device is None:
            return None
        kind = device.type.value
    elif kind not in ("camera", "edge"):
        return None
    return Target(ev.source_id, kind, ev.grid_id, ev.micro_grid_id)
