"""The device registry: `devices.yaml` with its profiles, validated with messages a person can act on.

```yaml
profiles:
  low_road:
    rules:
      water_high: {raise_at: 10, clear_at: 6}
devices:
  - {id: WG-0001, type: water_gauge, lat: 30.27, lon: 120.15, profile: low_road}
```
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.codecs import codec_names
from devices.rules import ALARM_KINDS, BATTERY_LOW, TAMPER, Rule, RuleSet, default_alarms, override
from devices.types import DEFAULT_STUCK_AFTER_S, DEFAULT_STUCK_FIELDS, Device, DeviceType
from gridgate.config import ConfigError, describe_validation_error
from gridgate.models import Severity
from gridgate.topics import topic_level_problem
from gridgate.yaml_items import read_yaml_items

OVERRIDABLE_KINDS: frozenset[str] = ALARM_KINDS | {BATTERY_LOW.kind, TAMPER.kind}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleOverride(_Strict):
    """Changes to one rule's defaults; fields left out keep the default."""

    raise_at: float | None = Field(None, description="threshold that raises the event")
    clear_at: float | None = Field(None, description="threshold that clears it (hysteresis below raise_at)")
    min_duration_s: float | None = Field(
        None, ge=0, description="raise only after the condition held this long"
    )
    clear_duration_s: float | None = Field(
        None, ge=0, description="clear only after the clear condition held this long"
    )
    severity: Severity | None = Field(None, description="severity when raised (info, minor, major, critical)")
    severity_steps: dict[Severity, float] | None = Field(
        None, description="higher severities by threshold, e.g. {critical: 27}; replaces the default steps"
    )
    enabled: bool | None = Field(None, description="false turns the rule off for devices with this profile")


class BatteryThresholds(_Strict):
    """When `battery_low` is raised (minor, then major) and cleared."""

    minor_below: float = Field(20, ge=0, le=100, description="battery % below which a minor fault is raised")
    major_below: float = Field(10, ge=0, le=100, description="battery % below which the fault becomes major")
    clear_at: float = Field(25, ge=0, le=100, description="battery % at or above which the fault clears")
    enabled: bool = Field(True, description="false turns battery_low off")


