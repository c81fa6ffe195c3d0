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
    detect: Annotated[
        bool, typer.Option("--detect", help="also run the models of --config on a few frames")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("-c", "--config", help="cameras.yaml whose models --detect runs")
    ] = None,
    camera: Annotated[str | None, typer.Option(help="--detect: that camera's models and zones")] = None,
    frames: Annotated[int, typer.Option(min=1, help="--detect: frames to analyse")] = 5,
) -> None:
    """Open a stream, print its resolution and frame rate, and save one frame; with --detect, what
    the models find on a few frames (the last one annotated beside --out)."""
    try:
        from edge.capture import CaptureError, probe
    except ImportError as exc:
        _fail(f"probing needs the edge extras: pip install -e '.[edge]' ({exc})")
    try:
        info = probe(url, out, timeout_s)
    except CaptureError as exc:
        _fail(str(exc), 1)
    if detect:
        info |= _detect(url, out, config, camera, frames)
    print(json.dumps(info))


def _detect(url: str, out: Path, config: Path | None, camera: str | None, frames: int) -> dict[str, object]:
    import cv2

    from detectors.annotate import annotate
    from detectors.predict import SourceError, Summary, read_frames
    from edge.capture import redact
    from gridgate.detectors_cli import load_models_for, summary_table

    loaded = load_models_for(config if config is not None else Path("config/cameras.yaml"), camera, None)
    summary = Summary()
    last = None
    try:
        for img, _ts in read_frames(url, frames):
            dets = loaded.models.detect([img])[0]
            summary.add(dets)
            last = (img, dets)
    except SourceError as exc:
        _fail(redact(str(exc)), 1)
    annotated = out.with_name(f"{out.stem}-detections.jpg")
    if last is not None:
        cv2.imwrite(str(annotated), annotate(last[0], last[1], loaded.zones, f"{len(last[1])} detections"))
    console.print(summary_table(summary, f"{summary.frames} frames of {redact(url)}"))
    return {
        "frames_analysed": summary.frames,
        "models": loaded.models.versions,
        "detections": summary.as_dict(),
        "annotated": str(annotated) if last is not None else None,
    }


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
        f"[green]{config}: ok[/green], edge {cfg.edge_id}, {len(cfg.cameras)} cameras, {zones} zones, "
        f"models {', '.join(m.label for m in cfg.model_list)}",
        highlight=False,
    )
