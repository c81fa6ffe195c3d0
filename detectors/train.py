"""Train, export and evaluate the street detector with ultralytics, offline.

Runs as `gridgate detectors train|export|eval` and, on a machine with only torch and ultralytics
(a GPU box without the gateway's dependencies), as `python -m detectors.train ...` with the same
options. Ultralytics is told never to reach the network: no weights, fonts or update checks.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED_PT = WEIGHTS_DIR / "street.pt"
SHIPPED_ONNX = WEIGHTS_DIR / "street.onnx"
MODEL_CARD = WEIGHTS_DIR / "MODEL_CARD.md"


def offline_env(config_dir: Path | None = None) -> None:
    """Keep ultralytics off the network; call before the first `import ultralytics`."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "false")
    cfg = Path(config_dir or os.environ.get("YOLO_CONFIG_DIR") or Path("var") / "ultralytics").resolve()
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    # ultralytics looks for Arial.ttf there and downloads it when missing: give it a local font
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (cfg / name).exists():
            font = _local_font()
            if font is not None:
                shutil.copyfile(font, cfg / name)


def _local_font() -> Path | None:
    try:
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return p if p.exists() else None
    except ImportError:
        return None


def export_shape(imgsz: int) -> tuple[int, int]:
    """The 16:9 (height, width) at which a model trained at `imgsz` sees a camera frame unscaled."""
    return int(math.ceil(imgsz * 9 / 16 / 32) * 32), imgsz


