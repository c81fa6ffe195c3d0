"""devices.yaml: loading, profiles, and errors that name the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.registry import DeviceRegistry, Profile, load_registry
from devices.types import Device, DeviceType
from gridgate.config import ConfigError
from gridgate.models import Severity

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "devices.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def problems(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    rendered = info.value.render()
    assert str(path) in rendered
    return rendered


def test_example_registry_loads() -> None:
    reg = load_registry(REPO / "config" / "devices.yaml")
    assert len(reg) >= 24
    types = {d.type for d in reg}
    assert types == set(DeviceType)
    for d in reg:
        assert 29.5 < d.lat < 31 and 119.5 < d.lon < 121
    low = next(d for d in reg if d.profile == "low_road")
    water = next(r for r in reg.rules_for(low).alarms if r.kind == "water_high")
    assert water.raise_at == 10
    assert any(d.codec == "manhole_binary" for d in reg)


def test_minimal_file_and_defaults(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, "devices:\n  - {id: BIN-1, type: bin, lat: 30.2, lon: 120.1}\n"))
    d = reg.get("BIN-1")
    assert d is not None and d.codec == "auto" and d.reporting_interval_s == 300 and d.bin_depth_cm == 100
    assert reg.get("nope") is None and "BIN-1" in reg and [x.id for x in reg] == ["BIN-1"]
    rs = reg.rules_for(d)
    assert [r.kind for r in rs.alarms] == ["bin_full", "bin_fire", "bin_fallen"]
    assert rs.stuck_fields == ("fill_pct",) and rs.stuck_after_s == 86_400


def test_empty_file_is_an_empty_registry(tmp_path: Path) -> None:
    assert len(load_registry(write(tmp_path, ""))) == 0


def test_profile_overrides(tmp_path: Path) -> None:
    reg = load_registry(
        write(
            tmp_path,
            """
profiles:
  strict:
    rules:
      manhole_tilt: {raise_at: 10, clear_at: 3, min_duration_s: 60, severity: critical}
      gas_high: {enabled: false}
      water_high: {severity_steps: {critical: 20, major: 12}}
    battery: {minor_below: 30, major_below: 15, clear_at: 40}
    stuck_after_s: 3600
    stuck_fields: []
devices:
  - {id: MH-1, type: manhole, lat: 30.2, lon: 120.1, profile: strict}
  - {id: WG-1, type: water_gauge, lat: 30.2, lon: 120.1, profile: strict}
