"""The street simulator: a deterministic, realistic mix of devices, uplinks, alarms and bad payloads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from devices.codecs import decode
from devices.codecs.errors import DecodeError, RejectReason
from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry, load_registry
from devices.simulator import ROLE_NORMAL, StreetSimulator, make_street, write_devices_yaml
from devices.types import DeviceType
from gridgate.config import LimitsConfig
from gridgate.topics import Topics

T0 = 1_800_000_000.0


def test_make_street_mix_ids_and_place() -> None:
    devices = make_street(100, seed=3)
    counts = Counter(d.type for d in devices)
    assert counts == {DeviceType.manhole: 40, DeviceType.bin: 35, DeviceType.water_gauge: 25}
    ids = [d.id for d in devices]
    assert len(set(ids)) == 100
    assert {"MH-0001", "BIN-0001", "WG-0001", "MH-0040", "WG-0025"} <= set(ids)
    assert all(abs(d.lat - 30.27) < 0.01 and abs(d.lon - 120.15) < 0.01 for d in devices)
    assert any(d.codec == "manhole_binary" for d in devices)
    assert make_street(100, seed=3) == devices
    assert make_street(100, seed=4) != devices


def test_make_street_in_a_bbox() -> None:
    box = (31.0, 121.0, 31.01, 121.02)
    devices = make_street(20, seed=1, bbox=box, reporting_interval_s=10)
    assert all(31.0 <= d.lat <= 31.01 and 121.0 <= d.lon <= 121.02 for d in devices)
    assert all(d.reporting_interval_s == 10 for d in devices)


def test_write_devices_yaml_round_trips(tmp_path: Path) -> None:
    devices = make_street(30, seed=2)
    path = write_devices_yaml(devices, tmp_path / "devices.yaml", {"deep": {"stuck_after_s": 100}})
    reg = load_registry(path)
    assert [d for d in reg] == devices and "deep" in reg.profiles


def run_street(minutes: int, n: int = 60, seed: int = 1) -> tuple[Counter, Counter, dict[str, str]]:
    devices = make_street(n, seed=seed)
    reg = DeviceRegistry.from_devices(devices)
    engine = DeviceEngine(reg, started_at=T0)
    sim = StreetSimulator(devices, seed=seed)
    topics, limits = Topics(), LimitsConfig()
    rejects: Counter = Counter()
    events: Counter = Counter()
    for step in range(0, minutes * 60, 30):
        now = T0 + step
        for topic, payload in sim.tick(now):
            parsed = topics.parse_device(topic)
            assert parsed is not None
            device = reg.get(parsed.device_id)
            assert device is not None and device.type.value == parsed.device_type
            if parsed.channel == "status":
                evs = engine.on_status(device, payload == b"online", now)
            else:
                try:
                    readings = decode(device.codec, payload, device, now, limits)
                except DecodeError as exc:
                    rejects[exc.reason] += 1
                    engine.seen(device, now)
                    continue
                evs = [e for r in readings for e in engine.on_reading(device, r, now)[1]]
            events.update((e.kind, e.state.value) for e in evs)
        events.update((e.kind, e.state.value) for e in engine.check_silence(now))
    return rejects, events, sim.roles


def test_a_street_produces_alarms_faults_and_rejects() -> None:
    rejects, events, roles = run_street(minutes=300)
    assert sum(1 for r in roles.values() if r != ROLE_NORMAL) >= 6
    for kind in ("bin_full", "water_high", "manhole_open", "manhole_tilt"):
        assert events[(kind, "active")] >= 1 and events[(kind, "cleared")] >= 1, kind
    for kind in ("battery_low", "device_offline", "sensor_fault"):
        assert events[(kind, "active")] >= 1, kind
    assert set(rejects) <= set(RejectReason) and len(rejects) >= 3
    total_rejects = sum(rejects.values())
    assert 0 < total_rejects < 200


def test_tick_is_deterministic_and_paced() -> None:
    devices = make_street(20, seed=5)
    a, b = StreetSimulator(devices, seed=5), StreetSimulator(devices, seed=5)
    first = a.tick(T0)
    assert first == b.tick(T0)
    assert len(first) == len(devices)  # everyone boots and reports
    assert a.tick(T0 + 1) == []  # nothing due a second later
    total = sum(len(a.tick(T0 + s)) for s in range(10, 3000, 10))
    assert 8 * len(devices) <= total <= 11 * len(devices)  # about one uplink per 300 s
    assert all(t.startswith("gridgate/devices/") for t, _ in first)
