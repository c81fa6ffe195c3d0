"""The device engine: readings and silence in, event state changes out."""

from __future__ import annotations

import orjson
import pytest

from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry
from devices.types import Device
from gridgate.clock import FakeClock
from gridgate.models import Event, EventClass, EventState, Reading, Severity

T0 = 1_800_000_000.0
MH = Device(id="MH-0001", type="manhole", lat=30.27, lon=120.15, name="Cover 1", address="12 Hubin Rd")
BIN = Device(id="BIN-0001", type="bin", lat=30.271, lon=120.151, bin_depth_cm=120)
WG = Device(id="WG-0001", type="water_gauge", lat=30.272, lon=120.152)
LOW = Device(id="WG-0002", type="water_gauge", lat=30.273, lon=120.153, profile="low_road")
PROFILES = {
    "low_road": {
        "rules": {"water_high": {"raise_at": 10, "clear_at": 6}},
        "battery": {"minor_below": 30, "major_below": 15, "clear_at": 35},
        "stuck_after_s": 3600,
    }
}


@pytest.fixture
def engine() -> DeviceEngine:
    return DeviceEngine(DeviceRegistry.from_devices([MH, BIN, WG, LOW], PROFILES), started_at=T0)


def send(engine: DeviceEngine, device: Device, t: float, **values: float | bool) -> list[Event]:
    _, events = engine.on_reading(device, Reading(device.id, device.type.value, t, dict(values)), t)
    return events


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.state.value) for e in events]


def test_normal_reading_gives_no_events(engine: DeviceEngine) -> None:
    assert send(engine, MH, T0, tilt_deg=1.0, open=False, battery_pct=90, fault_code=0) == []
    assert engine.last_seen(MH.id) == T0


def test_manhole_open_event_fields(engine: DeviceEngine) -> None:
    [ev] = send(engine, MH, T0 + 10, open=True, tilt_deg=2.0)
    assert ev.kind == "manhole_open" and ev.event_class is EventClass.alarm
    assert ev.severity is Severity.critical and ev.state is EventState.active
    assert ev.source == "device:MH-0001" and ev.dedup_key == "manhole_open:device:MH-0001"
    assert (ev.location.lat, ev.location.lon) == (30.27, 120.15)
    assert ev.started_at.timestamp() == T0 + 10 and ev.ended_at is None
    assert ev.measurements == {"open": True} and ev.value == 1.0
    assert "Cover 1" in ev.message and "12 Hubin Rd" in ev.message
    assert send(engine, MH, T0 + 20, open=True) == []  # still open: nothing new
    [cleared] = send(engine, MH, T0 + 30, open=False)
    assert cleared.id == ev.id and cleared.state is EventState.cleared
    assert cleared.ended_at.timestamp() == T0 + 30 and cleared.started_at == ev.started_at
    assert engine.active_events(MH.id) == []


def test_water_high_lifecycle_keeps_its_id(engine: DeviceEngine) -> None:
    [raised] = send(engine, WG, T0, water_level_cm=16)
    assert raised.severity is Severity.major
    [crit] = send(engine, WG, T0 + 300, water_level_cm=28)
    assert crit.id == raised.id and crit.state is EventState.active and crit.severity is Severity.critical
    assert crit.updated_at.timestamp() == T0 + 300 and crit.started_at == raised.started_at
    assert send(engine, WG, T0 + 600, water_level_cm=9) == []
    assert send(engine, WG, T0 + 900, water_level_cm=8) == []
    [cleared] = send(engine, WG, T0 + 1200, water_level_cm=7)
    assert cleared.id == raised.id and cleared.state is EventState.cleared


def test_impossible_tilt_is_a_sensor_fault_not_an_alarm(engine: DeviceEngine) -> None:
    cleaned, events = engine.on_reading(
        MH, Reading(MH.id, "manhole", T0, {"tilt_deg": 181.0, "battery_pct": 80}), T0
    )
    assert "tilt_deg" not in cleaned.values and cleaned.values["battery_pct"] == 80
    [ev] = events
    assert ev.kind == "sensor_fault" and ev.event_class is EventClass.fault
    assert ev.measurements == {"tilt_deg": 181.0}
    assert send(engine, MH, T0 + 60, tilt_deg=182.0) == []  # still faulty, already raised
    [cleared] = send(engine, MH, T0 + 120, tilt_deg=2.0)
    assert (cleared.kind, cleared.state, cleared.id) == ("sensor_fault", EventState.cleared, ev.id)


