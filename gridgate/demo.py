"""`gridgate demo`: broker, gateway, embedded sink, API, a simulated street and a camera, in one process."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from gateway.service import Gateway
from gridgate.config import GatewayConfig, read_yaml
from gridgate.embedded_broker import EmbeddedBroker
from gridgate.simulate import SimulatorRunner

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("gridgate.demo")


class Demo:
    def __init__(
        self,
        *,
        api_port: int,
        mqtt_port: int,
        devices: int,
        data_dir: Path,
        interval_s: float,
        seed: int = 1,
        camera: bool = True,
    ) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker("127.0.0.1", mqtt_port)
        self.simulator = SimulatorRunner("127.0.0.1", mqtt_port, devices, seed=seed, interval_s=interval_s)
        registry_file = data_dir / "devices.yaml"
        self.simulator.write_registry(registry_file)
        self.cfg = GatewayConfig(
            broker={"host": "127.0.0.1", "port": mqtt_port, "client_id": "gridgate-demo"},
            influx={"api": "none"},
            storage={"data_dir": data_dir},
            api={"host": "127.0.0.1", "port": api_port},
            devices_file=registry_file,
            grids_file=REPO / "config" / "grids.geojson",
            offline_check_s=2.0,
        )
        self.gateway = Gateway(self.cfg, fresh_broker=True)
        self.camera_wanted = camera
        self.camera_status = "off"
        self._proc: subprocess.Popen[bytes] | None = None  # the camera's child process
        self._child_lock = threading.Lock()
        self._edge_stop = threading.Event()
        self._edge_thread: threading.Thread | None = None

    def start(self) -> None:
        self.broker.start()
        self.gateway.start()
        self.simulator.start()
        if self.camera_wanted:
            self.camera_status = "starting (writing the demo clip and loading the model)"
            self._edge_thread = threading.Thread(
                target=self._run_camera, name="gridgate-demo-camera", daemon=True
            )
            self._edge_thread.start()

    def _run_camera(self) -> None:
        """One camera playing the demo clip: `gridgate edge` in a child process, as on an edge box.

        A child keeps torch and OpenVINO (and their native threads) out of this process, so a
        Ctrl-C at any moment, even while the clip is still being written, stops everything cleanly.
        """
        if importlib.util.find_spec("ultralytics") is None:  # a lean install: the video stack is an extra
            self.camera_status = "off (the edge stack is missing: pip install -e '.[edge]')"
            log.warning("event=demo_camera_off reason=%r", self.camera_status)
            return
        clip = (self.data_dir / "street.mp4").resolve()
        if not clip.exists():
            partial = clip.with_name("street.partial.mp4")  # never leave a cut clip behind
            if self._child(["detectors", "clip", "-o", str(partial)]) != 0:
                return
            partial.replace(clip)
        cameras = read_yaml(REPO / "config" / "cameras.yaml")
        cameras["broker"] = {**cameras.get("broker", {}), "host": "127.0.0.1", "port": self.broker.port}
        cameras["data_dir"] = str((self.data_dir / "edge").resolve())
        cameras["model"]["path"] = str(REPO / cameras["model"]["path"])
        cameras["cameras"] = cameras["cameras"][:1]
        cameras["cameras"][0]["url"] = str(clip)
        cfg_file = self.data_dir / "cameras.yaml"
        cfg_file.write_text(yaml.safe_dump(cameras, sort_keys=False))
        self.camera_status = f"{cameras['cameras'][0]['id']} playing {clip}"
        self._child(["edge", "-c", str(cfg_file), "--log-level", "warning"])

    def _child(self, args: list[str]) -> int:
        """Run `gridgate ARGS` until it ends or the demo stops; its exit code."""
        with self._child_lock:
            if self._edge_stop.is_set():
                return 1
            self._proc = subprocess.Popen([sys.executable, "-m", "gridgate.cli", *args], cwd=REPO)
        code = self._proc.wait()
        if code != 0 and not self._edge_stop.is_set():
            self.camera_status = f"failed: gridgate {args[0]} {args[1]} exited with {code}"
            log.error("event=demo_camera_failed command=%r code=%d", args, code)
        return code

    def banner(self) -> str:
        api = self.gateway.api_url
        return "\n".join(
            [
                f"gridgate demo: {len(self.simulator.devices)} simulated devices on mqtt://127.0.0.1:{self.broker.port}",
                f"  dashboard                  {api}/   (grid worker's phone page: {api}/m/)",
                f"  devices and their alarms   {api}/api/v1/devices?alarming=true",
                f"  events                     {api}/api/v1/events?state=active",
                f"  health / metrics           {api}/healthz  {api}/metrics",
                f"  API reference              {api}/docs",
                f"  alerts on MQTT             mosquitto_sub -p {self.broker.port} -t 'gridgate/alerts/#' -v",
                f"  tickets                    {api}/api/v1/tickets",
                f"  data                       {self.data_dir}/ (SQLite: state, time series, tickets)",
                "  camera                     the demo clip (parking, ponding, bin), once its model loads:",
                f"                             {api}/api/v1/events?source=camera:demo-street",
                "Ctrl-C stops it.",
            ]
        )

    def stop(self) -> None:
        with self._child_lock:
            self._edge_stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the edge worker stops cleanly on SIGTERM
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._edge_thread is not None:
            self._edge_thread.join(5)
        self.simulator.stop()
        self.gateway.stop()
        self.broker.stop()
