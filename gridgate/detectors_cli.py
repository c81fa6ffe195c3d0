"""`gridgate detectors ...`: train, export and evaluate the street detector; write the demo clip;
`predict` shows what the box's models see on a picture, folder, video or stream.

Everything here imports the edge stack (torch, ultralytics, OpenCV) inside the command, so the
`gridgate` command itself runs where only the gateway is installed.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from gridgate.config import ConfigError

if TYPE_CHECKING:
    from detectors.ensemble import ModelSet
    from detectors.predict import Summary
    from detectors.tracking import TrackerConfig
    from detectors.zones import Zone

app = typer.Typer(
    help="The YOLO street detector: train, export, eval, demo clip, predict.", no_args_is_help=True
)
console = Console(stderr=True)

Weights = Annotated[Path, typer.Option("-w", "--weights", help=".pt, .onnx or an OpenVINO directory")]


def _need_edge() -> None:
    try:
        import cv2  # noqa: F401
        import ultralytics  # noqa: F401
    except ImportError as exc:
        console.print(f"[red]{exc.name} is missing: install the edge extra, pip install -e '.[edge]'[/red]")
        raise typer.Exit(2) from exc


@app.command()
def train(
    images: Annotated[int, typer.Option(help="synthetic training images")] = 4000,
    val_images: Annotated[int, typer.Option(help="synthetic validation images")] = 400,
    seed: Annotated[int, typer.Option(help="seed of the scenes and of training")] = 0,
    epochs: int = 30,
    imgsz: Annotated[int, typer.Option(help="training size; exports use its 16:9 shape")] = 640,
    batch: int = 32,
    device: Annotated[str, typer.Option(help="`cpu`, or `0` for the first CUDA GPU")] = "cpu",
    model: Annotated[
        str, typer.Option(help="a model YAML (trained from scratch) or a .pt to fine-tune from")
    ] = "yolo26n.yaml",
    data: Annotated[
        Path | None,
        typer.Option(help="your own labelled dataset (ultralytics data.yaml); no synthetic scenes then"),
    ] = None,
    scenes: Annotated[
        str,
        typer.Option(help="`street3d`: any camera's view (detectors/scene3d.py); `flat`: the demo street"),
    ] = "street3d",
    flat_share: Annotated[float, typer.Option(help="street3d: share of flat demo-street views")] = 0.15,
    workers: Annotated[int, typer.Option(help="data loader and scene rendering processes")] = 2,
    time_h: Annotated[float, typer.Option(help="stop after this many hours (0: run all epochs)")] = 0.0,
    out: Annotated[Path, typer.Option(help="dataset and run directory")] = Path("var/detectors/train"),
    ship: Annotated[
        bool,
        typer.Option(
            help="copy the best weights to detectors/weights with ONNX and MODEL_CARD.md "
            "(the demo's model: not for your own data)"
        ),
    ] = False,
) -> None:
    """Render synthetic street scenes (any camera) and train a small YOLO on them, offline; or `--data`."""
    _need_edge()
    from detectors.train import ship as ship_model
    from detectors.train import train as run

    args = {
        "images": images, "val_images": val_images, "seed": seed, "epochs": epochs, "imgsz": imgsz,
        "batch": batch, "device": device, "model": model, "workers": workers, "time_h": time_h,
        "data": str(data) if data else scenes, "flat_share": flat_share,
    }  # fmt: skip
    res = run(
        out, images, val_images, seed, epochs, imgsz, batch, device, model, workers, time_h=time_h, data=data,
        scenes=scenes, flat_share=flat_share,
    )  # fmt: skip
    console.print(
        f"best {res.best_pt}: mAP50 {res.map50:.3f}, mAP50-95 {res.map50_95:.3f} ({res.seconds / 60:.1f} min)"
    )
    if ship:
        pt = ship_model(res, "gridgate detectors " + shlex.join(sys.argv[sys.argv.index("train") :]), args)
        console.print(f"shipped {pt} (+ street.onnx, MODEL_CARD.md)")


@app.command()
def dataset(
    src: Annotated[
        Path, typer.Option("--from", help="the edge box's kept frames (feedback.dir, e.g. var/edge/feedback)")
    ],
    out: Annotated[Path, typer.Option("--out", help="the dataset folder to write (new or empty)")],
    val_fraction: Annotated[float, typer.Option(help="share of events (or frames) put in val")] = 0.2,
    classes: Annotated[
        str,
        typer.Option(help="`shipped`: the shipped model's classes (+ any other found); `found`: only those"),
    ] = "shipped",
    overwrite: Annotated[bool, typer.Option(help="replace images/ and labels/ of an earlier export")] = False,
) -> None:
    """Export kept frames as a YOLO dataset to correct in a labeller, then `train --data` on it."""
    _need_edge()
    from detectors.dataset import DatasetError, export_dataset

    if classes not in ("shipped", "found"):
        console.print(f"[red]--classes {classes!r}: use `shipped` or `found`[/red]")
        raise typer.Exit(2)
    try:
        s = export_dataset(
            src,
            out,
            val_fraction=val_fraction,
            classes=classes,
            overwrite=overwrite,  # type: ignore[arg-type]
        )
    except DatasetError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    console.print(
        f"wrote {s.data_yaml}: {s.images['train']} train + {s.images['val']} val images, {s.boxes} boxes "
        f"({s.borderline_boxes} borderline), {s.false_alarm_frames} false-alarm frames "
        f"({s.removed_boxes} boxes removed); correct the labels (see {out / 'README.txt'}), then\n"
        f"  gridgate detectors train --data {s.data_yaml} --model detectors/weights/street.pt",
        highlight=False,
    )


@app.command()
def export(
    weights: Weights = Path("detectors/weights/street.pt"),
    fmt: Annotated[list[str], typer.Option("--format", help="onnx and/or openvino")] = ["onnx", "openvino"],  # noqa: B006
    imgsz: Annotated[
        int | None, typer.Option(help="width; height is its 16:9 shape (default: training size)")
    ] = None,
    half: Annotated[bool, typer.Option(help="FP16 OpenVINO weights (half the size)")] = False,
    out: Annotated[Path, typer.Option(help="where the exports are written")] = Path("var/models"),
) -> None:
    """Export a .pt to ONNX / OpenVINO at the camera's 16:9 shape (3.5x faster than square on CPU)."""
    _need_edge()
    from detectors.train import export as run

    for path in run(weights, tuple(fmt), imgsz=imgsz, half=half, out_dir=out):
        console.print(f"wrote {path}")