@pytest.mark.parametrize(
    ("device", "values", "field"),
    [
        (WG, {"water_level_cm": -3.0}, "water_level_cm"),
        (BIN, {"fill_pct": 104.0}, "fill_pct"),
        (BIN, {"fill_pct": -1.0}, "fill_pct"),
        (BIN, {"distance_cm": -5.0}, "distance_cm"),
        (BIN, {"temperature_c": 151.0}, "temperature_c"),
        (MH, {"temperature_c": -61.0}, "temperature_c"),
    ],
)
def test_impossible_values_are_dropped(
    engine: DeviceEngine, device: Device, values: dict[str, float], field: str
) -> None:
    cleaned, events = engine.on_reading(device, Reading(device.id, device.type.value, T0, values), T0)
    assert field not in cleaned.values
    assert kinds(events) == [("sensor_fault", "active")]
    assert events[0].measurements[field] == values[field]


def test_fault_code_is_a_sensor_fault(engine: DeviceEngine) -> None:
    [ev] = send(engine, MH, T0, fault_code=3, tilt_deg=1.0)
    assert ev.kind == "sensor_fault" and ev.measurements == {"fault_code": 3}
    assert kinds(send(engine, MH, T0 + 60, fault_code=0)) == [("sensor_fault", "cleared")]


def test_bin_distance_becomes_fill(engine: DeviceEngine) -> None:
    cleaned, events = engine.on_reading(BIN, Reading(BIN.id, "bin", T0, {"distance_cm": 18.0}), T0)
    assert cleaned.values["fill_pct"] == 85.0 and cleaned.values["distance_cm"] == 18.0
    assert kinds(events) == [("bin_full", "active")]
    cleaned, _ = engine.on_reading(BIN, Reading(BIN.id, "bin", T0 + 1, {"distance_cm": 500.0}), T0 + 1)
    assert cleaned.values["fill_pct"] == 0.0  # clamped


def test_bin_full_hysteresis_and_fire(engine: DeviceEngine) -> None:
    assert kinds(send(engine, BIN, T0, fill_pct=80)) == [("bin_full", "active")]
    assert send(engine, BIN, T0 + 1, fill_pct=60) == []
    assert kinds(send(engine, BIN, T0 + 2, fill_pct=50, temperature_c=65)) == [
        ("bin_full", "cleared"),
        ("bin_fire", "active"),
    ]
    assert kinds(send(engine, BIN, T0 + 3, tilt_deg=50)) == [("bin_fallen", "active")]


def test_gas_high(engine: DeviceEngine) -> None:
    [ev] = send(engine, MH, T0, gas_ch4_lel_pct=22.5)
    assert ev.kind == "gas_high" and ev.value == 22.5


def test_battery_low_faults(engine: DeviceEngine) -> None:
    [ev] = send(engine, WG, T0, battery_pct=19)
    assert (ev.kind, ev.severity, ev.event_class) == ("battery_low", Severity.minor, EventClass.fault)
    [ev2] = send(engine, WG, T0 + 1, battery_pct=9)
    assert ev2.id == ev.id and ev2.severity is Severity.major
    assert send(engine, WG, T0 + 2, battery_pct=24) != []  # back to minor
    assert kinds(send(engine, WG, T0 + 3, battery_pct=25)) == [("battery_low", "cleared")]


def test_tamper(engine: DeviceEngine) -> None:
    [ev] = send(engine, MH, T0, tamper=True)
    assert (ev.kind, ev.event_class) == ("tamper", EventClass.fault)
    assert kinds(send(engine, MH, T0 + 1, tamper=False)) == [("tamper", "cleared")]


def test_per_profile_override(engine: DeviceEngine) -> None:
    assert send(engine, WG, T0, water_level_cm=12) == []
    assert kinds(send(engine, LOW, T0, water_level_cm=12)) == [("water_high", "active")]
    assert kinds(send(engine, LOW, T0 + 1, battery_pct=28)) == [("battery_low", "active")]


