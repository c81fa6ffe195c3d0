"""Per-device state: readings in, event state changes out (alarms for the street, faults for maintenance).

Pure logic: time is passed in as epoch seconds. Rules run on the reading's own time (so buffered
uplinks are judged when they were measured); silence is judged on the receive time `now`.
Pydantic objects are built only when an event actually changes, so the per-reading path stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from devices.registry import DeviceRegistry
from devices.rules import Change, Direction, Rule, RuleSet, RuleState, step
from devices.types import OFFLINE_FACTOR, PHYSICAL_LIMITS, PHYSICAL_LIMITS_ITEMS, Device, DeviceType
from gridgate.models import Event, EventClass, EventState, Reading, Severity, event_id_for, utc

OFFLINE = "device_offline"
SENSOR_FAULT = "sensor_fault"
STUCK = "stuck_sensor"
SNAPSHOT_VERSION = 1
RECENT_UPLINKS = 16  # delivery keys kept per device: a network server redelivers within seconds

FAULT_SEVERITY = {OFFLINE: Severity.major, SENSOR_FAULT: Severity.major, STUCK: Severity.minor}


@dataclass(slots=True)
class _State:
    """One device heard from (or judged): kept small, a city has 100,000 of them."""

    device: Device
    rules: RuleSet
    window_s: float  # silence that makes the device offline
    deadline: float | None  # receive time at which silence becomes offline; None: timer not started
    last_seen: float | None = None
    last_t: float | None = None  # latest reading time the rules saw (they never run backwards)
    rule_states: dict[str, RuleState] = field(default_factory=dict)  # the rules not idle, by kind
    events: dict[str, Event] = field(default_factory=dict)  # active events by kind
    stuck: dict[str, list[Any]] = field(default_factory=dict)  # field -> [value, since]
    uplink_keys: list[str] = field(default_factory=list)  # the newest RECENT_UPLINKS delivery keys


def _where(device: Device) -> str:
    name = device.name or device.id
    return f"{name} ({device.address})" if device.address else name


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"


def _rule_message(rule: Rule, change: Change, value: Any, severity: Severity | None, device: Device) -> str:
    what = rule.label[:1].upper() + rule.label[1:] if rule.label else rule.kind
    at = _where(device)
    if rule.direction is Direction.true:
        return f"{what} at {at}" if change is not Change.cleared else f"{what}: cleared at {at}"
    unit = f" {rule.unit}" if rule.unit else ""
    reading = f"{rule.field} {_fmt(value)}{unit}"
    if change is Change.raised:
        cmp = "below" if rule.direction is Direction.below else "threshold"
        return f"{what} at {at}: {reading} ({cmp} {_fmt(rule.raise_at)}{unit})"
    if change is Change.severity:
        return f"{what} at {at} is now {severity}: {reading}"
    return f"{what}: cleared at {at}, {reading}"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class DeviceEngine:
    """Holds every device's rule states and active events; turns readings into event changes."""

    def __init__(
        self,
        registry: DeviceRegistry,
        started_at: float | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """`started_at` starts the offline timer of every registered device; None: at the first check.

        `owns` limits the engine to some devices (an ingest worker's share): only those are watched
        for silence; the others are someone else's and never declared offline here.
        """
        self.registry = registry
        self.started_at = started_at
        self.owns = owns
        self._states: dict[str, _State] = {}
        # watched devices without a state yet (never heard from): id -> their offline deadline (None:
        # set at the first check). Their state is made when anything happens to them, so 100,000
        # registered devices cost a dict entry each until they speak (`check_silence` still judges them)
        self._unheard: dict[str, float | None] = {}
        self._unheard_due = -float("inf")  # no unheard device's deadline is earlier than this
        self._touched: set[str] = set()  # devices whose state changed since `take_touched`
        self._unviewed: set[str] = set()  # devices whose state changed since `take_views`
        for device in registry:
            if owns is None or owns(device.id):
                self._unheard[device.id] = self._deadline(device, started_at)

    # ---- state keeping ------------------------------------------------------------------------

    @staticmethod
    def _deadline(device: Device, timer_from: float | None) -> float | None:
        return None if timer_from is None else timer_from + OFFLINE_FACTOR * device.reporting_interval_s

    def _new_state(self, device: Device, timer_from: float | None) -> _State:
        """The state of a device first heard of now; a registered one keeps its offline deadline."""
        if device.id in self._unheard:
            deadline = self._unheard.pop(device.id)
        else:
            deadline = self._deadline(device, timer_from)
        return _State(
            device=device,
            rules=self.registry.rules_for(device),
            window_s=OFFLINE_FACTOR * device.reporting_interval_s,
            deadline=deadline,
        )

    def _default_rules(self, device: Device) -> RuleSet:
        from devices.registry import build_ruleset

        return build_ruleset(
            device.type, self.registry.profiles.get(device.profile) if device.profile else None
        )

    def _touch(self, device_id: str) -> None:
        self._touched.add(device_id)
        self._unviewed.add(device_id)

    def _state(self, device: Device, now: float | None = None) -> _State:
        self._touch(device.id)
        st = self._states.get(device.id)
        if st is None:
            st = self._states[device.id] = self._new_state(device, now)
        elif st.device is not device:
            self._refresh(st, device)
        return st

    def _refresh(self, st: _State, device: Device) -> None:
        """The registry changed this device: new rules and position, state kept."""
        st.device = device
        st.rules = (
            self.registry.rules_for(device) if device.id in self.registry else self._default_rules(device)
        )
        st.window_s = OFFLINE_FACTOR * device.reporting_interval_s

    def track(self, device: Device, now: float) -> None:
        """Start watching a device (e.g. added to the registry at runtime); its offline timer starts now.

        A registered device never heard from gets no state until it is, as at start-up."""
        if device.id in self._states or self.registry.get(device.id) is not device:
            st = self._state(device, now)
            if st.deadline is None:
                st.deadline = now + st.window_s
            return
        if self._unheard.get(device.id) is None:
            deadline = now + OFFLINE_FACTOR * device.reporting_interval_s
            self._unheard[device.id] = deadline
            self._unheard_due = min(self._unheard_due, deadline)

    def reload(self, registry: DeviceRegistry, now: float) -> None:
        """Switch to a new registry: new devices are tracked from `now`, removed ones forgotten."""
        self.registry = registry
        keep = {}
        unheard: dict[str, float | None] = {}
        for device in registry:
            if self.owns is not None and not self.owns(device.id):
                continue
            st = self._states.get(device.id)
            if st is not None:
                self._refresh(st, device)
                keep[device.id] = st
            elif device.id in self._unheard:
                unheard[device.id] = self._unheard[device.id]
            else:
                unheard[device.id] = self._deadline(device, now)
        self._states = keep
        self._unheard = unheard
        self._unheard_due = -float("inf")

    def forget(self, device_ids: Iterable[str]) -> None:
        """Stop watching these devices (another ingest replica owns them now): no state, no offline."""
        for device_id in device_ids:
            self._states.pop(device_id, None)
            self._unheard.pop(device_id, None)
            self._touched.discard(device_id)
            self._unviewed.discard(device_id)

    # ---- events -------------------------------------------------------------------------------

    def _raise(
        self,
        st: _State,
        kind: str,
        event_class: EventClass,
        severity: Severity,
        t: float,
        value: float | None,
        measurements: dict[str, Any],
        message: str,
    ) -> Event:
        when = utc(t)
        source = st.device.source
        ev = Event(
            id=event_id_for(source, kind, t),
            kind=kind,
            event_class=event_class,
            source=source,
            location=st.device.location,
            severity=severity,
            state=EventState.active,
            started_at=when,
            updated_at=when,
            value=value,
            measurements=measurements,
            dedup_key=f"{kind}:{source}",
            message=message,
        )
        st.events[kind] = ev
        return ev

    def _update(
        self,
        st: _State,
        kind: str,
        severity: Severity,
        t: float,
        value: float | None,
        measurements: dict[str, Any],
        message: str,
    ) -> Event:
        ev = st.events[kind].model_copy(
            update={
                "severity": severity,
                "updated_at": utc(t),
                "value": value,
                "measurements": measurements,
                "message": message,
            }
        )
        st.events[kind] = ev
        return ev

    def _clear(
        self, st: _State, kind: str, t: float, value: float | None, measurements: dict[str, Any], message: str
    ) -> Event:
        old = st.events.pop(kind)
        when = utc(t)
        # a clear stamped before its raise (device clock behind) would make a negative duration
        if when < old.started_at:
            when = old.started_at
        return old.model_copy(
            update={
                "state": EventState.cleared,
                "ended_at": when,
                "updated_at": when,
                "value": value,
                "measurements": measurements,
                "message": message,
            }
        )

    # ---- readings -----------------------------------------------------------------------------

    def clean(self, device: Device, reading: Reading) -> tuple[Reading, dict[str, Any] | None]:
        """Drop impossible values, derive fill_pct from distance_cm; returns (reading, dropped values)."""
        values = reading.values
        bad: dict[str, Any] | None = None
        for name, lo, hi in PHYSICAL_LIMITS_ITEMS:
            v = values.get(name)
            if v is not None and not lo <= v <= hi:
                if bad is None:
                    bad = {}
                bad[name] = v
        cleaned = values if bad is None else {k: v for k, v in values.items() if k not in bad}
        if (
            device.type is DeviceType.bin
            and "distance_cm" in cleaned
            and "fill_pct" not in cleaned
            and (bad is None or "fill_pct" not in bad)
        ):
            depth = device.bin_depth_cm
            fill = (depth - cleaned["distance_cm"]) / depth * 100.0
            if cleaned is values:
                cleaned = dict(values)
            cleaned["fill_pct"] = round(min(100.0, max(0.0, fill)), 1)
        if cleaned is values:
            return reading, None
        return Reading(reading.device_id, reading.device_type, reading.ts, cleaned, reading.seq), bad

    def on_reading(self, device: Device, reading: Reading, now: float) -> tuple[Reading, list[Event]]:
        """Judge one decoded reading: the cleaned reading and the event changes it caused."""
        st = self._state(device, now)
        cleaned_reading, bad = self.clean(device, reading)
        values = cleaned_reading.values
        t = reading.ts
        if st.last_t is not None and t < st.last_t:
            t = st.last_t  # an out-of-order uplink must not rewind the duration timers
        st.last_t = t
        if st.last_seen is None or now > st.last_seen:
            st.last_seen = now
        self._heard(st, now)
        events: list[Event] = []
        active = st.events
        if OFFLINE in active:
            events.append(
                self._clear(
                    st, OFFLINE, now, None, {"status": "uplink"}, f"Device {_where(device)} is back online"
                )
            )
        rules = st.rules
        rule_states = st.rule_states
        for rule in rules.threshold_rules:
            v = values.get(rule.field)
            if v is None:
                continue
            rs = rule_states.get(rule.kind)
            if rs is None:
                rs = RuleState()
                change = step(rule, rs, v, t)
                if rs != _IDLE:  # an idle rule is kept as no entry at all
                    rule_states[rule.kind] = rs
            else:
                change = step(rule, rs, v, t)
                if rs == _IDLE:
                    del rule_states[rule.kind]
            if change is not None:
                ev = self._rule_event(st, rule, change, rs, v, t)
                if ev is not None:
                    events.append(ev)
        # sensor_fault: impossible values or a fault code
        fault_code = values.get("fault_code")
        if bad is not None or (fault_code is not None and fault_code != 0):
            if SENSOR_FAULT not in active:
                meas = dict(bad or {})
                if fault_code:
                    meas["fault_code"] = fault_code
                events.append(self._sensor_fault(st, t, meas))
        elif SENSOR_FAULT in active:
            events.append(
                self._clear(
                    st, SENSOR_FAULT, t, None, {}, f"Sensor fault cleared at {_where(device)}: readings valid"
                )
            )
        if rules.stuck_fields:
            ev = self._stuck_on_reading(st, values, t)
            if ev is not None:
                events.append(ev)
        return cleaned_reading, events

    def _rule_event(
        self, st: _State, rule: Rule, change: Change, rs: RuleState, v: Any, t: float
    ) -> Event | None:
        value = _num(v)
        meas: dict[str, Any] = {rule.field: v}
        if rule.direction is not Direction.true:
            meas["raise_at"] = rule.raise_at
            meas["clear_at"] = rule.clear_at
        msg = _rule_message(rule, change, v, rs.severity, st.device)
        if change is Change.raised:
            return self._raise(
                st, rule.kind, rule.event_class, rs.severity or rule.severity, t, value, meas, msg
            )
        if change is Change.severity:
            return self._update(st, rule.kind, rs.severity or rule.severity, t, value, meas, msg)
        if rule.kind not in st.events:
            return None  # a rule state restored without its event (old snapshot): nothing to clear
        return self._clear(st, rule.kind, t, value, meas, msg)

    def _sensor_fault(self, st: _State, t: float, meas: dict[str, Any]) -> Event:
        parts = []
        for name, v in meas.items():
            if name == "fault_code":
                parts.append(f"fault code {_fmt(v)}")
            else:
                lo, hi = PHYSICAL_LIMITS[name]
                parts.append(f"{name} {_fmt(v)} outside {lo:g}..{hi:g}")
        msg = f"Sensor fault at {_where(st.device)}: {', '.join(parts)}"
        value = next((_num(v) for v in meas.values()), None)
        return self._raise(
            st, SENSOR_FAULT, EventClass.fault, FAULT_SEVERITY[SENSOR_FAULT], t, value, meas, msg
        )

    def _stuck_on_reading(self, st: _State, values: dict[str, Any], t: float) -> Event | None:
        changed = False
        for name in st.rules.stuck_fields:
            v = values.get(name)
            if v is None:
                continue
            entry = st.stuck.get(name)
            if entry is None or entry[0] != v:
                st.stuck[name] = [v, t]
                changed = changed or entry is not None
        if STUCK in st.events:
            # it clears only when a value moves: a quiet clock comparison must never clear it
            if changed and not self._stuck_fields(st, t):
                return self._clear(
                    st, STUCK, t, None, {}, f"Stuck sensor cleared at {_where(st.device)}: the value changed"
                )
            return None
        stuck = self._stuck_fields(st, t)
        return self._stuck_event(st, stuck, t) if stuck else None

    def _stuck_fields(self, st: _State, t: float) -> list[str]:
        limit = st.rules.stuck_after_s
        return [
            name
            for name in st.rules.stuck_fields
            if (e := st.stuck.get(name)) is not None and t - e[1] >= limit
        ]

    def _stuck_event(self, st: _State, fields: list[str], t: float) -> Event:
        meas: dict[str, Any] = {name: st.stuck[name][0] for name in fields}
        since = min(st.stuck[name][1] for name in fields)
        meas["stuck_s"] = round(t - since)
        meas["since"] = utc(since).isoformat()
        listing = ", ".join(f"{name} = {_fmt(st.stuck[name][0])}" for name in fields)
        hours = (t - since) / 3600
        msg = f"Stuck sensor at {_where(st.device)}: {listing} unchanged for {hours:.1f} h"
        value = _num(st.stuck[fields[0]][0])
        return self._raise(st, STUCK, EventClass.fault, FAULT_SEVERITY[STUCK], t, value, meas, msg)

    # ---- status and silence ---------------------------------------------------------------------

    @staticmethod
    def _heard(st: _State, now: float) -> None:
        """An uplink at receive time `now` pushes the offline deadline out; a replayed older one never
        pulls it in (a journal replay after a crash must not make devices overdue)."""
        deadline = now + st.window_s
        if st.deadline is None or deadline > st.deadline:
            st.deadline = deadline

    def seen(self, device: Device, now: float) -> list[Event]:
        """An uplink that could not be decoded still proves the device is alive: reset its timer."""
        st = self._state(device, now)
        if st.last_seen is None or now > st.last_seen:
            st.last_seen = now
        self._heard(st, now)
        if OFFLINE in st.events:
            return [
                self._clear(
                    st, OFFLINE, now, None, {"status": "uplink"}, f"Device {_where(device)} is back online"
                )
            ]
        return []

    def first_delivery(self, device: Device, key: str) -> bool:
        """False when `key` (a network server's uplink id) is among the device's recent ones: the
        same uplink delivered again. The keys are the device's state: kept where its rules run."""
        keys = self._state(device).uplink_keys
        if key in keys:
            return False
        keys.append(key)
        del keys[:-RECENT_UPLINKS]
        return True

    def on_status(self, device: Device, online: bool, now: float) -> list[Event]:
        """An `online`/`offline` status (MQTT last will) from the device."""
        st = self._state(device, now)
        if online:
            st.last_seen = now if st.last_seen is None or now > st.last_seen else st.last_seen
            self._heard(st, now)
            if OFFLINE in st.events:
                return [
                    self._clear(
                        st,
                        OFFLINE,
                        now,
                        None,
                        {"status": "online"},
                        f"Device {_where(device)} is back online",
                    )
                ]
            return []
        if OFFLINE in st.events:
            return []
        meas: dict[str, Any] = {
            "status": "offline",
            "last_seen": utc(st.last_seen).isoformat() if st.last_seen else None,
        }
        msg = f"Device {_where(device)} offline: its status says offline (connection lost)"
        return [self._raise(st, OFFLINE, EventClass.fault, FAULT_SEVERITY[OFFLINE], now, None, meas, msg)]

    def check_silence(self, now: float) -> list[Event]:
        """Offline devices and stuck sensors whose time ran out with no reading; call periodically.

        Offline is judged on the receive time `now`. Stuck is judged on the device's own clock: the
        time of its latest reading plus the receive time that has passed since, so a device that
        uploads a buffer of old readings is not "unchanged for 48 h" because they were measured then.
        """
        self._judge_unheard(now)
        events: list[Event] = []
        for st in self._states.values():
            if st.deadline is None:
                st.deadline = now + st.window_s  # the timer starts at the first check
                continue
            active = st.events
            if now >= st.deadline:
                if OFFLINE not in active:
                    events.append(self._offline(st, now))
                    self._touch(st.device.id)
                continue
            if st.stuck and STUCK not in active and OFFLINE not in active and st.last_t is not None:
                device_now = st.last_t + max(0.0, now - (st.last_seen if st.last_seen is not None else now))
                stuck = self._stuck_fields(st, device_now)
                if stuck:
                    events.append(self._stuck_event(st, stuck, device_now))
                    self._touch(st.device.id)
        return events

    def _judge_unheard(self, now: float) -> None:
        """Never-heard devices whose deadline has passed get their state, for `check_silence` to judge.

        The rest are looked at again only once the earliest of their deadlines is due."""
        if now < self._unheard_due:
            return
        due = float("inf")
        expired: list[Device] = []
        for device_id, deadline in self._unheard.items():
            device = self.registry.get(device_id)
            if device is None:
                continue
            if deadline is None:  # the timer starts at the first check
                self._unheard[device_id] = deadline = self._deadline(device, now)
                assert deadline is not None
            if now >= deadline:
                expired.append(device)
            else:
                due = min(due, deadline)
        for device in expired:
            self._states[device.id] = self._new_state(device, now)
        self._unheard_due = due

    def _offline(self, st: _State, now: float) -> Event:
        interval = st.device.reporting_interval_s
        if st.last_seen is None:
            silent = st.window_s
            meas: dict[str, Any] = {"last_seen": None, "reporting_interval_s": interval}
            msg = f"Device {_where(st.device)} offline: never heard from (expected every {interval:g} s)"
        else:
            silent = now - st.last_seen
            meas = {
                "last_seen": utc(st.last_seen).isoformat(),
                "silent_s": round(silent),
                "reporting_interval_s": interval,
            }
            msg = (
                f"Device {_where(st.device)} offline: no uplink for {silent:.0f} s "
                f"(expected every {interval:g} s)"
            )
        return self._raise(
            st, OFFLINE, EventClass.fault, FAULT_SEVERITY[OFFLINE], now, round(silent, 1), meas, msg
        )

    # ---- queries and persistence ------------------------------------------------------------------

    def active_events(self, device_id: str) -> list[Event]:
        st = self._states.get(device_id)
        return list(st.events.values()) if st else []

    def all_active_events(self) -> list[Event]:
        return [ev for st in self._states.values() for ev in st.events.values()]

    def last_seen(self, device_id: str) -> float | None:
        st = self._states.get(device_id)
        return st.last_seen if st else None

    def device_ids(self) -> Iterable[str]:
        """Every device this engine watches or holds state for."""
        return [*self._states, *self._unheard]

    def take_touched(self) -> set[str]:
        """The devices whose state may have changed since the last call (what a checkpoint saves)."""
        touched, self._touched = self._touched, set()
        return touched

    def mark_touched(self, device_ids: Iterable[str]) -> None:
        """Put back what `take_touched` gave when saving it failed (still owned devices only)."""
        self._touched.update(d for d in device_ids if d in self._states)

    def take_views(self) -> dict[str, DeviceView]:
        """What the API shows of each device changed since the last call: last seen, active events."""
        views, self._unviewed = self._unviewed, set()
        return {d: DeviceView(st.last_seen, dict(st.events)) for d in views if (st := self._states.get(d))}

    def apply_view(self, device_id: str, view: DeviceView) -> None:
        """Mirror a device another engine (an ingest worker's) owns, for reading only."""
        device = self.registry.get(device_id)
        st = self._states.get(device_id)
        if st is None:
            if device is None:
                return
            st = self._states[device_id] = self._new_state(device, None)
        st.last_seen, st.events = view.last_seen, view.events

    def snapshot(self, device_id: str) -> dict[str, Any]:
        """Everything needed to resume this device after a restart, as JSON-ready plain data."""
        st = self._states.get(device_id)
        if st is None:
            return {"v": SNAPSHOT_VERSION}
        return {
            "v": SNAPSHOT_VERSION,
            "last_seen": st.last_seen,
            "deadline": st.deadline,
            "last_t": st.last_t,
            "rules": {kind: rs.to_dict() for kind, rs in st.rule_states.items() if rs != _IDLE},
            "events": {kind: ev.model_dump(mode="json") for kind, ev in st.events.items()},
            "stuck": {name: list(entry) for name, entry in st.stuck.items()},
            "uplink_keys": list(st.uplink_keys),
        }

    def restore(self, device_id: str, data: dict[str, Any], now: float | None = None) -> None:
        """Resume a device from `snapshot`; its offline timer restarts no earlier than `now`.

        Restarting the timer matters: after the gateway was down, every device would otherwise be
        overdue at once and flood the maintenance team with offline faults.
        """
        device = self.registry.get(device_id)
        st = self._states.get(device_id)
        if device is None and st is None:
            return  # the device left the registry while we were down
        if st is None:
            assert device is not None
            st = self._states[device_id] = self._new_state(device, now)
        st.last_seen = data.get("last_seen")
        st.last_t = data.get("last_t")
        deadline = data.get("deadline")
        floor = now if now is not None else self.started_at
        if floor is not None:
            deadline = max(deadline or -float("inf"), floor + st.window_s)
        st.deadline = deadline
        for kind, rs in (data.get("rules") or {}).items():
            st.rule_states[kind] = RuleState.from_dict(rs)
        st.events = {kind: Event.model_validate(ev) for kind, ev in (data.get("events") or {}).items()}
        st.stuck = {name: list(entry) for name, entry in (data.get("stuck") or {}).items()}
        st.uplink_keys = list(data.get("uplink_keys") or [])

    def snapshot_all(self) -> dict[str, dict[str, Any]]:
        return {device_id: self.snapshot(device_id) for device_id in self._states}

    def restore_all(self, data: dict[str, dict[str, Any]], now: float | None = None) -> None:
        for device_id, snap in data.items():
            self.restore(device_id, snap, now)


_IDLE = RuleState()


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A device as the API shows it, sent from the worker that owns it to the gateway process."""

    last_seen: float | None
    events: dict[str, Event]
