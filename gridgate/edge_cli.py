"""`gridgate edge`: the edge worker (`gridgate edge -c config/cameras.yaml`), `probe URL`, `check`.

Imports of OpenCV, torch and ultralytics stay inside the commands, so the gateway's CLI loads
without the edge extras installed.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gridgate.config import ConfigError
from gridgate.logs import setup_logging

edge_app = typer.Typer(
    help="The edge worker: cameras -> YOLO -> zone rules -> video events over MQTT.",
    invoke_without_command=True,
)
console = Console(stderr=True)

EdgeConfigOpt = Annotated[Path, typer.Option("-c", "--config", help="cameras.yaml")]
LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")]


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]{message}[/red]", highlight=False)
    raise typer.Exit(code)


@edge_app.callback()
def edge_main(
    ctx: typer.Context,
    config: EdgeConfigOpt = Path("config/cameras.yaml"),
    log_level: LogLevel = "info",
) -> None:
    """Run the edge worker (the default), or a subcommand."""
    if ctx.invoked_subcommand is None:
        run(config, log_level)


@edge_app.command("run")
def run(config: EdgeConfigOpt = Path("config/cameras.yaml"), log_level: LogLevel = "info") -> None:
    """Watch every camera of cameras.yaml until SIGINT/SIGTERM."""
    setup_logging(log_level)
    try:
        from edge.config import load_edge_config
        from edge.scheduler import ModelMissing, load_models
        from edge.worker import EdgeWorker
    except ImportError as exc:
        _fail(f"the edge worker needs its extras: pip install -e '.[edge]' ({exc})")
    try:
        cfg = load_edge_config(config)
    except ConfigError as err:
        _fail(err.render())
    if not cfg.cameras:
        _fail(f"{config}: no cameras: add at least one under `cameras:`")
    try:
        detector = load_models(cfg)
    except ModelMissing as exc:
        _fail(f"{config}: {exc}")
    worker = EdgeWorker(cfg, detector)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        worker.start()
        worker.run(stop)
    finally:
        worker.stop()


@edge_app.command("probe")
def probe_cmd(
    url: Annotated[str, typer.Argument(help="rtsp://..., http://..., a file, or device:0")],
    out: Annotated[Path, typer.Option("-o", "--out", help="where to save one frame")] = Path("probe.jpg"),
    timeout_s: Annotated[float, typer.Option("--timeout", help="open/read timeout, seconds")] = 10.0,
) -> None:
    """Open a stream, print its resolution and frame rate, and save one frame."""
    try:
        from edge.capture import CaptureError, probe
    except ImportError as exc:
        _fail(f"probing needs the edge extras: pip install -e '.[edge]' ({exc})")
    try:
        info = probe(url, out, timeout_s)
    except CaptureError as exc:
        _fail(str(exc), 1)
    print(json.dumps(info))


@edge_app.command("check")
def check_cmd(config: EdgeConfigOpt = Path("config/cameras.yaml")) -> None:
    """Validate cameras.yaml; on error name the field path and the fix."""
    from edge.config import load_edge_config

    try:
        cfg = load_edge_config(config)
    except ConfigError as err:
        _fail(err.render())
    zones = sum(len(c.zones) for c in cfg.cameras)
    console.print(
        f"[green]{config}: ok[/green], edge {cfg.edge_id}, {len(cfg.cameras)} cameras, {zones} zones",
        highlight=False,
    )