def test_offline_after_two_and_a_half_intervals() -> None:
    clock = FakeClock(T0)
    engine = DeviceEngine(DeviceRegistry.from_devices([WG]), started_at=clock.now())
    engine.on_reading(WG, Reading(WG.id, "water_gauge", clock.now(), {"water_level_cm": 1}), clock.now())
    clock.advance(749)
    assert engine.check_silence(clock.now()) == []
    clock.advance(1)
    [ev] = engine.check_silence(clock.now())
    assert (ev.kind, ev.event_class, ev.state) == ("device_offline", EventClass.fault, EventState.active)
    assert ev.measurements["silent_s"] == 750
    clock.advance(3600)
    assert engine.check_silence(clock.now()) == []  # raised once, not every check
    _, events = engine.on_reading(
        WG, Reading(WG.id, "water_gauge", clock.now(), {"water_level_cm": 1}), clock.now()
    )
    assert kinds(events) == [("device_offline", "cleared")] and events[0].id == ev.id


def test_never_heard_devices_do_not_flood_at_start() -> None:
    devices = [Device(id=f"WG-{i:04d}", type="water_gauge", lat=30.27, lon=120.15) for i in range(50)]
    engine = DeviceEngine(DeviceRegistry.from_devices(devices), started_at=T0)
    assert engine.check_silence(T0) == []
    assert engine.check_silence(T0 + 749) == []
    assert len(engine.check_silence(T0 + 750)) == 50


def test_timer_starts_at_first_check_without_started_at() -> None:
    engine = DeviceEngine(DeviceRegistry.from_devices([WG]))
    assert engine.check_silence(T0) == []
    assert engine.check_silence(T0 + 749) == []
    assert kinds(engine.check_silence(T0 + 750)) == [("device_offline", "active")]


def test_reporting_interval_from_registry() -> None:
    fast = Device(id="WG-0009", type="water_gauge", lat=30.27, lon=120.15, reporting_interval_s=60)
    engine = DeviceEngine(DeviceRegistry.from_devices([fast]), started_at=T0)
    assert kinds(engine.check_silence(T0 + 150)) == [("device_offline", "active")]


def test_lwt_offline_and_online(engine: DeviceEngine) -> None:
    send(engine, MH, T0, tilt_deg=1.0)
    [ev] = engine.on_status(MH, False, T0 + 5)
    assert ev.kind == "device_offline" and ev.measurements["status"] == "offline"
    assert engine.on_status(MH, False, T0 + 6) == []
    assert [e for e in engine.check_silence(T0 + 10_000) if e.source == MH.source] == []  # already offline
    [back] = engine.on_status(MH, True, T0 + 20)
    assert back.id == ev.id and back.state is EventState.cleared
    assert engine.on_status(MH, True, T0 + 21) == []


def test_undecodable_uplink_keeps_device_online(engine: DeviceEngine) -> None:
    [ev] = engine.check_silence(T0 + 750)[:1]
    assert ev.kind == "device_offline"
    cleared = [e for e in engine.seen(MH, T0 + 800) if e.kind == "device_offline"]
    assert [e.state for e in cleared] == [EventState.cleared]


def test_stuck_sensor_on_readings_and_silence(engine: DeviceEngine) -> None:
    # the low_road profile says stuck after 1 h; the gauge reports every 300 s
    t = T0
    events: list[Event] = []
    while t < T0 + 3600:
        events += send(engine, LOW, t, water_level_cm=3.2)
        t += 300
    assert events == []
    [ev] = send(engine, LOW, t, water_level_cm=3.2)
    assert ev.kind == "stuck_sensor" and ev.measurements["water_level_cm"] == 3.2
    assert send(engine, LOW, t + 300, water_level_cm=3.2) == []
    assert kinds(send(engine, LOW, t + 600, water_level_cm=3.4)) == [("stuck_sensor", "cleared")]


def test_stuck_sensor_found_by_check_silence() -> None:
    dev = Device(id="WG-0003", type="water_gauge", lat=30.27, lon=120.15, reporting_interval_s=86_400)
    engine = DeviceEngine(DeviceRegistry.from_devices([dev]), started_at=T0)
    engine.on_reading(dev, Reading(dev.id, "water_gauge", T0, {"water_level_cm": 0.5}), T0)
    assert engine.check_silence(T0 + 86_399) == []
    assert kinds(engine.check_silence(T0 + 86_400)) == [("stuck_sensor", "active")]


