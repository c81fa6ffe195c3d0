"""Shared fixtures: real servers (mosquitto, influxd 1.x, victoria-metrics) on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import INFLUXD, MOSQUITTO, VICTORIA, InfluxDB1, Mosquitto, VictoriaMetrics


def _need(binary: str | None, what: str, package: str) -> None:
    if not binary:
        pytest.skip(f"{what} is not installed (apt-get install {package}); CI installs it")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto per test (no retained messages or sessions leak between tests)."""
    _need(MOSQUITTO, "mosquitto", "mosquitto mosquitto-clients")
    with Mosquitto(tmp_path) as server:
        yield server


@pytest.fixture(scope="session")
def influxdb1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """One influxd 1.x for the session: give each test its own database (`influx_db`)."""
    _need(INFLUXD, "influxd (InfluxDB 1.x)", "influxdb")
    with InfluxDB1(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture
def influx_db(influxdb1: InfluxDB1, request: pytest.FixtureRequest) -> str:
    """A new, empty database on the session's influxd, named after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    influxdb1.query(f'DROP DATABASE "{name}"')
    influxdb1.create_database(name)
    return name


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """One victoria-metrics for the session: tests keep apart by measurement or tag names."""
    _need(VICTORIA, "victoria-metrics", "victoria-metrics")
    with VictoriaMetrics(tmp_path_factory.mktemp("vm")) as server:
        yield server