@app.command("eval")
def evaluate(
    weights: Weights = Path("detectors/weights/street.pt"),
    images: Annotated[int, typer.Option(help="fresh synthetic validation images")] = 300,
    seed: Annotated[int, typer.Option(help="seed of the fresh scenes (not the training seed)")] = 12345,
    device: str = "cpu",
    imgsz: Annotated[
        int | None, typer.Option(help="inference size for a .pt (default: its training size)")
    ] = None,
) -> None:
    """mAP50 and mAP50-95 of any model file on a fresh synthetic validation set."""
    _need_edge()
    from detectors.train import evaluate as run

    r = run(weights, images=images, seed=seed, imgsz=imgsz, device=device)
    print(f"{weights}: mAP50 {r.map50:.3f}  mAP50-95 {r.map50_95:.3f}  on {r.images} images (seed {r.seed})")
    for name, v in r.per_class_map50_95.items():
        print(f"  {name:8s} mAP50-95 {v:.3f}")


@app.command()
def clip(
    out: Annotated[Path, typer.Option("-o", "--out")] = Path("var/demo/street.mp4"),
    duration_s: Annotated[float, typer.Option(help="clip length in seconds")] = 120.0,
    cameras_yaml: Annotated[
        Path | None, typer.Option(help="also write the matching cameras.yaml fragment here")
    ] = None,
) -> None:
    """Write the demo clip (1280x720, 15 fps): a car parks, a puddle grows, a bin overflows."""
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        console.print("[red]OpenCV is missing: install the edge extra, pip install -e '.[edge]'[/red]")
        raise typer.Exit(2) from exc
    from detectors.clip import DEMO_CAMERA_YAML, write_clip

    codec = write_clip(out, duration_s=duration_s)
    console.print(f"wrote {out} ({codec}, {duration_s:.0f} s)")
    if cameras_yaml is not None:
        cameras_yaml.parent.mkdir(parents=True, exist_ok=True)
        cameras_yaml.write_text(DEMO_CAMERA_YAML)
        console.print(f"wrote {cameras_yaml}")