def test_restore_from_snapshot_gives_no_duplicate(engine: DeviceEngine) -> None:
    [raised] = send(engine, WG, T0, water_level_cm=20, battery_pct=15)[:1]
    snap = orjson.loads(orjson.dumps(engine.snapshot(WG.id)))  # through JSON, as the gateway stores it
    fresh = DeviceEngine(DeviceRegistry.from_devices([MH, BIN, WG, LOW], PROFILES), started_at=T0 + 60)
    fresh.restore(WG.id, snap, now=T0 + 60)
    assert {e.kind for e in fresh.active_events(WG.id)} == {"water_high", "battery_low"}
    assert send(fresh, WG, T0 + 120, water_level_cm=22, battery_pct=15) == []
    assert fresh.last_seen(WG.id) == T0 + 120
    # and it clears the same event, with its id
    send(fresh, WG, T0 + 180, water_level_cm=5)
    [cleared] = send(fresh, WG, T0 + 800, water_level_cm=5)
    assert cleared.id == raised.id and cleared.state is EventState.cleared


def test_restore_restarts_the_offline_timer(engine: DeviceEngine) -> None:
    send(engine, WG, T0, water_level_cm=1)
    snap = engine.snapshot(WG.id)
    later = T0 + 7200  # the gateway was down for two hours
    fresh = DeviceEngine(DeviceRegistry.from_devices([WG]), started_at=later)
    fresh.restore(WG.id, snap, now=later)
    assert fresh.check_silence(later + 1) == []
    assert kinds(fresh.check_silence(later + 750)) == [("device_offline", "active")]


def test_snapshot_is_json_and_restore_of_unknown_device_is_ignored(engine: DeviceEngine) -> None:
    send(engine, MH, T0, open=True)
    data = engine.snapshot_all()
    orjson.dumps(data)
    engine.restore("GONE-1", {"v": 1})
    assert "GONE-1" not in set(engine.device_ids())


def test_out_of_order_reading_does_not_rewind(engine: DeviceEngine) -> None:
    send(engine, WG, T0 + 1000, water_level_cm=20)
    send(engine, WG, T0 + 1010, water_level_cm=5)
    # a buffered reading from before: the clear hold must not count backwards
    assert send(engine, WG, T0 + 500, water_level_cm=5) == []
    assert kinds(send(engine, WG, T0 + 1610, water_level_cm=5)) == [("water_high", "cleared")]


def test_all_active_events(engine: DeviceEngine) -> None:
    send(engine, MH, T0, open=True)
    send(engine, BIN, T0, fill_pct=90)
    assert {e.kind for e in engine.all_active_events()} == {"manhole_open", "bin_full"}


def test_replayed_old_readings_are_not_a_stuck_sensor() -> None:
    """A gauge uploads a buffer of readings measured 48 h ago: their age is not 'unchanged for 48 h'."""
    dev = Device(id="WG-0004", type="water_gauge", lat=30.27, lon=120.15, reporting_interval_s=172_800)
    engine = DeviceEngine(DeviceRegistry.from_devices([dev]), started_at=T0)
    now = T0 + 48 * 3600
    events: list[Event] = []
    for i, level in enumerate((10.0, 11.0, 12.0)):
        _, changed = engine.on_reading(
            dev, Reading(dev.id, "water_gauge", T0 + i * 300, {"water_level_cm": level}), now
        )
        events += changed
        events += engine.check_silence(now + 1)
    assert [e.kind for e in events] == []
    # on the device's clock 12.0 has been unchanged since T0 + 600: 24 h after that it is stuck
    quiet = now + 86_400 - 1  # receive time: the device's clock reads T0 + 600 + 86_399 s
    assert [e for e in engine.check_silence(quiet) if e.kind == "stuck_sensor"] == []
    assert [e.kind for e in engine.check_silence(quiet + 1) if e.kind == "stuck_sensor"] == ["stuck_sensor"]


def test_an_alarm_raised_again_after_a_crash_keeps_its_id(engine: DeviceEngine) -> None:
    """A journal replay re-raises what the last checkpoint missed: with the id it was published with."""
    snap = engine.snapshot(WG.id)
    [first] = [e for e in send(engine, WG, T0 + 10, water_level_cm=20) if e.kind == "water_high"]
    fresh = DeviceEngine(DeviceRegistry.from_devices([MH, BIN, WG, LOW], PROFILES), started_at=T0 + 30)
    fresh.restore(WG.id, snap)
    [again] = [e for e in send(fresh, WG, T0 + 10, water_level_cm=20) if e.kind == "water_high"]
    assert again.id == first.id and again.started_at == first.started_at


