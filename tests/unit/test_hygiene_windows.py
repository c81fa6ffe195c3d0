"""Maintenance windows in a real SQLite ticket database: create, end, audit trail, expiry, replicas."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.hygiene import MaintenanceWindows, Target, WindowNotEndable, WindowNotFound
from gridgate.config import GatewayConfig
from gridgate.hygiene_config import ConfiguredWindow, WindowSpec
from gridgate.models import utc

T0 = 1_800_000_000.0
SHANGHAI = ZoneInfo("Asia/Shanghai")
BIN = Target("BIN-1", "bin", "G1", "G1-M1")
GAUGE = Target("WG-1", "water_gauge", "G1", None)


def one_off(hours: float = 1.0, **scope: list[str]) -> WindowSpec:
    return WindowSpec(reason="cleaning", starts_at=utc(T0), ends_at=utc(T0) + timedelta(hours=hours), **scope)


def test_created_ended_and_audited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tickets.sqlite'}"
    windows = MaintenanceWindows(url, [], SHANGHAI)
    made = windows.create(one_off(device_types=["bin"], grids=["G1"]), "cc", T0)
    assert made.state == "open" and made.origin == "api" and made.created_at == utc(T0)
    assert windows.open_for(BIN, T0 + 60) == made.id
    assert windows.open_for(GAUGE, T0 + 60) is None  # not a bin
    assert windows.open_for(Target("BIN-2", "bin", "G2", None), T0 + 60) is None  # not in G1
    ended = windows.end(made.id, "admin", T0 + 600)
    assert (ended.state, ended.ended_by, ended.ended_at) == ("ended", "admin", utc(T0 + 600))
    assert [(a.action, a.by, a.at) for a in ended.audit] == [
        ("created", "cc", utc(T0)),
        ("ended", "admin", utc(T0 + 600)),
    ]
    assert windows.open_for(BIN, T0 + 601) is None
    with pytest.raises(WindowNotEndable, match="already over"):
        windows.end(made.id, "cc", T0 + 700)
    with pytest.raises(WindowNotFound, match="no maintenance window 'nope'"):
        windows.end("nope", "cc", T0)
    windows.close()
    # a restart (or another gateway on the same database) reads the same windows and trail
    again = MaintenanceWindows(url, [], SHANGHAI)
    [listed] = again.list(T0 + 800)
    assert listed.model_dump() == again.get(made.id, T0 + 800).model_dump()
    assert listed.state == "ended" and [a.action for a in listed.audit] == ["created", "ended"]
    again.close()


def test_windows_expire_and_replicas_see_each_others(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tickets.sqlite'}"
    first, second = MaintenanceWindows(url, [], SHANGHAI), MaintenanceWindows(url, [], SHANGHAI)
    made = first.create(one_off(devices=["WG-1"]), "cc", T0)
    assert second.open_for(GAUGE, T0) is None  # not yet re-read
    second.refresh()
    assert second.open_for(GAUGE, T0) == made.id
    assert first.get(made.id, T0 + 3600).state == "expired"
    assert first.open_for(GAUGE, T0 + 3600) is None
    with pytest.raises(WindowNotEndable, match="already over"):
        first.end(made.id, "cc", T0 + 3600)
    later = first.create(
        WindowSpec(reason="later", devices=["WG-1"], starts_at=utc(T0 + 7200), ends_at=utc(T0 + 9000)),
        "cc",
        T0,
    )
    assert later.state == "scheduled"
    second.end(later.id, "cc", T0 + 60)  # ended by the other replica before it started
    first.refresh()
    assert first.get(later.id, T0 + 7300).state == "ended"
    first.close()
    second.close()


def test_windows_from_the_file_are_listed_and_not_ended_over_the_api(tmp_path: Path) -> None:
    night = ConfiguredWindow(
        id="night", reason="cleaning", device_types=["bin"], weekdays=["mon"], start="23:00", end="01:00"
    )
    windows = MaintenanceWindows(f"sqlite:///{tmp_path / 't.sqlite'}", [night], SHANGHAI)
    monday_night = utc(T0).replace(year=2026, month=12, day=7, hour=15, minute=30).timestamp()  # 23:30 CST
    [w] = windows.list(monday_night)
    assert (w.id, w.origin, w.created_by, w.state, w.audit) == ("night", "config", "config", "open", [])
    assert windows.open_for(BIN, monday_night) == "night"
    assert windows.get("night", monday_night + 7200).state == "idle"
    with pytest.raises(WindowNotEndable, match=r"defined in gateway\.yaml"):
        windows.end("night", "cc", monday_night)
    windows.close()


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"unknown time zone .Mars/Olympus."):
        GatewayConfig(timezone="Mars/Olympus")
    window = {
        "id": "a",
        "reason": "x",
        "devices": ["WG-1"],
        "weekdays": ["mon"],
        "start": "01:00",
        "end": "02:00",
    }
    with pytest.raises(ValidationError, match="id a used more than once"):
        GatewayConfig(hygiene={"maintenance_windows": [window, window]})
    with pytest.raises(ValidationError, match="scope"):
        GatewayConfig(
            hygiene={"inhibit": [{"name": "r", "causes": ["tamper"], "symptoms": ["x"], "scope": "grid"}]}
        )
    assert GatewayConfig(timezone="Europe/Berlin").timezone == "Europe/Berlin"