@dataclass
class TrainResult:
    """What a training run produced and how well it did."""

    best_pt: Path
    map50: float
    map50_95: float
    per_class_map50_95: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def train(
    out: Path,
    images: int = 4000,
    val_images: int = 400,
    seed: int = 0,
    epochs: int = 60,
    imgsz: int = 640,
    batch: int = 32,
    device: str = "cpu",
    model: str = "yolo26n.yaml",
    workers: int = 2,
    patience: int = 100,
    time_h: float = 0.0,
    data: Path | None = None,
    scenes: str = "street3d",
    flat_share: float = 0.15,
    rect: bool = False,
    warmup_epochs: float = 3.0,
) -> TrainResult:
    """Train a YOLO: on synthetic scenes rendered into `out`, or on your own labelled `data`.

    `model` is a YAML (trained from scratch) or a `.pt` (fine-tuned from those weights, e.g. a
    COCO model for vehicles); `data` is an ultralytics dataset YAML of labelled street images.
    `scenes`: "street3d" renders any camera's view (`detectors.scene3d`, its TRAIN domain, with
    `flat_share` of the flat demo street), "flat" only the demo street's side view (`detectors.synth`).
    `rect`: train on whole 16:9 frames (imgsz 640 -> 640x384, no mosaic): 40 % fewer pixels than
    square mosaics, what a CPU-only run can afford.
    """
    from detectors import scene3d, synth

    out = Path(out).resolve()
    offline_env()
    if data is None:
        data = out / "dataset" / "data.yaml"
        stamp = out / "dataset" / f".done-{scenes}-{seed}-{images}-{val_images}-{flat_share}"
        if not stamp.exists():
            shutil.rmtree(out / "dataset", ignore_errors=True)
            jobs = max(1, workers)
            if scenes == "flat":
                synth.write_dataset(out / "dataset", images, val_images, seed=seed, jobs=jobs)
            else:
                scene3d.write_dataset(
                    out / "dataset", images, val_images, seed, flat_share=flat_share, jobs=jobs
                )
            stamp.touch()
    elif not Path(data).is_file():
        raise FileNotFoundError(
            f"{data}: no dataset YAML there (an ultralytics data.yaml with train/val/names)"
        )
    from ultralytics import YOLO

    if device == "cpu":  # ultralytics trains on cpu_count - 1 threads: one of two cores idles
        import ultralytics.utils.torch_utils as tu

        tu.NUM_THREADS = max(tu.NUM_THREADS, os.cpu_count() or 1)
    t0 = time.time()
    yolo = YOLO(model)
    metrics = yolo.train(
        data=str(data),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=device,
        seed=seed,
        deterministic=True,
        workers=workers,
        project=str(out),
        name="run",
        exist_ok=True,
        pretrained=str(model).endswith(".pt"),
        plots=False,
        amp=False,
        patience=patience,
        close_mosaic=max(1, min(10, epochs // 5)),  # the last epochs on whole frames, as cameras see them
        rect=rect,
        warmup_epochs=warmup_epochs,  # 0 when continuing from weights that are already warm
        verbose=False,
        **({"time": time_h} if time_h else {}),
    )
    best = Path(yolo.trainer.best)
    names = metrics.names  # the dataset's own class names, synthetic or yours
    per_class = {names[i]: float(v) for i, v in enumerate(metrics.box.maps[: len(names)])}
    return TrainResult(best, float(metrics.box.map50), float(metrics.box.map), per_class, time.time() - t0)


def export(
    weights: Path,
    formats: tuple[str, ...] = ("onnx",),
    imgsz: int | None = None,
    half: bool = False,
    out_dir: Path | None = None,
) -> list[Path]:
    """Export a .pt to ONNX and/or OpenVINO at the 16:9 shape of its training size; returns the paths.

    Ultralytics writes exports beside the .pt: with `out_dir` the .pt is copied there first.
    """
    offline_env()
    if out_dir is not None and Path(weights).resolve().parent != Path(out_dir).resolve():
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        weights = Path(shutil.copy2(weights, Path(out_dir) / Path(weights).name))
    from ultralytics import YOLO

    yolo = YOLO(str(weights))
    size = imgsz or int((yolo.ckpt or {}).get("train_args", {}).get("imgsz", 640))
    shape = export_shape(size)
    paths = []
    for fmt in formats:
        kw: dict[str, Any] = {"format": fmt, "imgsz": shape, "dynamic": False}
        if fmt == "onnx":
            kw["simplify"] = False  # onnxslim would be installed at run time
        else:
            kw["half"] = half
        paths.append(Path(yolo.export(**kw)))
    return paths


@dataclass
class EvalResult:
    """mAP of a model on a fresh synthetic validation set."""

    map50: float
    map50_95: float
    per_class_map50_95: dict[str, float]
    images: int
    seed: int


def evaluate(
    weights: Path, images: int = 300, seed: int = 12345, imgsz: int | None = None, device: str = "cpu",
    out: Path = Path("var/detectors/eval"), batch: int = 8,
) -> EvalResult:  # fmt: skip
    """mAP50 and mAP50-95 of any model file (.pt, .onnx, OpenVINO dir) on fresh synthetic scenes."""
    from detectors.synth import CLASSES, write_dataset

    out = Path(out).resolve()
    offline_env()
    data = out / f"data-{seed}-{images}" / "data.yaml"
    if not data.exists():
        write_dataset(data.parent, 0, images, seed=seed)
    from ultralytics import YOLO

    w = Path(weights)
    yolo = YOLO(str(w), task="detect")
    size: Any = imgsz or 640
    if w.suffix == ".pt" and imgsz is None and yolo.ckpt:
        size = int(yolo.ckpt.get("train_args", {}).get("imgsz", 640))
    if w.suffix != ".pt":
        # exported models have a fixed input: read it from their metadata
        size = _exported_imgsz(w) or size
        batch = 1
    m = yolo.val(
        data=str(data), imgsz=size, batch=batch, device=device, plots=False, verbose=False,
        project=str(out), name="val", exist_ok=True, rect=False,
    )  # fmt: skip
    per_class = {CLASSES[i]: float(v) for i, v in enumerate(m.box.maps[: len(CLASSES)])}
    return EvalResult(float(m.box.map50), float(m.box.map), per_class, images, seed)


def _exported_imgsz(path: Path) -> Any:
    import yaml

    meta = path / "metadata.yaml" if path.is_dir() else None
    if meta is not None and meta.exists():
        return yaml.safe_load(meta.read_text()).get("imgsz")
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        if "imgsz" in props:
            return [int(v) for v in props["imgsz"].strip("[]").split(",")]
    return None


def versions() -> dict[str, str]:
    """Versions that make a training run reproducible."""
    import torch
    import ultralytics

    return {
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
    }


def write_model_card(
    path: Path, command: str, args: dict[str, Any], result: TrainResult, fresh: EvalResult | None,
    onnx_mb: float,
    pt_mb: float,
) -> None:  # fmt: skip
    """Record how the shipped model was made and how well it does."""
    v = versions()
    rows = "\n".join(f"| {k} | {v} |" for k, v in args.items())
    per = " / ".join(f"{k} {v:.3f}" for k, v in result.per_class_map50_95.items())
    fresh_txt = (
        f"- fresh synthetic set ({fresh.images} images, seed {fresh.seed}, `gridgate detectors eval`): "
        f"mAP50 **{fresh.map50:.3f}**, mAP50-95 **{fresh.map50_95:.3f}**\n"
        f"  per class mAP50-95: {' / '.join(f'{k} {x:.3f}' for k, x in fresh.per_class_map50_95.items())}\n"
        if fresh
        else ""
    )
    path.write_text(
        "# Model card: detectors/weights/street.pt\n\n"
        f"A small YOLO ({args.get('model', '?')}) trained on {_trained_on(args)}. It has never seen a real "
        "photograph: see the README for real weights, and `bench/detect_eval.py` for how it does on\n"
        "cameras it was not trained on.\n\n"
        f"Classes: `car`, `truck` (-> vehicle), `water`, `bin`, `garbage`.\n\n"
        f"## How it was made\n\n```\n{command}\n```\n\n| setting | value |\n| --- | --- |\n{rows}\n"
        f"| ultralytics | {v['ultralytics']} |\n| torch | {v['torch']} |\n| python | {v['python']} |\n"
        f"| trained on | {v['device']} |\n| training time | {result.seconds / 60:.1f} min |\n\n"
        "## How well it does\n\n"
        f"- validation split of its own dataset: mAP50 **{result.map50:.3f}**, "
        f"mAP50-95 **{result.map50_95:.3f}**\n"
        f"  per class mAP50-95: {per}\n{fresh_txt}\n"
        f"## Files\n\n- `street.pt` ({pt_mb:.1f} MB), `street.onnx` ({onnx_mb:.1f} MB, input "
        f"{export_shape(int(args.get('imgsz', 640)))} = 16:9)\n"
        "- OpenVINO: `gridgate detectors export --format openvino` writes it to var/models on demand\n"
        '  (`Detector(..., backend="openvino")` does the same by itself, cached by the weights\' hash).\n'
    )


def _trained_on(args: dict[str, Any]) -> str:
    data = str(args.get("data", args.get("scenes", "street3d")))
    if data == "street3d":
        return (
            "synthetic street scenes from any camera (`detectors/scene3d.py`, TRAIN domain) with "
            f"{float(args.get('flat_share', 0.15)):.0%} flat demo-street views (`detectors/synth.py`)"
        )
    if data in ("flat", "synthetic"):
        return "the flat demo street's synthetic side views (`detectors/synth.py`)"
    return f"the labelled dataset `{data}`"


def ship(
    result: TrainResult,
    command: str,
    args: dict[str, Any],
    weights_dir: Path = WEIGHTS_DIR,
    evaluate_fresh: bool = True,
) -> Path:
    """Copy the best weights into the package, export ONNX beside them and write the model card."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    pt = weights_dir / "street.pt"
    shutil.copyfile(result.best_pt, pt)
    onnx_path = export(pt, ("onnx",))[0]
    fresh = evaluate(pt, device=str(args.get("device", "cpu"))) if evaluate_fresh else None
    write_model_card(
        weights_dir / "MODEL_CARD.md", command, args, result, fresh,
        onnx_path.stat().st_size / 1e6, pt.stat().st_size / 1e6,
    )  # fmt: skip
    return pt


def main(argv: list[str] | None = None) -> int:
    """`python -m detectors.train`: the same as `gridgate detectors train` without the gateway."""
    ap = argparse.ArgumentParser(prog="python -m detectors.train", description=main.__doc__)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--val-images", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="yolo26n.yaml")
    ap.add_argument("--workers", type=int, default=2, help="data loader and dataset rendering processes")
    ap.add_argument(
        "--time-h", type=float, default=0.0, help="stop training after this many hours (0: epochs)"
    )
    ap.add_argument("--scenes", choices=("street3d", "flat"), default="street3d", help="what to render")
    ap.add_argument(
        "--flat-share", type=float, default=0.15, help="street3d: share of flat demo-street views"
    )
    ap.add_argument("--rect", action="store_true", help="whole 16:9 frames (640x384), no mosaic: CPU runs")
    ap.add_argument("--warmup-epochs", type=float, default=3.0, help="0 to continue a run without warm-up")
    ap.add_argument("--out", type=Path, default=Path("var/detectors/train"))
    ap.add_argument("--data", type=Path, help="your data.yaml (`gridgate detectors dataset`): no rendering")
    ap.add_argument("--ship", action="store_true", help="copy best weights into detectors/weights with ONNX")
    a = ap.parse_args(argv)
    args = {k: v for k, v in vars(a).items() if k not in ("out", "ship", "data")}
    res = train(
        a.out,
        a.images,
        a.val_images,
        a.seed,
        a.epochs,
        a.imgsz,
        a.batch,
        a.device,
        a.model,
        a.workers,
        time_h=a.time_h,
        data=a.data,
        scenes=a.scenes,
        flat_share=a.flat_share,
        rect=a.rect,
        warmup_epochs=a.warmup_epochs,
    )
    print(f"best {res.best_pt}: mAP50 {res.map50:.3f} mAP50-95 {res.map50_95:.3f} in {res.seconds:.0f}s")
    if a.ship:
        cmd = "python -m detectors.train " + shlex.join(sys.argv[1:] if argv is None else argv)
        print("shipped", ship(res, cmd, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
