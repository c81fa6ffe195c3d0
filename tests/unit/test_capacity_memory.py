"""Memory per registered device stays small: a city registers 100,000 (docs/operator-guide.md, Capacity).

Measured with tracemalloc on this code (2026-12-01), devices with names, addresses, teams and
IMEIs: ~1,060 B per registered device (registry and engine: the rule state waits until the device
reports), ~650 B of engine state once it has, and a peak of ~1,020 B per device while
devices.yaml is read. Before: ~1.4 KB more per device in the engine from the start, 728 B more
per Device (a fields-set of its own), and a ~7.7 KB/device peak while `yaml.safe_load` composed
the whole file. The bounds leave 30-75 % margin over the measurement.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ingest import devices_yaml
from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry, load_registry
from devices.types import Device
from gridgate.models import Reading

N = 10_000
T0 = 1_800_000_000.0
REGISTERED_BYTES_MAX = 1_400  # registry + engine, per device never heard from
HEARD_BYTES_MAX = 1_150  # engine state a device adds once heard
LOAD_PEAK_BYTES_MAX = 1_800  # the peak while devices.yaml is read and checked, per device


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def city(n: int) -> list[Device]:
    """Devices as a city's file describes them: names, addresses, teams, platform ids."""
    return [
        Device.model_validate(
            {
                "id": f"MH-{i:05d}",
                "type": "manhole",
                "lat": 30.2 + i * 1e-6,
                "lon": 120.1,
                "name": f"manhole {i}",
                "address": f"No. {i} Wensan Road",
                "imei": f"86{i:013d}",
                "maintenance_team": f"maint-{i % 7}",
                "reporting_interval_s": 600,
            }
        )
        for i in range(n)
    ]


def traced_bytes() -> int:
    return tracemalloc.get_traced_memory()[0]


def test_bytes_per_registered_and_per_heard_device(traced: None) -> None:
    before = traced_bytes()
    devices = city(N)
    engine = DeviceEngine(DeviceRegistry(devices, {}), started_at=T0)
    registered = (traced_bytes() - before) / N
    assert registered < REGISTERED_BYTES_MAX, f"{registered:.0f} B per registered device"
    engine.take_touched(), engine.take_views()
    before = traced_bytes()
    for d in devices:
        reading = Reading(d.id, "manhole", T0 + 1, {"tilt_deg": 1.5, "open": False, "battery_pct": 80.0})
        engine.on_reading(d, reading, T0 + 1)
    engine.take_touched(), engine.take_views()  # what a checkpoint and the API view take away
    heard = (traced_bytes() - before) / N
    assert heard < HEARD_BYTES_MAX, f"{heard:.0f} B of engine state per heard device"


def test_reading_devices_yaml_never_holds_the_whole_file_as_nodes(tmp_path: Path, traced: None) -> None:
    n = 3_000
    path = tmp_path / "devices.yaml"
    devices_yaml(path, n, realistic=True)
    tracemalloc.reset_peak()
    base = traced_bytes()
    registry = load_registry(path)
    peak = (tracemalloc.get_traced_memory()[1] - base) / n
    assert len(registry) == n and registry.lookup("imei", f"86{0:013d}") is not None
    assert peak < LOAD_PEAK_BYTES_MAX, f"{peak:.0f} B per device at the peak of load_registry"