def test_an_engine_owning_a_share_watches_only_its_devices() -> None:
    devices = [Device(id=f"WG-{i}", type="water_gauge", lat=30.27, lon=120.15) for i in range(10)]
    mine = {"WG-1", "WG-4"}
    engine = DeviceEngine(DeviceRegistry.from_devices(devices), started_at=T0, owns=lambda d: d in mine)
    offline = engine.check_silence(T0 + 10 * 86_400)
    assert {e.source for e in offline} == {"device:WG-1", "device:WG-4"}


def test_never_heard_devices_go_offline_each_after_its_own_window() -> None:
    """Never-heard devices hold no state until they speak; their offline timers run from the start."""
    at = {"lat": 30.27, "lon": 120.15}
    fast = [Device(id=f"F-{i}", type="bin", reporting_interval_s=60, **at) for i in range(3)]
    slow = [Device(id=f"S-{i}", type="manhole", reporting_interval_s=600, **at) for i in range(3)]
    engine = DeviceEngine(DeviceRegistry.from_devices([*fast, *slow]), started_at=T0)
    send(engine, slow[0], T0 + 100, tilt_deg=1.0)  # heard: its timer restarts at T0 + 100
    assert engine.check_silence(T0 + 149) == []
    assert {e.source for e in engine.check_silence(T0 + 150)} == {d.source for d in fast}
    assert engine.check_silence(T0 + 1499) == []
    late = engine.check_silence(T0 + 1500)
    assert {e.source for e in late} == {"device:S-1", "device:S-2"}
    assert all(e.measurements["last_seen"] is None for e in late)
    assert kinds(engine.check_silence(T0 + 1600)) == [("device_offline", "active")]  # S-0, heard at +100
    assert sorted(engine.device_ids()) == sorted(d.id for d in [*fast, *slow])


def test_reload_tracks_new_devices_from_then_and_keeps_the_old_timers() -> None:
    old = Device(id="WG-0100", type="water_gauge", lat=30.27, lon=120.15)
    new = Device(id="WG-0101", type="water_gauge", lat=30.27, lon=120.15)
    engine = DeviceEngine(DeviceRegistry.from_devices([old]), started_at=T0)
    engine.reload(DeviceRegistry.from_devices([old, new]), T0 + 500)
    assert {e.source for e in engine.check_silence(T0 + 750)} == {old.source}
    assert {e.source for e in engine.check_silence(T0 + 1250)} == {new.source}


def test_idle_rules_keep_no_state_and_a_cleared_alarm_leaves_none() -> None:
    registry = DeviceRegistry.from_devices([WG])
    engine = DeviceEngine(registry, started_at=T0)
    send(engine, WG, T0, water_level_cm=1.0, battery_pct=90)
    assert engine.snapshot(WG.id)["rules"] == {}
    send(engine, WG, T0 + 60, water_level_cm=20.0)
    assert set(engine.snapshot(WG.id)["rules"]) == {"water_high"}
    send(engine, WG, T0 + 120, water_level_cm=1.0)
    assert kinds(send(engine, WG, T0 + 800, water_level_cm=1.0)) == [("water_high", "cleared")]
    assert engine.snapshot(WG.id)["rules"] == {}


def test_tracked_and_forgotten_devices_of_an_engine_that_owned_none() -> None:
    """As an ingest replica takes a bucket of devices, then hands it over."""
    devices = [Device(id=f"WG-2{i:03d}", type="water_gauge", lat=30.27, lon=120.15) for i in range(4)]
    engine = DeviceEngine(DeviceRegistry.from_devices(devices), owns=lambda _d: False)
    for d in devices[:3]:
        engine.track(d, T0 + 100)
    send(engine, devices[0], T0 + 200, water_level_cm=1.0)
    engine.forget([devices[2].id])
    assert engine.check_silence(T0 + 849) == []
    assert {e.source for e in engine.check_silence(T0 + 850)} == {devices[1].source}
    assert {e.source for e in engine.check_silence(T0 + 950)} == {devices[0].source}
    assert sorted(engine.device_ids()) == [devices[0].id, devices[1].id]
