"""cameras.yaml: the shipped example loads; mistakes name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detectors.zones import BinOverflowZone, NoParkingZone, PondingZone
from edge.config import load_edge_config
from gridgate.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "cameras.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def camera(**extra: object) -> dict[str, object]:
    return {"id": "cam1", "url": "rtsp://10.0.0.2/live", "location": {"lat": 31.2, "lon": 121.4}, **extra}


def test_shipped_example_loads() -> None:
    cfg = load_edge_config(ROOT / "config" / "cameras.yaml")
    cam = cfg.cameras[0]
    kinds = {type(z) for z in cam.zones}
    assert kinds == {NoParkingZone, PondingZone, BinOverflowZone}
    assert str(cfg.tz(cam)) == "Asia/Shanghai"
    assert cam.capture.stall_s == 10


def test_pixel_coordinates_named_with_fix(tmp_path: Path) -> None:
    zone = {"name": "gate", "type": "no_parking", "points": [[0, 0], [640, 0], [640, 360]]}
    with pytest.raises(ConfigError) as exc:
        load_edge_config(write(tmp_path, {"cameras": [camera(zones=[zone])]}))
    text = exc.value.render()
    assert "cameras[0].zones[0].no_parking.points" in text
    assert "fractions of the frame" in text


def test_unknown_key_missing_location_and_bad_timezone(tmp_path: Path) -> None:
    bad = {"timezone": "Mars/Olympus", "cameras": [{"id": "c", "url": "x.mp4", "detect_fsp": 2}]}
    with pytest.raises(ConfigError) as exc:
        load_edge_config(write(tmp_path, bad))
    text = exc.value.render()
    assert "timezone" in text and "IANA" in text
    assert "cameras[0].location" in text and "add it" in text
    assert "cameras[0].detect_fsp" in text and "check its spelling" in text


def test_duplicate_ids_and_zone_names(tmp_path: Path) -> None:
    z = {"name": "a", "type": "ponding", "points": [[0, 0.5], [1, 0.5], [1, 1]]}
    with pytest.raises(ConfigError, match="zone names must be unique"):
        load_edge_config(write(tmp_path, {"cameras": [camera(zones=[z, z])]}))
    with pytest.raises(ConfigError, match="camera ids must be unique"):
        load_edge_config(write(tmp_path, {"cameras": [camera(), camera()]}))


def test_environment_overrides_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDGATE_EDGE_BROKER__HOST", "mqtt.city.example")
    cfg = load_edge_config(write(tmp_path, {"edge_id": "e7", "cameras": [camera()]}))
    assert cfg.broker.host == "mqtt.city.example"
    assert cfg.client_id == "gridgate-edge-e7"


def test_key_frame_cameras_need_ffmpeg_and_wait_longer_for_a_frame(tmp_path: Path) -> None:
    slow = camera(capture={"keyframes_only": True})
    cfg = load_edge_config(write(tmp_path, {"cameras": [slow]}))
    assert cfg.cameras[0].capture.stall_s == 30  # a key frame may come 2-3 GOPs late
    own = camera(capture={"keyframes_only": True, "stall_s": 45})
    assert load_edge_config(write(tmp_path, {"cameras": [own]})).cameras[0].capture.stall_s == 45
    with pytest.raises(ConfigError) as exc:
        load_edge_config(
            write(tmp_path, {"cameras": [camera(capture={"keyframes_only": True, "backend": "opencv"})]})
        )
    assert "cameras[0].capture" in exc.value.render() and "backend: ffmpeg" in exc.value.render()
