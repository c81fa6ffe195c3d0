from pathlib import Path

from typer.testing import CliRunner

from gridgate.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_config_check_accepts_the_shipped_files() -> None:
    for name in ("gateway.yaml", "devices.yaml", "routing.yaml", "cameras.yaml", "grids.geojson"):
        result = runner.invoke(app, ["config", "check", "-c", str(REPO / "config" / name)])
        assert result.exit_code == 0, result.output
        assert "ok" in result.output


def test_config_check_names_file_field_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text("broker:\n  port: seventy\n")
    result = runner.invoke(app, ["config", "check", "-c", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.output and "broker.port" in result.output

    devices = tmp_path / "devices.yaml"
    devices.write_text("devices:\n  - {id: A, type: manhole, lat: 30, lon: 120, profile: nope}\n")
    result = runner.invoke(app, ["config", "check", "-c", str(devices)])
    assert result.exit_code == 2
    assert "devices[0].profile" in result.output


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "file not found" in result.output


def test_config_check_names_the_camera_field(tmp_path: Path) -> None:
    cams = tmp_path / "cameras.yaml"
    cams.write_text(
        "edge_id: e1\ncameras:\n  - id: c1\n    url: rtsp://x\n    location: {lat: 30, lon: 120}\n"
        "    zones:\n      - {name: z, type: no_parking, points: [[0, 0], [2, 0], [1, 1]]}\n"
    )
    result = runner.invoke(app, ["config", "check", "-c", str(cams)])
    assert result.exit_code == 2
    assert "cameras[0].zones[0]" in result.output