""",
        )
    )
    mh = reg.rules_for(reg.get("MH-1"))  # type: ignore[arg-type]
    tilt = next(r for r in mh.alarms if r.kind == "manhole_tilt")
    assert (tilt.raise_at, tilt.clear_at, tilt.min_duration_s, tilt.severity) == (
        10,
        3,
        60,
        Severity.critical,
    )
    assert not next(r for r in mh.alarms if r.kind == "gas_high").enabled
    battery = next(r for r in mh.faults if r.kind == "battery_low")
    assert (battery.raise_at, battery.clear_at, battery.steps) == (30, 40, ((15, Severity.major),))
    assert mh.stuck_fields == () and mh.stuck_after_s == 3600
    wg = reg.rules_for(reg.get("WG-1"))  # type: ignore[arg-type]
    water = wg.alarms[0]
    assert water.steps == ((20, Severity.critical), (12, Severity.major))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "devices:\n  - {id: A, type: bin, lat: 30, lon: 120}\n"
            "  - {id: A, type: bin, lat: 30, lon: 120}\n",
            "devices[1].id: duplicate id 'A'",
        ),
        (
            "devices:\n  - {id: A, type: bin, lat: 30, lon: 120, profile: nope}\n",
            "devices[0].profile: unknown profile",
        ),
        ("devices:\n  - {id: A, type: toaster, lat: 30, lon: 120}\n", "devices[0].type"),
        ("devices:\n  - {id: A, type: bin, lat: 30, lon: 120, colour: red}\n", "devices[0].colour"),
        ("devices:\n  - {id: A, type: bin, lat: 95, lon: 120}\n", "devices[0].lat"),
        ("devices:\n  - {id: A, type: bin, lon: 120}\n", "devices[0].lat: Field required (add it)"),
        ("devices:\n  - {id: 'a/b', type: bin, lat: 30, lon: 120}\n", "devices[0].id"),
        (
            "devices:\n  - {id: A, type: bin, lat: 30, lon: 120, codec: morse}\n",
            "devices[0].codec: unknown codec",
        ),
        (
            "devices:\n  - {id: A, type: bin, lat: 30, lon: 120, reporting_interval_s: 0}\n",
            "reporting_interval_s",
        ),
        (
            "profiles:\n  p:\n    rules:\n      bin_overflowing: {raise_at: 3}\n",
            "profiles.p.rules.bin_overflowing",
        ),
        (
            "profiles:\n  p:\n    rules:\n      bin_full: {raise_at: 40}\n",
            "profiles.p.rules.bin_full: clear_at",
        ),
        (
            "profiles:\n  p:\n    rules:\n      bin_full: {threshold: 40}\n",
            "profiles.p.rules.bin_full.threshold",
        ),
        ("profiles:\n  p:\n    battery: {minor_below: 10, major_below: 20}\n", "profiles.p.battery"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("devices: [\n", "not valid YAML"),
    ],
)
def test_config_errors_name_field_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text)


def test_duplicate_error_says_how_to_fix(tmp_path: Path) -> None:
    text = "devices:\n" + "".join(f"  - {{id: D{i}, type: bin, lat: 30, lon: 120}}\n" for i in range(12))
    text += "  - {id: D3, type: bin, lat: 30, lon: 120}\n"
    rendered = problems(tmp_path, text)
    assert "devices[12].id" in rendered and "devices[3]" in rendered and "own id" in rendered


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_registry(tmp_path / "nope.yaml")


def test_from_devices() -> None:
    devices = [Device(id="WG-1", type="water_gauge", lat=30, lon=120, profile="low")]
    reg = DeviceRegistry.from_devices(
        devices, {"low": {"rules": {"water_high": {"raise_at": 10, "clear_at": 5}}}}
    )
    assert reg.rules_for(devices[0]).alarms[0].raise_at == 10
    with pytest.raises(ConfigError, match=r"devices\[0\].profile"):
        DeviceRegistry.from_devices(devices)


def test_platform_ids_find_their_device_and_are_unique() -> None:
    a = Device(
        id="MH-1", type="manhole", lat=30.2, lon=120.1, imei="862592051651472", dev_eui="70B3D57ED0000001"
    )
    b = Device(
        id="BIN-1", type="bin", lat=30.2, lon=120.1, ctwing_device_id="40edca19b0124480864366de4621de99"
    )
    reg = DeviceRegistry.from_devices([a, b])
    assert reg.lookup("dev_eui", "70b3d57ed0000001") is a  # DevEUIs compare without case
    assert reg.lookup("imei", "862592051651472") is a
    assert reg.lookup("ctwing_device_id", "40edca19b0124480864366de4621de99") is b
    assert reg.lookup("imei", "000000000000000") is None
    twin = Device(id="MH-2", type="manhole", lat=30.2, lon=120.1, dev_eui="70b3d57ed0000001")
    with pytest.raises(ConfigError, match=r"devices\[2\]\.dev_eui: .* already devices\[0\]'s"):
        DeviceRegistry.from_devices([a, b, twin])


def test_field_map_renames_and_scales_platform_properties() -> None:
    p = Profile.model_validate(
        {
            "field_map": {
                "liquid_level": {"field": "water_level_cm", "scale": 0.1},
                "Battery_Level": "battery_pct",
            }
        }
    )
    got = p.to_native({"liquid_level": 402, "Battery_Level": 100, "tilt_deg": 3.5, "odd": "x"})
    assert got == {"water_level_cm": pytest.approx(40.2), "battery_pct": 100, "tilt_deg": 3.5, "odd": "x"}
    # a value that is not a number is left for the decoder to reject with its field named
    assert p.to_native({"liquid_level": "high"}) == {"water_level_cm": "high"}
    # a mapped name wins over the platform sending gridgate's own name beside it
    assert p.to_native({"battery_pct": 5, "Battery_Level": 90}) == {"battery_pct": 90}
