"""`gridgate demo` as a person runs it: devices and active alarms in the API within 30 s, Ctrl-C stops it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.integration


def test_demo_shows_devices_and_alarms_and_stops_on_sigint(tmp_path: Path) -> None:
    api_port, mqtt_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "gridgate.cli",
        "demo",
        "--api-port",
        str(api_port),
        "--mqtt-port",
        str(mqtt_port),
        "--data-dir",
        str(tmp_path / "demo"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        devices: list[dict] = []
        alarming: list[dict] = []
        while time.monotonic() < deadline and not alarming:
            time.sleep(1)
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                devices = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/devices", timeout=5).json()
            except httpx.HTTPError:
                continue
            alarming = [d for d in devices if d["active_alarms"]]
        assert len(devices) >= 200
        assert {d["type"] for d in devices} == {"manhole", "bin", "water_gauge"}
        assert alarming, "no active alarm within 30 s"
        events = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/events", params={"state": "active"}).json()
        assert events and all(e["grid_id"] for e in events)
        metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics").text
        assert "gridgate_messages_rejected_total{reason=" in metrics  # the street sends a few bad payloads
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "stopped cleanly" in out and f"http://127.0.0.1:{api_port}" in out
