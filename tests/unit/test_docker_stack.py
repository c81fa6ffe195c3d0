"""docker/: the compose stack, Mosquitto's config and the Grafana provisioning, checked by reading
(Docker does not run here): files it mounts exist, names agree across services, every Grafana
query names a measurement, fields and tags that gridgate really writes."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry
from devices.types import DEVICE_FIELDS, Device, DeviceType, FieldType
from edge.config import load_edge_config
from edge.stats import CameraStats, EdgeStats
from gateway.edge_ingest import stats_points
from gateway.grids import GridIndex
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.tickets.states import TicketStatus
from gridgate.cli import app
from gridgate.clock import FakeClock
from gridgate.config import GatewayConfig, load_gateway_config
from gridgate.models import EventState, Point
from tests.ticket_helpers import CAMERA, event, make_service

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
DASHBOARD = json.loads((DOCKER / "grafana/dashboards/gridgate.json").read_text())


def mounts(service: str) -> list[tuple[str, str]]:
    """(source, target) of each `volumes:` entry of a service."""
    out = []
    for entry in SERVICES[service].get("volumes", []):
        source, target = entry.split(":")[:2]
        out.append((source, target))
    return out


def dockerfile_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (DOCKER / name).read_text().splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in shlex.split(line[4:])))
    return env


# -- compose ------------------------------------------------------------------------------------


def test_the_stack_has_its_services_and_declares_its_volumes() -> None:
    assert set(SERVICES) == {"mqtt-credentials", "mosquitto", "influxdb", "grafana", "gateway", "edge"}
    declared = set(COMPOSE["volumes"])
    for service in SERVICES:
        for source, _ in mounts(service):
            if not source.startswith((".", "/")):
                assert source in declared, f"{service}: volume {source} is not declared"
    for data in ("mosquitto-data", "influx-data", "grafana-data", "gateway-data", "edge-data"):
        assert data in declared  # state survives `docker compose down` (without -v)


def test_every_file_the_stack_mounts_or_builds_from_is_in_the_repo() -> None:
    for service in SERVICES:
        for source, _ in mounts(service):
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{service} mounts {source}, which is not in the repo"
        build = SERVICES[service].get("build")
        if build is not None:
            context = (DOCKER / build["context"]).resolve()
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{service}: {dockerfile} missing"
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY "):
                    for src in line.split()[1:-1]:
                        assert (context / src).exists(), f"{dockerfile.name}: COPY {src} is not in the repo"


def test_mosquitto_keeps_the_gateways_backlog_and_checks_passwords() -> None:
    conf: dict[str, str] = {}
    for line in (DOCKER / "mosquitto.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            conf[key] = value
    assert conf["persistence"] == "true" and conf["persistence_location"] == "/mosquitto/data/"
    assert (
        int(conf["max_queued_messages"]) >= 100_000
    )  # Mosquitto's 1000 drops a restarting gateway's backlog
    assert int(conf["max_inflight_messages"]) >= 100
    assert int(conf["autosave_interval"]) <= 60
    assert conf["allow_anonymous"] == "false"
    assert ("./mosquitto.conf", "/mosquitto/config/mosquitto.conf") in mounts("mosquitto")
    assert ("mosquitto-data", "/mosquitto/data") in mounts("mosquitto")
    start = SERVICES["mosquitto"]["command"][-1]
    for key in ("password_file", "acl_file"):
        assert conf[key] in start and "chown mosquitto:mosquitto" in start  # its own copy, readable


def test_the_credentials_job_writes_every_file_the_others_read(tmp_path: Path) -> None:
    """Run the job's own command line against the repo's config and find each file the stack uses."""
    args = list(SERVICES["mqtt-credentials"]["command"])
    out_dir = args[args.index("--out") + 1]
    args[args.index("--out") + 1] = str(tmp_path)
    args[args.index("-c") + 1] = str(REPO / "config/gateway.yaml")
    result = CliRunner().invoke(app, args, env=SERVICES["mqtt-credentials"].get("environment"))
    assert result.exit_code == 0, result.output
    written = {p.name for p in tmp_path.iterdir()}

    def in_volume(path: str) -> str:
        assert path.startswith(out_dir + "/"), path
        name = path[len(out_dir) + 1 :]
        assert name in written, f"{path} is not written by `gridgate mqtt acl` ({sorted(written)})"
        return name

    assert ("mqtt-credentials", out_dir) in mounts("mqtt-credentials")
    for service in ("gateway", "edge"):
        assert ("mqtt-credentials", out_dir) in mounts(service)
    in_volume(SERVICES["gateway"]["environment"]["GRIDGATE_BROKER__PASSWORD_FILE"])
    in_volume(SERVICES["edge"]["environment"]["GRIDGATE_EDGE_BROKER__PASSWORD_FILE"])
    assert ("mqtt-credentials", "/credentials") in mounts("mosquitto")
    for name in re.findall(r"/credentials/(\w+)", SERVICES["mosquitto"]["command"][-1]):
        assert name in written
    users = (tmp_path / "acl").read_text()
    assert f"user {SERVICES['gateway']['environment']['GRIDGATE_BROKER__USERNAME']}\n" in users
    assert f"user {SERVICES['edge']['environment']['GRIDGATE_EDGE_BROKER__USERNAME']}\n" in users


def test_the_gateway_and_edge_configs_load_with_the_stacks_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = dockerfile_env("Dockerfile.gateway") | SERVICES["gateway"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, re.sub(r"\$\{[^}]+\}", "t" * 32, str(value)))
    cfg = load_gateway_config(REPO / "config/gateway.yaml")
    assert (cfg.broker.host, cfg.broker.username, cfg.influx.api) == ("mosquitto", "gateway", "v2")
    assert cfg.auth.tokens and cfg.auth.tokens[0].secret() == "t" * 32
    influx = SERVICES["influxdb"]["environment"]
    assert (cfg.influx.org, cfg.influx.bucket) == (
        influx["DOCKER_INFLUXDB_INIT_ORG"],
        influx["DOCKER_INFLUXDB_INIT_BUCKET"],
    )
    assert cfg.influx.url == "http://influxdb:8086"

    for key, value in SERVICES["edge"]["environment"].items():
        monkeypatch.setenv(key, value)
    edge = load_edge_config(REPO / "config/cameras.yaml")
    assert (edge.broker.host, edge.broker.username) == ("mosquitto", edge.edge_id)
    job = SERVICES["mqtt-credentials"]["command"]
    assert job[job.index("--edge") + 1] == edge.edge_id
    start = SERVICES["edge"]["command"][-1]
    assert edge.cameras[0].url in start and "gridgate detectors clip" in start  # plays the demo clip
    assert ("edge-data", "/app/var") in mounts("edge") and str(edge.data_dir).startswith("var/")


def test_grafana_is_provisioned_with_the_influxdb_the_gateway_writes() -> None:
    grafana = SERVICES["grafana"]
    targets = dict((t, s) for s, t in mounts("grafana"))
    for kind in ("datasources", "dashboards"):
        assert targets[f"/etc/grafana/provisioning/{kind}"] == f"./grafana/provisioning/{kind}"
    [source] = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/influxdb.yaml").read_text())[
        "datasources"
    ]
    influx = SERVICES["influxdb"]["environment"]
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "Flux"
    assert source["jsonData"]["organization"] == influx["DOCKER_INFLUXDB_INIT_ORG"]
    assert source["jsonData"]["defaultBucket"] == influx["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert source["url"] == "http://influxdb:8086"
    token_var = re.fullmatch(r"\$\{(\w+)\}", source["secureJsonData"]["token"]).group(1)
    assert token_var in grafana["environment"]
    [provider] = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/gridgate.yaml").read_text())[
        "providers"
    ]
    folder = provider["options"]["path"]
    assert targets[folder] == "./grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(folder + "/") and (DOCKER / "grafana/dashboards" / Path(home).name).is_file()
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


# -- the Grafana dashboard ----------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.points: list[Point] = []

    def add(self, point: Point) -> None:
        self.points.append(point)


class Outbox:
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        pass


SAMPLE = {FieldType.float: 1.0, FieldType.bool: False, FieldType.int: 1, FieldType.string: "x"}


def written_points(tmp_path: Path) -> list[Point]:
    """Points as gridgate's own code writes them: readings of every field of every device type and
    alarms through the pipeline, a ticket's life through the ticket service, an edge box's stats."""
    devices = [Device(id=f"D-{t.value}", type=t, lat=30.0, lon=120.0) for t in DeviceType]
    registry = DeviceRegistry.from_devices(devices)
    sink = Sink()
    pipeline = Pipeline(
        GatewayConfig(),
        registry,
        DeviceEngine(registry, started_at=time.time()),
        GridIndex(fallback_grid="fb"),
        sink,
        Outbox(),
        lambda events: pipeline.publish(events),
        GatewayMetrics(),
    )
    now = time.time()
    for dev in devices:
        reading = {name: SAMPLE[kind] for name, kind in DEVICE_FIELDS[dev.type].items()}
        pipeline.handle(f"gridgate/devices/{dev.type}/{dev.id}/up", json.dumps(reading).encode(), now)
    alarm = {"water_level_cm": 40.0, "battery_pct": 80.0}
    pipeline.handle("gridgate/devices/water_gauge/D-water_gauge/up", json.dumps(alarm).encode(), now + 1)

    clock = FakeClock()
    svc, _ = make_service(f"sqlite:///{tmp_path / 't.sqlite'}", clock)
    svc.sink = sink
    ticket = svc.process([event("ponding", "camera:cam-1", clock.now(), CAMERA)]).changes[0].ticket
    for act in (svc.accept, svc.arrive, svc.resolve):
        clock.advance(30)
        act(ticket.id, "worker-G1")
    svc.reopen(ticket.id, "worker-G1")

    not_numbers = {"camera_id", "connected", "last_error", "detections", "detections_period"}
    camera = {name: 1 for name in CameraStats.model_fields if name not in not_numbers}
    stats = EdgeStats(
        edge_id="edge-1",
        at="2026-12-01T00:00:00Z",
        uptime_s=1,
        queue_depth=0,
        queue_bytes=0,
        queue_dropped=0,
        evidence_bytes=0,
        broker_connected=True,
        models={"street": "street.pt@abc"},
        cameras=[
            CameraStats(
                camera_id="cam-1",
                connected=True,
                last_error="",
                detections={"vehicle": 1},
                detections_period={"vehicle": 1},
                **camera,
            )
        ],
    )
    sink.points += stats_points("edge-1", stats.model_dump(mode="json"), 0)
    return sink.points


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, set[str]]]:
    """measurement -> {"fields": ..., "tags": ..., and "fields:<device_type>" for telemetry}."""
    out: dict[str, dict[str, set[str]]] = {}
    for p in written_points(tmp_path_factory.mktemp("points")):
        m = out.setdefault(p.measurement, {"fields": set(), "tags": set()})
        m["fields"] |= set(p.fields)
        m["tags"] |= set(p.tags)
        if p.measurement == "telemetry":
            m.setdefault(f"fields:{p.tags['device_type']}", set()).update(p.fields)
    assert set(out) == {"telemetry", "events", "tickets", "edge_stats"}
    return out


TAG_VALUES = {
    "device_type": {t.value for t in DeviceType},
    "state": {s.value for s in EventState},
    "status": {s.value for s in TicketStatus},
}


def queries() -> list[tuple[str, str]]:
    """(where, Flux) of every panel target and query variable."""
    out = [(f"panel {p['title']!r}", t["query"]) for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    out += [
        (f"variable {v['name']}", v["query"]) for v in DASHBOARD["templating"]["list"] if v["type"] == "query"
    ]
    return out


def test_the_dashboard_is_valid_grafana_json() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 36
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for p in DASHBOARD["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"] and all(t["refId"] and t["query"].strip() for t in p["targets"]), p["title"]
    titles = {p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"}
    assert len(titles) == 4  # telemetry per device type, events, SLA from tickets, edge stats
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    for where, q in queries():
        for used in re.findall(r"\$\{(\w+)(?::\w+)?\}", q):
            assert used in variables, f"{where}: ${{{used}}} is not a dashboard variable"


@pytest.mark.parametrize(("where", "flux"), queries())
def test_every_query_names_what_gridgate_writes(
    where: str, flux: str, schema: dict[str, dict[str, set[str]]]
) -> None:
    measurements = set(re.findall(r'r\._measurement == "([^"]+)"', flux))
    assert measurements, f"{where}: names no measurement"
    unknown = measurements - set(schema)
    assert not unknown, f"{where}: gridgate writes no measurement {unknown}"
    tags = set.intersection(*(schema[m]["tags"] for m in measurements))
    fields = set.union(*(schema[m]["fields"] for m in measurements))
    for field in re.findall(r'r\._field == "([^"]+)"', flux):
        assert field in fields, f"{where}: {measurements} has no field {field!r}"
    types = re.findall(r'r\.device_type == "([^"]+)"', flux)
    for field in re.findall(r'r\._field == "([^"]+)"', flux) if types else []:
        assert any(field in schema["telemetry"].get(f"fields:{t}", set()) for t in types), (
            f"{where}: no device type of {types} sends {field!r}"
        )
    for key, value in re.findall(r'r\.(\w+) (?:==|=~) "?/?([^"/)]+)', flux):
        if key.startswith("_"):
            continue
        assert key in tags, f"{where}: {measurements} has no tag {key!r} (tags: {sorted(tags)})"
        if key in TAG_VALUES:
            assert value in TAG_VALUES[key], f"{where}: {key} is never {value!r}"
    for key in re.findall(r"exists r\.(\w+)", flux):
        assert key in tags, f"{where}: {measurements} has no tag {key!r}"
    for columns in re.findall(r"group\(columns: \[([^\]]*)\]", flux):
        for col in re.findall(r'"([^"]+)"', columns):
            assert col in tags | {"_field", "_measurement"}, f"{where}: group by {col!r}, not a tag"
    for col in re.findall(r'(?:rowKey|columnKey): \["([^"]+)"\]', flux):
        assert col in tags, f"{where}: pivot on {col!r}, not a tag"
