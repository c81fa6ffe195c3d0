"""`gridgate demo`: broker, gateway, embedded sink, API, a simulated street and a camera, in one process."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from gateway.service import Gateway
from gridgate.config import GatewayConfig
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
        self.gateway = Gateway(self.cfg)
        self.camera_wanted = camera
        self.camera_status = "off"
        self._edge: Any = None  # the edge worker, once its clip and model are ready
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
        """One camera playing the demo clip through the edge worker, into the embedded broker."""
        try:
            from detectors.clip import write_clip
            from detectors.model import Detector
            from edge.config import load_edge_config
            from edge.worker import EdgeWorker
        except ImportError as exc:  # a lean install: the video stack is the `edge` extra
            self.camera_status = f"off ({exc.name} is missing: pip install -e '.[edge]')"
            log.warning("event=demo_camera_off reason=%r", self.camera_status)
            return
        try:
            clip = (self.data_dir / "street.mp4").resolve()
            if not clip.exists():
                partial = clip.with_name("street.partial.mp4")
                write_clip(partial)
                partial.replace(clip)  # a demo stopped while writing never leaves a cut clip behind
            cfg = load_edge_config(
                REPO / "config" / "cameras.yaml",
                broker={"host": "127.0.0.1", "port": self.broker.port},
                data_dir=str(self.data_dir / "edge"),
            )
            camera = cfg.cameras[0].model_copy(update={"url": str(clip)})
            cfg = cfg.model_copy(update={"cameras": [camera]})
            if self._edge_stop.is_set():
                return
            self._edge = EdgeWorker(cfg, Detector.from_config(cfg.model)).start()
            self._edge.run_in_thread()
            self.camera_status = f"{camera.id} playing {clip}"
        except Exception as exc:  # the street and the gateway go on without the camera
            self.camera_status = f"failed: {exc}"
            log.exception("event=demo_camera_failed")

    def banner(self) -> str:
        api = self.gateway.api_url
        return "\n".join(
            [
                f"gridgate demo: {len(self.simulator.devices)} simulated devices on mqtt://127.0.0.1:{self.broker.port}",
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
        self._edge_stop.set()
        if self._edge is not None:
            self._edge.stop()
        self.simulator.stop()
        self.gateway.stop()
        self.broker.stop()
