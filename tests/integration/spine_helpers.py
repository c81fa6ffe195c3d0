"""A gateway under test, wired to real servers started by the test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gateway.service import Gateway
from gridgate.config import GatewayConfig
from tests.servers import Mosquitto

GRID = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"id": "G1", "name": "Test grid"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[120.10, 30.20], [120.20, 30.20], [120.20, 30.30], [120.10, 30.30], [120.10, 30.20]]
                ],
            },
        }
    ],
}

DEVICES: dict[str, Any] = {
    "profiles": {"low_road": {"rules": {"water_high": {"raise_at": 10, "clear_at": 6}}}},
    "devices": [
        {"id": "MH-1", "type": "manhole", "lat": 30.25, "lon": 120.15, "maintenance_team": "covers"},
        {"id": "MH-B", "type": "manhole", "lat": 30.25, "lon": 120.16, "codec": "manhole_binary"},
        {"id": "MH-V", "type": "manhole", "lat": 30.26, "lon": 120.16, "codec": "manhole_binary"},
        {"id": "BIN-1", "type": "bin", "lat": 30.25, "lon": 120.17, "bin_depth_cm": 120},
        {"id": "WG-1", "type": "water_gauge", "lat": 30.24, "lon": 120.15},
        {"id": "WG-OUT", "type": "water_gauge", "lat": 31.5, "lon": 121.5, "reporting_interval_s": 60},
    ],
}


def write_inputs(tmp: Path) -> tuple[Path, Path]:
    devices = tmp / "devices.yaml"
    devices.write_text(yaml.safe_dump(DEVICES))
    grids = tmp / "grids.geojson"
    grids.write_text(json.dumps(GRID))
    return devices, grids


def gateway_config(tmp: Path, broker: Mosquitto, influx: dict[str, Any], **extra: Any) -> GatewayConfig:
    devices, grids = write_inputs(tmp)
    return GatewayConfig(
        broker={"host": "127.0.0.1", "port": broker.port, "client_id": f"gw-{tmp.name}"[:60]},
        influx={"flush_interval_s": 0.2, **influx},
        storage={"data_dir": tmp / "data"},
        api={"host": "127.0.0.1", "port": 0},
        devices_file=devices,
        grids_file=grids,
        fallback_grid="outside",
        vendor_topics=[{"pattern": "acme/covers/{device_id}/data", "codec": "manhole_binary"}],
        **extra,
    )


def start_gateway(cfg: GatewayConfig) -> Gateway:
    return Gateway(cfg).start()
