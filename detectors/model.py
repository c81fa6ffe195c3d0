"""The YOLO detector shared by every camera of an edge box: any format ultralytics loads.

`Detector.detect` turns BGR frames into `Detection`s in relative 0-1 coordinates with gridgate
labels (`vehicle`, `water`, `bin`, `garbage`, `bin_overflow`), after the per-label score and area
filters. The backend (PyTorch, ONNX Runtime, OpenVINO) is a configuration choice: a .pt is exported
on demand to the asked format at the camera's 16:9 shape and cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from detectors.evaluate import load_thresholds

log = logging.getLogger("gridgate.detectors.model")

Backend = Literal["pytorch", "onnx", "openvino"]
Unmapped = Literal["keep", "ignore"]
Box = tuple[float, float, float, float]

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "street.pt"
TRACKER_YAML = Path(__file__).parent / "bytetrack.yaml"
IGNORE = "ignore"

# model class name -> gridgate label; covers the shipped model, COCO and common fine-tune names
DEFAULT_CLASS_MAP: dict[str, str] = {
    "car": "vehicle",
    "truck": "vehicle",
    "bus": "vehicle",
    "van": "vehicle",
    "motorcycle": "vehicle",
    "vehicle": "vehicle",
    "water": "water",
    "puddle": "water",
    "ponding": "water",
    "flood": "water",
    "bin": "bin",
    "trash_bin": "bin",
    "garbage_bin": "bin",
    "dumpster": "bin",
    "garbage": "garbage",
    "trash": "garbage",
    "litter": "garbage",
    "bin_overflow": "bin_overflow",
    "overflowing_bin": "bin_overflow",
}
DEFAULT_MIN_SCORE: dict[str, float] = {"vehicle": 0.4, "water": 0.35, "bin": 0.4, "garbage": 0.35}
DEFAULT_MIN_AREA_RATIO: dict[str, float] = {
    "vehicle": 0.002,
    "water": 0.001,
    "bin": 0.0005,
    "garbage": 0.0005,
}
FALLBACK_MIN_SCORE = 0.25


@dataclass(frozen=True, slots=True)
class Detection:
    """One object in one frame; box is (x1, y1, x2, y2) relative to the frame (0-1)."""

    label: str
    score: float
    box: Box
    class_name: str
    polygon: tuple[tuple[float, float], ...] | None = None  # water masks from segmentation models
    track_id: int | None = None
    model: str = ""  # name of the model that found it (several may run on one box)

    @property
    def area_ratio(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    @property
    def bottom_centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, self.box[3]


class LabelPolicy:
    """Class map plus per-label minimum score and minimum area: pure, testable without a model."""

    def __init__(
        self,
        class_map: Mapping[str, str] | None = None,
        min_score: Mapping[str, float] | None = None,
        min_area_ratio: Mapping[str, float] | None = None,
        unmapped: Unmapped = "keep",
    ) -> None:
        self.class_map = {**DEFAULT_CLASS_MAP, **(class_map or {})}
        self.min_score = {**DEFAULT_MIN_SCORE, **(min_score or {})}
        self.min_area_ratio = {**DEFAULT_MIN_AREA_RATIO, **(min_area_ratio or {})}
        self.unmapped = unmapped

    def label(self, class_name: str) -> str | None:
        """The gridgate label of a model class; `ignore` drops it, and so does `unmapped: ignore` for a
        class in no map (else it keeps its name)."""
        label = self.class_map.get(class_name, self.class_map.get(class_name.lower()))
        if label is None:
            label = IGNORE if self.unmapped == IGNORE else class_name
        return None if label == IGNORE else label

    def lowest_score(self) -> float:
        """The least score any label accepts: what the model is asked for."""
        return min([FALLBACK_MIN_SCORE, *self.min_score.values()])

    def accept(self, label: str, score: float, box: Box) -> bool:
        area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
        return score >= self.min_score.get(label, FALLBACK_MIN_SCORE) and area >= self.min_area_ratio.get(
            label, 0.0
        )

    def make(
        self,
        class_name: str,
        score: float,
        box: Box,
        polygon: tuple[tuple[float, float], ...] | None = None,
        track_id: int | None = None,
        model: str = "",
    ) -> Detection | None:
        """A Detection if the class is wanted and passes its filters, else None."""
        label = self.label(class_name)
        if label is None or not self.accept(label, score, box):
            return None
        return Detection(label, float(score), box, class_name, polygon, track_id, model)


def backend_of(path: Path) -> Backend:
    """The backend a weights path implies: .pt PyTorch, .onnx ONNX Runtime, a directory OpenVINO."""
    if path.is_dir() or path.name.endswith("_openvino_model"):
        return "openvino"
    return "onnx" if path.suffix == ".onnx" else "pytorch"


def is_demo_model(weights: Path) -> bool:
    """The shipped synthetic-scene model (or an export of it cached as `street-<digest>`)."""
    stem = Path(weights).name.removesuffix("_openvino_model").split(".")[0]
    return (
        stem == DEFAULT_WEIGHTS.stem
        or re.fullmatch(rf"{DEFAULT_WEIGHTS.stem}-[0-9a-f]{{10}}", stem) is not None
    )


def model_version(weights: Path) -> str:
    """`name@sha12` of a weights file (an OpenVINO directory: its .bin), plus `+version` when a
    `{stem}.json` or `{stem}.yaml` beside it says `version:` (what a person who trained it wrote)."""
    weights = Path(weights)
    data = next(iter(sorted(weights.glob("*.bin"))), None) if weights.is_dir() else weights
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:12] if data and data.is_file() else "missing"
    text = f"{weights.name}@{digest}"
    for meta in (weights.with_suffix(".json"), weights.with_suffix(".yaml")):
        if meta.is_file() and meta != weights:
            try:
                version = (yaml.safe_load(meta.read_text(encoding="utf-8")) or {}).get("version")
            except (yaml.YAMLError, AttributeError, UnicodeDecodeError) as exc:
                log.warning("event=model_metadata_unreadable file=%s error=%s", meta, exc)
                continue
            if version is not None:
                return f"{text}+{version}"
    return text


def set_threads(threads: int | None = None) -> int:
    """Give torch every core (ultralytics leaves it at one on a 2-core box); returns the count."""
    n = threads or os.cpu_count() or 1
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch comes with ultralytics
        pass
    return n


def resolve_weights(
    weights: Path, backend: Backend | None, imgsz: int | None = None, cache_dir: Path = Path("var/models")
) -> Path:
    """The file or directory to load for `backend`, exporting a .pt once into `cache_dir` when needed."""
    weights = Path(weights)
    have = backend_of(weights)
    if backend is None or backend == have:
        return weights
    if have != "pytorch":
        sibling = weights.with_suffix(".pt") if have == "onnx" else None
        if sibling is None or not sibling.exists():
            raise ValueError(f"{weights} is {have}; give the .pt to use backend {backend}")
        weights = sibling
    if backend == "onnx" and weights.with_suffix(".onnx").exists():
        return weights.with_suffix(".onnx")
    from detectors.train import export, export_shape

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    stem = f"{weights.stem}-{digest}"
    target = cache_dir / (f"{stem}_openvino_model" if backend == "openvino" else f"{stem}.onnx")
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    local = cache_dir / f"{stem}.pt"
    shutil.copyfile(weights, local)
    log.info(
        "exporting %s to %s at %s", weights, backend, export_shape(imgsz) if imgsz else "its training size"
    )
    return export(local, (backend,), imgsz=imgsz)[0]


class Detector:
    """One YOLO model for all cameras: batched detection and a per-camera ByteTrack path."""

    def __init__(
        self,
        weights: Path | str = DEFAULT_WEIGHTS,
        backend: Backend | None = None,
        imgsz: int | Sequence[int] | None = None,
        device: str = "cpu",
        class_map: Mapping[str, str] | None = None,
        min_score: Mapping[str, float] | None = None,
        min_area_ratio: Mapping[str, float] | None = None,
        threads: int | None = None,
        max_batch: int = 8,
        tracker: Path = TRACKER_YAML,
        cache_dir: Path = Path("var/models"),
        unmapped: Unmapped = "keep",
        name: str | None = None,
    ) -> None:
        from detectors.train import offline_env

        offline_env()
        set_threads(threads)
        from ultralytics import YOLO

        size_hint = imgsz if isinstance(imgsz, int) else None
        self.name = name or Path(weights).stem
        self.version = model_version(Path(weights))
        self.path = resolve_weights(Path(weights), backend, size_hint, cache_dir)
        self.backend: Backend = backend_of(self.path)
        self.model = YOLO(str(self.path), task="detect")
        self.imgsz = self._input_size(imgsz)
        self.device = device
        # per-label thresholds calibrated for these weights (detectors.evaluate), then the config's own
        self.thresholds = load_thresholds(Path(weights))
        self.policy = LabelPolicy(
            class_map, {**self.thresholds, **(min_score or {})}, min_area_ratio, unmapped
        )
        self.max_batch = max_batch
        self.tracker_yaml = Path(tracker)
        self._trackers: dict[str, Any] = {}
        self.threads = threads
        self._runtime_tuned = self.backend != "openvino"

    @classmethod
    def from_config(cls, cfg: Any) -> Detector:
        """Build from an edge `model:` section (path, imgsz, device, class_map, min_score, ...)."""
        keys = (
            "name",
            "unmapped",
            "backend",
            "imgsz",
            "device",
            "class_map",
            "min_score",
            "min_area_ratio",
            "threads",
            "max_batch",
        )
        kw = {k: getattr(cfg, k) for k in keys if getattr(cfg, k, None) is not None}
        return cls(cfg.path, **kw)

    def _input_size(self, imgsz: int | Sequence[int] | None) -> int | tuple[int, int]:
        if self.backend != "pytorch":
            # an export has a fixed input; asking for another size only adds a resize
            from detectors.train import _exported_imgsz

            fixed = _exported_imgsz(self.path)
            if fixed:
                return (int(fixed[0]), int(fixed[1]))
        if imgsz is not None:
            return int(imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
        train_size = int(
            ((getattr(self.model, "ckpt", None) or {}).get("train_args") or {}).get("imgsz", 640)
        )
        from detectors.train import export_shape

        return export_shape(train_size)

    @property
    def class_names(self) -> dict[int, str]:
        return dict(self.model.names)

    def _predict(self, frames: list[np.ndarray]) -> list[Any]:
        conf = self.policy.lowest_score()
        if self.backend == "pytorch":
            return list(
                self.model.predict(frames, imgsz=self.imgsz, conf=conf, device=self.device, verbose=False)
            )
        # exported models are built for batch 1
        out: list[Any] = []
        for f in frames:
            out += self.model.predict(f, imgsz=self.imgsz, conf=conf, device=self.device, verbose=False)
            if not self._runtime_tuned:  # the runtime exists once the first frame went through
                self._unpin_openvino()
        return out

    def _unpin_openvino(self) -> None:
        """Compile the OpenVINO model again without CPU pinning (and with `threads`, if given).

        Ultralytics compiles it with OpenVINO's LATENCY defaults, which pin one inference thread to
        each core. On an edge box the camera decoders always hold some core, and the pinned thread
        waits for that core instead of moving. Beside four ffmpeg decoders on 2 cores, a frame took
        138 ms pinned and 54 ms unpinned (47 ms with one thread).
        """
        self._runtime_tuned = True
        backend = getattr(getattr(self.model.predictor, "model", None), "backend", None)
        compile_model = getattr(backend, "compile_model", None)
        if compile_model is None or not hasattr(backend, "ov"):
            log.warning("event=openvino_not_tuned model=%s reason=unknown ultralytics backend", self.name)
            return
        xml = self.path if self.path.is_file() else next(self.path.glob("*.xml"))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            model = backend.ov.Core().read_model(model=str(xml), weights=xml.with_suffix(".bin"))
            backend.ov_compiled_model = compile_model(model, config=config)
        except RuntimeError as exc:  # a device (AUTO, GPU, NPU) that does not take these CPU settings
            log.warning("event=openvino_not_tuned model=%s error=%s", self.name, str(exc).splitlines()[0])
            return
        threads = self.threads or "all"
        log.info("event=openvino_compiled model=%s pinning=false threads=%s", self.name, threads)

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detections for each BGR frame, frames ready together inferred as one batch."""
        results: list[list[Detection]] = []
        for k in range(0, len(frames), self.max_batch):
            for res in self._predict(frames[k : k + self.max_batch]):
                results.append(self._convert(res))
        return results

    def _convert(self, res: Any, track_ids: Sequence[int] | None = None) -> list[Detection]:
        boxes = res.boxes
        if boxes is None or len(boxes) == 0:
            return []
        xyxyn = boxes.xyxyn.cpu().numpy()
        conf = boxes.conf.cpu().numpy()
        cls = boxes.cls.cpu().numpy().astype(int)
        polys = res.masks.xyn if getattr(res, "masks", None) is not None else None
        ids = track_ids
        if ids is None and boxes.id is not None:
            ids = boxes.id.cpu().numpy().astype(int).tolist()
        out = []
        for i in range(len(conf)):
            name = res.names[int(cls[i])]
            box = tuple(float(v) for v in np.clip(xyxyn[i], 0.0, 1.0))
            poly = tuple((float(x), float(y)) for x, y in polys[i]) if polys is not None else None
            tid = int(ids[i]) if ids is not None else None
            det = self.policy.make(name, float(conf[i]), box, poly, tid, self.name)  # type: ignore[arg-type]
            if det is not None:
                out.append(det)
        return out

    def track(self, frame: np.ndarray, persist: bool = True, camera: str = "default") -> list[Detection]:
        """Detections with ByteTrack ids for one camera's frame; each camera keeps its own tracker."""
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import YAML, IterableSimpleNamespace

        res = self._predict([frame])[0]
        tracker = self._trackers.get(camera) if persist else None
        if tracker is None:
            cfg = IterableSimpleNamespace(**YAML.load(self.tracker_yaml))
            tracker = BYTETracker(args=cfg)
            self._trackers[camera] = tracker
        boxes = res.boxes.cpu().numpy()
        tracks = tracker.update(boxes, res.orig_img)
        if len(tracks) == 0:
            return []
        # tracks rows: x1, y1, x2, y2, id, score, cls, index of the detection
        h, w = res.orig_shape
        out = []
        for row in tracks:
            x1, y1, x2, y2, tid, score, c = row[:7]
            box = (
                float(np.clip(x1 / w, 0, 1)), float(np.clip(y1 / h, 0, 1)),
                float(np.clip(x2 / w, 0, 1)), float(np.clip(y2 / h, 0, 1)),
            )  # fmt: skip
            det = self.policy.make(res.names[int(c)], float(score), box, None, int(tid), self.name)
            if det is not None:
                out.append(det)
        return out

    def forget(self, camera: str) -> None:
        """Drop a camera's tracker (camera removed or stream restarted)."""
        self._trackers.pop(camera, None)
