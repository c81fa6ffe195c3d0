"""`gridgate demo`: broker, gateway, embedded sink, API and a simulated street in one process."""

from __future__ import annotations

from pathlib import Path

from gateway.service import Gateway
from gridgate.config import GatewayConfig
from gridgate.embedded_broker import EmbeddedBroker
from gridgate.simulate import SimulatorRunner

REPO = Path(__file__).resolve().parent.parent


class Demo:
    def __init__(
        self, *, api_port: int, mqtt_port: int, devices: int, data_dir: Path, interval_s: float, seed: int = 1
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

    def start(self) -> None:
        self.broker.start()
        self.gateway.start()
        self.simulator.start()

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
                f"  data                       {self.data_dir}/ (SQLite: state, time series)",
                "Ctrl-C stops it.",
            ]
        )

    def stop(self) -> None:
        self.simulator.stop()
        self.gateway.stop()
        self.broker.stop()
