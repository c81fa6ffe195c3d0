"""Publishes a simulated street to an MQTT broker (the loop around devices.simulator)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.simulator import StreetSimulator, make_street, write_devices_yaml
from gateway.grid_synth import DEFAULT_BBOX
from gridgate.topics import Topics

log = logging.getLogger("gridgate.simulate")


class SimulatorRunner:
    """Every `interval_s`, each device of the street sends one uplink (spread over the interval)."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: int,
        seed: int = 1,
        interval_s: float = 10.0,
        topic_prefix: str = "gridgate",
        bbox: tuple[float, float, float, float] = DEFAULT_BBOX,
    ) -> None:
        self.host, self.port, self.interval_s = host, port, interval_s
        self.devices = make_street(devices, seed=seed, bbox=bbox, reporting_interval_s=interval_s)
        self.sim = StreetSimulator(self.devices, seed=seed, topics=Topics(topic_prefix))
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gridgate-sim-{seed}")
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 30)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gridgate-simulator", daemon=True)
        self.published = 0

    def write_registry(self, path: Path) -> None:
        write_devices_yaml(self.devices, path)

    def start(self) -> None:
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        self._thread.start()
        log.info(
            "event=simulator_started broker=mqtt://%s:%d devices=%d", self.host, self.port, len(self.devices)
        )

    def _run(self) -> None:
        step_s = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            for topic, payload in self.sim.tick(time.time()):
                self.client.publish(topic, payload, qos=1)
                self.published += 1
            self._stop.wait(max(0.0, step_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()
        log.info("event=simulator_stopped published=%d", self.published)
