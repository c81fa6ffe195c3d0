"""The `gridgate` command: the one composition root of the project."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

import gridgate
from gridgate.config import ConfigError, GatewayConfig, load_gateway_config, open_api_exposure
from gridgate.detectors_cli import app as detectors_app
from gridgate.edge_cli import edge_app
from gridgate.logs import setup_logging
from gridgate.mqtt_cli import mqtt_app

app = typer.Typer(
    help="gridgate: street cameras and IoT sensors to dispatched grid tickets.", no_args_is_help=True
)
config_app = typer.Typer(help="Configuration files.", no_args_is_help=True)
grids_app = typer.Typer(help="Grid polygons.", no_args_is_help=True)
evidence_app = typer.Typer(help="Evidence packs of video events.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(evidence_app, name="evidence")
app.add_typer(grids_app, name="grids")
app.add_typer(detectors_app, name="detectors")
app.add_typer(edge_app, name="edge")
app.add_typer(mqtt_app, name="mqtt")
console = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("-c", "--config", help="gateway.yaml", exists=False)]
LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")]


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def fail(err: ConfigError) -> None:
    console.print(f"[red]{err.render()}[/red]", highlight=False)
    raise typer.Exit(2)


@app.command()
def version() -> None:
    """Print the version."""
    print(gridgate.__version__)


@config_app.command("check")
def config_check(
    config: Annotated[
        Path,
        typer.Option(
            "-c", "--config", help="gateway.yaml, devices.yaml, routing.yaml, cameras.yaml or grids.geojson"
        ),
    ],
) -> None:
    """Validate a configuration file; on error name the file, the field path and the fix.

    gateway.yaml, devices.yaml, grids.geojson or routing.yaml; a gateway.yaml's routing file is
    checked too when tickets are enabled.
    """
    from devices.registry import load_registry
    from gateway.grids import GridIndex
    from gateway.tickets.routing import RoutingConfig, load_routing

    try:
        if config.suffix in (".geojson", ".json"):
            index = GridIndex.load(config, "unassigned")
            what = f"{len(index)} grids and micro-grids"
        elif _looks_like(config, "devices"):
            registry = load_registry(config)
            what = f"{len(registry)} devices"
        elif _looks_like(config, "cameras", "edge_id"):
            from edge.config import load_edge_config

            edge = load_edge_config(config)
            what = f"edge box {edge.edge_id}, {len(edge.cameras)} cameras"
        elif _looks_like(config, "categories", "teams", "groups", "fallback_team", "fault_team"):
            routing = load_routing(config)
            what = f"routing for {len(routing.categories)} categories and {len(routing.teams)} teams"
        else:
            cfg = load_gateway_config(config)
            what = f"gateway config (broker {cfg.broker.host}:{cfg.broker.port}, influx api {cfg.influx.api})"
            exposure = open_api_exposure(cfg)
            if exposure is not None:  # only reached with auth.allow_open: true
                console.print(f"[yellow]warning: {exposure}[/yellow]", highlight=False)
            registry = load_registry(cfg.devices_file)
            what += f", {len(registry)} devices in {cfg.devices_file}"
            if cfg.grids_file is not None:
                grids = GridIndex.load(cfg.grids_file, cfg.fallback_grid)
                what += f", {len(grids)} grids in {cfg.grids_file}"
            if cfg.tickets.enabled:
                if cfg.tickets.routing_file.exists():
                    routing = load_routing(cfg.tickets.routing_file)
                    what += f", routing {cfg.tickets.routing_file} ({len(routing.categories)} categories)"
                else:
                    routing = RoutingConfig()
                    console.print(
                        f"[yellow]warning: no routing file {cfg.tickets.routing_file} beside {config}: the "
                        "gateway routes tickets by its built-in defaults (set tickets.routing_file)[/yellow]",
                        highlight=False,
                    )
                unknown = [c for c in cfg.open311.services if c not in routing.categories]
                if unknown:
                    raise ConfigError(
                        config,
                        [f"open311.services: {unknown} are not categories of {cfg.tickets.routing_file}"],
                    )
    except ConfigError as err:
        fail(err)
    console.print(f"[green]{config}: ok[/green], {what}", highlight=False)


def _looks_like(path: Path, *keys: str) -> bool:
    from gridgate.config import read_yaml

    data = read_yaml(path)
    return isinstance(data, dict) and any(k in data for k in keys)


@evidence_app.command("verify")
def evidence_verify(
    folder: Annotated[Path, typer.Argument(help="an event's evidence folder, with its manifest.json")],
) -> None:
    """Check every file of an event's evidence against its manifest (exit 1 naming what differs)."""
    from gridgate.manifest import verify_manifest

    if not folder.is_dir():
        console.print(f"[red]{folder}: not a folder[/red] (give an event's evidence folder)")
        raise typer.Exit(2)
    problems = verify_manifest(folder)
    for p in problems:
        console.print(f"[red]{p}[/red]")
    if problems:
        raise typer.Exit(1)
    console.print(f"{folder}: every file matches its manifest")