class Profile(_Strict):
    """Per-deployment tuning shared by many devices."""

    description: str | None = Field(None, description="what the profile is for")
    rules: dict[str, RuleOverride] = Field(
        default_factory=dict, description="overrides keyed by kind: manhole_tilt, bin_full, water_high, ..."
    )
    battery: BatteryThresholds | None = Field(None, description="battery_low thresholds")
    stuck_after_s: float | None = Field(None, gt=0, description="stuck_sensor after the same value this long")
    stuck_fields: list[str] | None = Field(
        None, description="readings watched for a stuck sensor; [] turns the check off"
    )
    field_map: dict[str, FieldMapping | str] = Field(
        default_factory=dict,
        description="a platform's decoded property name -> the gridgate field (or {field, scale, "
        "offset}), for CTWing object models, OneNET properties, ChirpStack `object` and TTS "
        "`decoded_payload`; names already gridgate's need no entry",
    )
    server_decoded: bool = Field(
        False,
        description="LoRaWAN: store the network server's decoded payload (ChirpStack `object`, TTS "
        "`decoded_payload`) even when the device's codec could read the FRMPayload bytes",
    )

    def to_native(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A platform's decoded properties as native JSON readings: mapped names, scaled numbers.

        Names without an entry are kept as they are (gridgate's own names pass; others are dropped
        later as undeclared and counted). The values are checked by `devices.codecs.decode` after.
        """
        out: dict[str, Any] = {}
        for name, value in obj.items():
            m = self.field_map.get(name)
            if m is None:
                out.setdefault(name, value)
                continue
            if isinstance(m, str):
                out[m] = value
                continue
            if type(value) in (int, float) and (m.scale != 1.0 or m.offset != 0.0):
                value = value * m.scale + m.offset  # anything else is left for decode to reject
            out[m.field] = value
        return out


class FieldMapping(_Strict):
    """How one field of a platform's decoded object becomes a gridgate reading."""

    field: str = Field(description="the gridgate field it becomes, e.g. water_level_cm")
    scale: float = Field(1.0, description="multiply the platform's value by this (e.g. 0.1 for mm to cm)")
    offset: float = Field(0.0, description="then add this")


class DevicesFile(_Strict):
    """`config/devices.yaml`."""

    profiles: dict[str, Profile] = Field(default_factory=dict, description="named rule profiles")
    devices: list[Device] = Field(default_factory=list, description="every device the gateway accepts")


def _steps(steps: dict[Severity, float] | None) -> tuple[tuple[float, Severity], ...] | None:
    if steps is None:
        return None
    rank = list(Severity)
    # the most severe step is checked first
    return tuple(
        (at, sev) for sev, at in sorted(steps.items(), key=lambda kv: rank.index(kv[0]), reverse=True)
    )


def _apply(rule: Rule, o: RuleOverride | None) -> Rule:
    if o is None:
        return rule
    return override(
        rule,
        raise_at=o.raise_at,
        clear_at=o.clear_at,
        min_duration_s=o.min_duration_s,
        clear_duration_s=o.clear_duration_s,
        severity=o.severity,
        steps=_steps(o.severity_steps),
        enabled=o.enabled,
    )


def build_ruleset(device_type: DeviceType, profile: Profile | None) -> RuleSet:
    """The defaults of a type with a profile's overrides applied."""
    p = profile or Profile()
    battery = BATTERY_LOW
    if p.battery is not None:
        b = p.battery
        battery = override(
            BATTERY_LOW,
            raise_at=b.minor_below,
            clear_at=b.clear_at,
            steps=((b.major_below, Severity.major),),
            enabled=b.enabled,
        )
    return RuleSet(
        alarms=tuple(_apply(r, p.rules.get(r.kind)) for r in default_alarms(device_type)),
        faults=(_apply(battery, p.rules.get(battery.kind)), _apply(TAMPER, p.rules.get(TAMPER.kind))),
        stuck_after_s=p.stuck_after_s if p.stuck_after_s is not None else DEFAULT_STUCK_AFTER_S,
        stuck_fields=tuple(p.stuck_fields)
        if p.stuck_fields is not None
        else DEFAULT_STUCK_FIELDS[device_type],
    )


def _problems(devices: list[Device], profiles: dict[str, Profile]) -> list[str]:
    problems: list[str] = []
    for name, prof in profiles.items():
        for kind in prof.rules:
            if kind not in OVERRIDABLE_KINDS:
                problems.append(
                    f"profiles.{name}.rules.{kind}: unknown rule kind "
                    f"(use one of: {', '.join(sorted(OVERRIDABLE_KINDS))})"
                )
        b = prof.battery
        if b is not None and not b.major_below <= b.minor_below <= b.clear_at:
            problems.append(
                f"profiles.{name}.battery: need major_below <= minor_below <= clear_at "
                f"(got {b.major_below}, {b.minor_below}, {b.clear_at})"
            )
        for dtype in DeviceType:
            rs = build_ruleset(dtype, prof)
            for rule in rs.threshold_rules:
                why = rule.check() if rule.kind in prof.rules else None
                if why:
                    problems.append(f"profiles.{name}.rules.{rule.kind}: {why}")
    known_codecs = codec_names()
    seen: dict[str, int] = {}
    aliases: dict[tuple[str, str], int] = {}
    for i, dev in enumerate(devices):
        if dev.id in seen:
            problems.append(
                f"devices[{i}].id: duplicate id {dev.id!r} (first at devices[{seen[dev.id]}]); "
                "give each device its own id"
            )
        else:
            seen[dev.id] = i
        # both become MQTT topic levels: {p}/devices/{type}/{id}/..., {p}/maintenance/{team}/faults
        for field, value in (("id", dev.id), ("maintenance_team", dev.maintenance_team)):
            problem = topic_level_problem(value) if value is not None else None
            if problem is not None:
                problems.append(f"devices[{i}].{field}: {problem}")
        if dev.profile is not None and dev.profile not in profiles:
            choices = ", ".join(sorted(profiles)) or "none defined"
            problems.append(
                f"devices[{i}].profile: unknown profile {dev.profile!r} "
                f"(define it under profiles: or use one of: {choices})"
            )
        for scheme in ALIASES:
            key = alias_key(scheme, getattr(dev, scheme))
            if key is None:
                continue
            first = aliases.setdefault(key, i)
            if first != i:
                problems.append(
                    f"devices[{i}].{scheme}: {getattr(dev, scheme)!r} is already devices[{first}]'s; "
                    "a platform id names one device"
                )
        if dev.codec not in known_codecs:
            problems.append(
                f"devices[{i}].codec: unknown codec {dev.codec!r} (use one of: {', '.join(known_codecs)})"
            )
    return list(dict.fromkeys(problems))  # a profile shared by types would repeat a problem


# the device fields a platform message names a device by (docs/platforms.md)
ALIASES = ("imei", "ctwing_device_id", "onenet_device", "dev_eui", "lorawan_device_id")


def alias_key(scheme: str, value: str | None) -> tuple[str, str] | None:
    """The lookup key of a platform id (DevEUIs compare without case)."""
    if value is None:
        return None
    return scheme, value.lower() if scheme == "dev_eui" else value


class DeviceRegistry:
    """Every known device by id, with the rules that apply to each."""

    def __init__(
        self,
        devices: Iterable[Device],
        profiles: dict[str, Profile] | None = None,
        source: str | Path = "<memory>",
    ) -> None:
        devs = list(devices)
        self.profiles: dict[str, Profile] = dict(profiles or {})
        self.source = str(source)
        problems = _problems(devs, self.profiles)
        if problems:
            raise ConfigError(source, problems)
        self._devices: dict[str, Device] = {d.id: d for d in devs}
        self._aliases: dict[tuple[str, str], Device] = {}
        for d in devs:
            for scheme in ALIASES:
                key = alias_key(scheme, getattr(d, scheme))
                if key is not None:
                    self._aliases[key] = d
        self._rules: dict[tuple[DeviceType, str | None], RuleSet] = {}

    @classmethod
    def from_devices(
        cls, devices: Iterable[Device], profiles: dict[str, Profile | dict[str, Any]] | None = None
    ) -> DeviceRegistry:
        """A registry without a file (tests, simulator); profiles may be given as plain dicts."""
        profs = {
            k: v if isinstance(v, Profile) else Profile.model_validate(v) for k, v in (profiles or {}).items()
        }
        return cls(devices, profs)

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def lookup(self, scheme: str, value: str) -> Device | None:
        """The device a platform names `value` under `scheme` (one of ALIASES), e.g. ("imei", "8625...")."""
        key = alias_key(scheme, value)
        return self._aliases.get(key) if key is not None else None

    def profile_of(self, device: Device) -> Profile | None:
        return self.profiles.get(device.profile) if device.profile else None

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def rules_for(self, device: Device) -> RuleSet:
        """The device type's default rules with its profile's overrides (cached per type+profile)."""
        key = (device.type, device.profile)
        rs = self._rules.get(key)
        if rs is None:
            rs = build_ruleset(device.type, self.profiles.get(device.profile) if device.profile else None)
            self._rules[key] = rs
        return rs


def load_registry(path: str | Path) -> DeviceRegistry:
    """Load and check `devices.yaml`; ConfigError names the file, the field path and the fix.

    Devices are validated one by one as the file is read (gridgate/yaml_items.py): a city's 100,000
    never sit in memory twice, as YAML nodes and as models."""
    devices: list[Device] = []
    problems: list[str] = []

    def add(index: int, raw: Any) -> None:
        try:
            devices.append(Device.model_validate(raw))
        except ValidationError as exc:
            problems.extend(describe_validation_error(path, exc, at=("devices", index)).problems)

    data, streamed = read_yaml_items(path, "devices", add)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, ["top level must be a mapping with `profiles:` and `devices:`"])
    try:
        parsed = DevicesFile.model_validate(data)  # the profiles; the devices too when not streamed
    except ValidationError as exc:
        problems[:0] = describe_validation_error(path, exc).problems
    if problems:
        raise ConfigError(path, problems)
    return DeviceRegistry(devices if streamed else parsed.devices, parsed.profiles, source=path)
