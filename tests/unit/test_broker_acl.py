"""`gridgate mqtt acl`: Mosquitto's hash format, stable passwords, names the files cannot hold."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devices.registry import DeviceRegistry
from devices.types import Device
from gateway.broker_acl import check_password, hash_password, plan_users, read_credentials
from gridgate.cli import app
from gridgate.config import ConfigError, GatewayConfig

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_our_hash_is_mosquittos_format() -> None:
    hashed = hash_password("s3cret", salt=b"\x00" * 12)
    _, seven, iterations, salt, digest = hashed.split("$")
    assert (seven, iterations, salt) == ("7", "101", "AAAAAAAAAAAAAAAA") and len(digest) == 88
    assert check_password("s3cret", hashed) and not check_password("s3creT", hashed)


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd is not installed")
def test_a_mosquitto_passwd_hash_checks_with_ours(tmp_path: Path) -> None:
    pwfile = tmp_path / "passwd"
    pwfile.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "dev", "open sesame"], check=True)
    hashed = pwfile.read_text().strip().split(":", 1)[1]
    assert check_password("open sesame", hashed) and not check_password("open", hashed)


def test_passwords_survive_a_second_run_and_rotate_on_request(tmp_path: Path) -> None:
    args = ["mqtt", "acl", "-c", str(REPO / "config/gateway.yaml"), "-o", str(tmp_path), "--edge", "edge-9"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before = read_credentials(tmp_path / "credentials.csv")
    assert {"gateway", "edge-9", "MH-0001", "WG-0009"} <= before.keys()
    assert not any(pw in first.output for pw in before.values())
    assert str(tmp_path / "credentials.csv") in first.output and "gateway.password" in first.output
    assert (tmp_path / "edge-9.password").read_text().strip() == before["edge-9"]
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    for name in ("passwd", "acl", "credentials.csv", "gateway.password"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 new passwords" in again.output
    assert read_credentials(tmp_path / "credentials.csv") == before
    rotated = runner.invoke(app, [*args, "--rotate"])
    after = read_credentials(tmp_path / "credentials.csv")
    assert rotated.exit_code == 0 and all(after[u] != before[u] for u in before)


def test_each_device_gets_only_its_own_topics() -> None:
    cfg = GatewayConfig(
        vendor_topics=[
            {"pattern": "acme/covers/{device_id}/data", "codec": "manhole_binary", "device_type": "manhole"},
            {"pattern": "any/+/{device_id}", "codec": "json"},
        ]
    )
    registry = DeviceRegistry.from_devices(
        [Device(id="C1", type="manhole", lat=30, lon=120), Device(id="B1", type="bin", lat=30, lon=120)]
    )
    users = {u.username: u for u in plan_users(cfg, registry, ["e1"], "gw")}
    assert users["C1"].write == [
        "gridgate/devices/manhole/C1/up",
        "gridgate/devices/manhole/C1/status",
        "acme/covers/C1/data",
        "any/+/C1",
    ]
    assert users["B1"].write == ["gridgate/devices/bin/B1/up", "gridgate/devices/bin/B1/status", "any/+/B1"]
    assert users["C1"].read == [] and users["e1"].write == ["gridgate/edge/e1/#"]
    assert "acme/covers/+/data" in users["gw"].read and "gridgate/devices/#" in users["gw"].read


def test_names_the_files_cannot_hold_are_refused_with_the_fix() -> None:
    registry = DeviceRegistry.from_devices([Device(id="cover:7", type="manhole", lat=30, lon=120)])
    with pytest.raises(ConfigError, match=r"cannot contain ':'.*rename it"):
        plan_users(GatewayConfig(), registry, [], "gateway")
    clash = DeviceRegistry.from_devices([Device(id="gateway", type="bin", lat=30, lon=120)])
    with pytest.raises(ConfigError, match="already the gateway's user"):
        plan_users(GatewayConfig(), clash, [], "gateway")
    with pytest.raises(ConfigError, match="edge_id is letters"):
        plan_users(GatewayConfig(), DeviceRegistry.from_devices([]), ["a b"], "gateway")


def test_the_command_finds_the_edge_box_beside_the_config_and_explains_refusals(tmp_path: Path) -> None:
    shipped = runner.invoke(
        app, ["mqtt", "acl", "-c", str(REPO / "config/gateway.yaml"), "-o", str(tmp_path)]
    )
    assert shipped.exit_code == 0 and "1 edge boxes (edge-1)" in shipped.output  # config/cameras.yaml

    (tmp_path / "devices.yaml").write_text(
        "devices:\n  - {id: 'cover:7', type: manhole, lat: 30, lon: 120}\n"
    )
    (tmp_path / "gateway.yaml").write_text("devices_file: devices.yaml\n")
    refused = runner.invoke(
        app, ["mqtt", "acl", "-c", str(tmp_path / "gateway.yaml"), "-o", str(tmp_path / "o")]
    )
    assert refused.exit_code == 2
    assert "devices.yaml" in refused.output and "cannot contain ':'" in refused.output
    assert not (tmp_path / "o").exists()  # nothing half-written