@grids_app.command("synth")
def grids_synth(
    out: Annotated[Path, typer.Option("-o", "--out")] = Path("config/grids.geojson"),
    rows: int = 6,
    cols: int = 8,
    micro_per_side: int = 2,
    seed: int = 7,
) -> None:
    """Write a synthetic sub-district of grids and micro-grids (GeoJSON)."""
    from gateway.grid_synth import synth_grids

    out.write_text(json.dumps(synth_grids(rows, cols, micro_per_side, seed=seed), indent=1) + "\n")
    console.print(f"wrote {rows * cols} grids and {rows * cols * micro_per_side**2} micro-grids to {out}")


Role = Literal["all", "ingest", "dispatch", "api"]


@app.command()
def gateway(
    config: ConfigOpt = Path("config/gateway.yaml"),
    log_level: LogLevel = "info",
    role: Annotated[
        Role,
        typer.Option(
            help="all: everything in this process; ingest: one of several replicas sharing the devices' "
            "uplinks; dispatch: the lead dispatcher (or a standby): alerts, event log, tickets, API; "
            "api: an API and dashboard replica. ingest, dispatch and api need cluster.database_url "
            "(docs/operator-guide.md, Scaling out)"
        ),
    ] = "all",
) -> None:
    """Run the central gateway: MQTT ingest, rules, time-series sink, alerts, API."""
    setup_logging(log_level)
    try:
        cfg = load_gateway_config(config)
        if role != "all":
            cfg.cluster.url()
    except ConfigError as err:
        fail(err)
    except ValueError as exc:
        console.print(f"[red]{config}: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    if role == "ingest":
        run_ingest(cfg)
    elif role == "dispatch":
        run_dispatch(cfg, log_level)
    else:
        run_gateway(cfg, log_level, role)


def run_gateway(cfg: GatewayConfig, log_level: str, role: Literal["all", "api"]) -> None:
    from gateway.mqtt import BrokerUnavailable
    from gateway.service import Gateway

    try:
        gw = Gateway(cfg, log_level=log_level, role=role)
    except ConfigError as err:
        fail(err)
    try:
        gw.start(wait_for_broker_s=0)
    except BrokerUnavailable as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    try:
        wait_for_signal()
    finally:
        gw.stop()


def run_ingest(cfg: GatewayConfig) -> None:
    from gateway.cluster.ingest import IngestReplica

    try:
        replica = IngestReplica(cfg).start(wait_for_broker_s=0)
    except ConfigError as err:
        fail(err)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5) and replica.failed is None:
        pass
    replica.stop()
    if replica.failed is not None:
        raise typer.Exit(3)


def run_dispatch(cfg: GatewayConfig, log_level: str) -> None:
    from gateway.cluster.dispatch import lead

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        reason = lead(cfg, stop, log_level)
    except ConfigError as err:
        fail(err)
    if reason is not None:
        raise typer.Exit(3)


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="MQTT broker host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MQTT broker port")] = 1883,
    devices: Annotated[int, typer.Option(help="devices in the simulated street")] = 240,
    seed: int = 1,
    interval_s: Annotated[float, typer.Option(help="seconds between two uplinks of a device")] = 10.0,
    devices_out: Annotated[
        Path | None, typer.Option(help="write the street's devices.yaml here (the gateway must load it)")
    ] = None,
    topic_prefix: str = "gridgate",
    duration_s: Annotated[float, typer.Option(help="stop after this many seconds (0: run until Ctrl-C)")] = 0,
    log_level: LogLevel = "info",
) -> None:
    """Drive any broker with a simulated street of manhole covers, bins and water gauges."""
    from gridgate.simulate import SimulatorRunner

    setup_logging(log_level)
    runner = SimulatorRunner(host, port, devices, seed, interval_s, topic_prefix)
    if devices_out is not None:
        runner.write_registry(devices_out)
        console.print(f"wrote {devices} devices to {devices_out}")
    runner.start()
    try:
        if duration_s:
            threading.Event().wait(duration_s)
        else:
            wait_for_signal()
    finally:
        runner.stop()


@app.command()
def demo(
    api_port: Annotated[int, typer.Option(help="port of the API and dashboard")] = 8080,
    mqtt_port: Annotated[int, typer.Option(help="port of the embedded MQTT broker")] = 1883,
    devices: Annotated[int, typer.Option(help="simulated devices (at least 200 make a street)")] = 240,
    data_dir: Annotated[Path, typer.Option(help="where the demo keeps its SQLite files")] = Path("var/demo"),
    interval_s: Annotated[float, typer.Option(help="seconds between two uplinks of a device")] = 2.0,
    camera: Annotated[
        bool, typer.Option(help="a camera playing the demo clip through the edge worker")
    ] = True,
    log_level: LogLevel = "warning",
) -> None:
    """Run everything on this machine: embedded broker, gateway, SQLite sink, API, simulated street."""
    from gridgate.demo import Demo

    setup_logging(log_level)
    d = Demo(
        api_port=api_port,
        mqtt_port=mqtt_port,
        devices=devices,
        data_dir=data_dir,
        interval_s=interval_s,
        camera=camera,
    )
    d.start()
    print(d.banner(), flush=True)
    try:
        wait_for_signal()
    finally:
        console.print("stopping ...")
        d.stop()
        console.print("stopped cleanly")


if __name__ == "__main__":
    app()