@dataclass
class Models:
    """The models a camera runs, with its zones and tracker settings (what `predict` draws)."""

    models: ModelSet
    zones: list[Zone]
    tracking: TrackerConfig | None


def load_models_for(config: Path | None, camera: str | None, weights: Path | None) -> Models:
    """`--weights` alone, or cameras.yaml's models (those `--camera` uses) and that camera's zones.

    Raises typer.Exit with the problem printed (a bad file, an unknown camera, missing weights).
    """
    from detectors.ensemble import ModelSet
    from edge.config import EdgeConfig, ModelConfig, load_edge_config
    from edge.scheduler import ModelMissing, load_detector, load_model_set

    cfg = EdgeConfig()
    if config is not None:
        try:
            cfg = load_edge_config(config)
        except ConfigError as err:
            console.print(f"[red]{err.render()}[/red]", highlight=False)
            raise typer.Exit(2) from err
    cam = None
    if camera is not None:
        cam = next((c for c in cfg.cameras if c.id == camera), None)
        if cam is None:
            known = ", ".join(c.id for c in cfg.cameras) or "none"
            console.print(f"[red]{config}: no camera {camera!r} (cameras: {known}); pass --config too[/red]")
            raise typer.Exit(2)
    if weights is not None and not weights.exists():
        console.print(f"[red]--weights {weights} does not exist (a .pt, .onnx or OpenVINO folder)[/red]")
        raise typer.Exit(2)
    try:
        if weights is not None:
            models = ModelSet([load_detector(ModelConfig(path=weights))])
        elif cam is not None and cam.models:
            chosen = [(i, m) for i, m in enumerate(cfg.model_list) if m.label in cam.models]
            models = ModelSet([load_detector(m, f"models[{i}]") for i, m in chosen], cfg.merge_iou)
        else:
            models = load_model_set(cfg)
    except ModelMissing as exc:
        console.print(f"[red]{config or 'weights'}: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc
    return Models(models, list(cam.zones) if cam else [], cam.tracking if cam else None)


def summary_table(summary: Summary, title: str) -> Table:
    table = Table(title=title)
    for col in ("label", "detections", "per frame", "max score", "mean score"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, s in sorted(summary.labels.items()):
        table.add_row(
            label,
            str(s.count),
            f"{s.count / max(1, summary.frames):.2f}",
            f"{s.max_score:.2f}",
            f"{s.mean_score:.2f}",
        )
    if not summary.labels:
        table.add_row("(nothing)", "0", "0", "-", "-")
    return table


@app.command()
def predict(
    source: Annotated[
        str, typer.Argument(help="a picture, a folder of pictures, a video file or rtsp://...")
    ],
    config: Annotated[
        Path | None, typer.Option("-c", "--config", help="cameras.yaml: its models (and zones with --camera)")
    ] = None,
    camera: Annotated[
        str | None, typer.Option(help="a camera id of --config: draw its zones, run only its models")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("-w", "--weights", help="one model instead of --config's (.pt, .onnx, ...)")
    ] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="folder for the annotated output")] = Path(
        "var/predict"
    ),
    frames: Annotated[int, typer.Option(min=1, help="video or stream: analyse this many frames")] = 100,
) -> None:
    """Run the models on SOURCE; write annotated pictures (an MP4 for a video or stream) and a summary."""
    _need_edge()
    from detectors.predict import SourceError, source_type
    from detectors.predict import predict as run
    from edge.capture import redact

    try:
        source_type(source)  # before the models load: a wrong path fails at once
        loaded = load_models_for(config, camera, weights)
        summary = run(source, loaded.models, out, loaded.zones, frames, loaded.tracking)
    except SourceError as exc:
        console.print(f"[red]{redact(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    versions = ", ".join(loaded.models.versions.values())
    Console().print(summary_table(summary, f"{redact(source)}: {summary.frames} frames, models {versions}"))
    for path in summary.outputs:
        console.print(f"wrote {path}", highlight=False)
