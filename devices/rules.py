"""Alarm and fault rules: thresholds with hysteresis, minimum and clear durations, severity steps.

Rules are deterministic: `step(rule, state, value, t)` depends only on its arguments (no clock,
no I/O), so tests drive hours of behaviour in milliseconds. It updates `state` in place because
it runs for every reading; `RuleState.to_dict`/`from_dict` let the gateway persist it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from devices.types import DeviceType
from gridgate.models import EventClass, Severity


class Direction(StrEnum):
    above = "above"  # raise when value >= raise_at, clear when value <= clear_at
    below = "below"  # raise when value < raise_at, clear when value >= clear_at
    true = "true"  # raise when the value is true, clear when false


class Change(StrEnum):
    raised = "raised"
    severity = "severity"
    cleared = "cleared"


@dataclass(frozen=True, slots=True)
class Rule:
    """One condition on one reading that raises and clears one kind of event."""

    kind: str
    field: str
    direction: Direction
    severity: Severity
    raise_at: float = 0.0
    clear_at: float = 0.0
    min_duration_s: float = 0.0
    clear_duration_s: float = 0.0
    # (threshold, severity) checked in order, the first one the value reaches wins; else `severity`
    steps: tuple[tuple[float, Severity], ...] = ()
    clear_inclusive: bool = True  # False: an `above` rule clears only strictly below clear_at
    enabled: bool = True
    event_class: EventClass = EventClass.alarm
    unit: str = ""
    label: str = ""  # what the condition means, for messages: "water on the road"

    def raising(self, value: float) -> bool:
        if self.direction is Direction.above:
            return value >= self.raise_at
        if self.direction is Direction.below:
            return value < self.raise_at
        return bool(value)

    def clearing(self, value: float) -> bool:
        if self.direction is Direction.above:
            return value <= self.clear_at if self.clear_inclusive else value < self.clear_at
        if self.direction is Direction.below:
            return value >= self.clear_at
        return not value

    def severity_for(self, value: float) -> Severity:
        for threshold, sev in self.steps:
            if (value < threshold) if self.direction is Direction.below else (value >= threshold):
                return sev
        return self.severity

    def check(self) -> str | None:
        """A reason the thresholds contradict each other, or None."""
        if self.direction is Direction.above and self.clear_at > self.raise_at:
            return (
                f"clear_at ({self.clear_at}) must be <= raise_at ({self.raise_at}) or the alarm never clears"
            )
        if self.direction is Direction.below and self.clear_at < self.raise_at:
            return (
                f"clear_at ({self.clear_at}) must be >= raise_at ({self.raise_at}) or the fault never clears"
            )
        if self.min_duration_s < 0 or self.clear_duration_s < 0:
            return "durations must be >= 0"
        return None


@dataclass(slots=True)
class RuleState:
    """Where one rule stands for one device; plain data so it round-trips through JSON."""

    active: bool = False
    severity: Severity | None = None
    pending_since: float | None = None  # when the raise condition started holding
    clearing_since: float | None = None  # when the clear condition started holding (while active)

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "severity": self.severity.value if self.severity else None,
            "pending_since": self.pending_since,
            "clearing_since": self.clearing_since,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleState:
        sev = data.get("severity")
        return cls(
            active=bool(data.get("active", False)),
            severity=Severity(sev) if sev else None,
            pending_since=data.get("pending_since"),
            clearing_since=data.get("clearing_since"),
        )


def step(rule: Rule, state: RuleState, value: float, t: float) -> Change | None:
    """Feed one value at time `t`; return what changed (raised, severity, cleared) or None."""
    if not state.active:
        if not rule.enabled or not rule.raising(value):
            state.pending_since = None
            return None
        if state.pending_since is None:
            state.pending_since = t
        if t - state.pending_since < rule.min_duration_s:
            return None
        state.active = True
        state.pending_since = None
        state.clearing_since = None
        state.severity = rule.severity_for(value)
        return Change.raised
    # active
    if not rule.enabled or rule.clearing(value):
        if state.clearing_since is None:
            state.clearing_since = t
        if rule.enabled and t - state.clearing_since < rule.clear_duration_s:
            return None
        state.active = False
        state.severity = None
        state.clearing_since = None
        return Change.cleared
    state.clearing_since = None
    # in the hysteresis band too: critical water that falls to 12 cm is major again
    sev = rule.severity_for(value)
    if sev != state.severity:
        state.severity = sev
        return Change.severity
    return None


# ---- defaults --------------------------------------------------------------------------------

_ALARMS: dict[DeviceType, tuple[Rule, ...]] = {
    DeviceType.manhole: (
        Rule("manhole_open", "open", Direction.true, Severity.critical, label="manhole cover open"),
        Rule(
            "manhole_tilt",
            "tilt_deg",
            Direction.above,
            Severity.major,
            raise_at=15,
            clear_at=5,
            unit="deg",
            label="manhole cover tilted",
        ),
        Rule(
            "gas_high",
            "gas_ch4_lel_pct",
            Direction.above,
            Severity.critical,
            raise_at=20,
            clear_at=10,
            unit="%LEL",
            label="methane in the manhole",
        ),
    ),
    DeviceType.bin: (
        Rule(
            "bin_full",
            "fill_pct",
            Direction.above,
            Severity.minor,
            raise_at=80,
            clear_at=50,
            unit="%",
            label="bin full",
        ),
        Rule(
            "bin_fire",
            "temperature_c",
            Direction.above,
            Severity.critical,
            raise_at=60,
            clear_at=45,
            unit="C",
            label="fire in the bin",
        ),
        Rule(
            "bin_fallen",
            "tilt_deg",
            Direction.above,
            Severity.major,
            raise_at=45,
            clear_at=20,
            unit="deg",
            label="bin fallen over",
        ),
    ),
    DeviceType.water_gauge: (
        Rule(
            "water_high",
            "water_level_cm",
            Direction.above,
            Severity.major,
            raise_at=15,
            clear_at=10,
            clear_inclusive=False,
            clear_duration_s=600,
            steps=((27, Severity.critical),),
            unit="cm",
            label="water on the road",
        ),
    ),
}

BATTERY_LOW = Rule(
    "battery_low",
    "battery_pct",
    Direction.below,
    Severity.minor,
    raise_at=20,
    clear_at=25,
    steps=((10, Severity.major),),
    event_class=EventClass.fault,
    unit="%",
    label="battery low",
)
TAMPER = Rule(
    "tamper",
    "tamper",
    Direction.true,
    Severity.major,
    event_class=EventClass.fault,
    label="device tampered with",
)

ALARM_KINDS: frozenset[str] = frozenset(r.kind for rules in _ALARMS.values() for r in rules)
FAULT_KINDS: frozenset[str] = frozenset(
    {"device_offline", "battery_low", "tamper", "sensor_fault", "stuck_sensor"}
)


def default_alarms(device_type: DeviceType) -> tuple[Rule, ...]:
    return _ALARMS[device_type]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything the engine needs to judge one device: its alarms, its fault rules, stuck watch."""

    alarms: tuple[Rule, ...]
    faults: tuple[Rule, ...] = (BATTERY_LOW, TAMPER)
    stuck_after_s: float = 24 * 3600.0
    stuck_fields: tuple[str, ...] = ()

    @property
    def threshold_rules(self) -> tuple[Rule, ...]:
        return self.alarms + self.faults


def override(rule: Rule, **changes: Any) -> Rule:
    """A copy of `rule` with the given fields changed (None values are ignored)."""
    return replace(rule, **{k: v for k, v in changes.items() if v is not None})
