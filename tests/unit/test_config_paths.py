"""Paths in a gateway.yaml resolve against that file, wherever it lives (not the working directory)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devices.registry import load_registry
from gridgate.cli import app
from gridgate.config import load_gateway_config

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An /etc/gridgate-like folder outside the checkout, run from yet another directory."""
    folder = tmp_path / "etc" / "gridgate"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "config" / "gateway.yaml", folder / "gateway.yaml")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps long temp paths at 80 columns otherwise
    return folder


def test_default_paths_resolve_beside_the_config_file(etc: Path) -> None:
    for name in ("devices.yaml", "grids.geojson", "routing.yaml"):
        shutil.copy(REPO / "config" / name, etc / name)
    cfg = load_gateway_config(etc / "gateway.yaml")
    assert cfg.devices_file == etc / "devices.yaml"
    assert cfg.grids_file == etc / "grids.geojson"
    assert cfg.tickets.routing_file == etc / "routing.yaml"
    result = runner.invoke(app, ["config", "check", "-c", str(etc / "gateway.yaml")])
    assert result.exit_code == 0, result.output
    assert f"{len(load_registry(REPO / 'config' / 'devices.yaml'))} devices" in result.output


def test_a_missing_file_is_named_with_where_it_was_looked_for(etc: Path) -> None:
    result = runner.invoke(app, ["config", "check", "-c", str(etc / "gateway.yaml")])
    assert result.exit_code == 2
    flat = result.output.replace("\n", "")
    assert "devices.yaml" in flat and str(etc) in flat and "file not found" in flat


def test_a_missing_default_routing_file_warns_instead_of_failing(etc: Path) -> None:
    for name in ("devices.yaml", "grids.geojson"):
        shutil.copy(REPO / "config" / name, etc / name)
    result = runner.invoke(app, ["config", "check", "-c", str(etc / "gateway.yaml")])
    assert result.exit_code == 0, result.output
    assert "built-in defaults" in result.output.replace("\n", " ")
