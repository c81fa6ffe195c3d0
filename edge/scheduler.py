"""One detector for every camera of the box: frames that are due at the same time go through the
model in one batch.

The gate decides per camera which frames are worth analysing; the scheduler takes the newest
frame of each camera in turn (a rotating start, so no camera starves when the model falls behind),
groups up to `max_batch` due frames and runs them together.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from detectors.ensemble import ModelSet
from detectors.zones import DetectionLike
from edge.config import EdgeConfig, ModelConfig

log = logging.getLogger("gridgate.edge.scheduler")


class DetectorLike(Protocol):
    def detect(self, frames: list[np.ndarray]) -> Sequence[Sequence[DetectionLike]]: ...


class ModelMissing(Exception):
    """No weights at model.path; the message says how to get some."""


def load_detector(cfg: ModelConfig, where: str = "model") -> DetectorLike:
    """Build `detectors.model.Detector` from `model:` or an entry of `models:` (named by `where` in
    errors), passing the options its signature accepts."""
    if not cfg.path.exists():
        raise ModelMissing(
            f"{where}.path {cfg.path} (model {cfg.label}) does not exist: copy the weights there (a COCO "
            "checkpoint such as yolo11n.pt works as it is), train one with `gridgate detectors train`, "
            "or point path at .pt/.onnx/OpenVINO weights"
        )
    from detectors import model as model_mod

    detector_cls: Any = model_mod.Detector
    wanted = {
        "name": cfg.label,
        "unmapped": cfg.unmapped,
        "path": cfg.path,
        "weights": cfg.path,
        "model": cfg.path,
        "imgsz": cfg.imgsz,
        "device": cfg.device,
        "class_map": cfg.class_map,
        "min_score": cfg.min_score,
        "min_area_ratio": cfg.min_area_ratio,
        "min_area": cfg.min_area_ratio,
        "threads": cfg.threads,
    }
    if hasattr(detector_cls, "from_config"):
        try:
            return detector_cls.from_config(cfg)  # type: ignore[no-any-return]
        except TypeError:
            pass
    params = inspect.signature(detector_cls).parameters
    kwargs = {k: v for k, v in wanted.items() if k in params and v is not None}
    first = next(iter(params), None)
    if first and first not in kwargs and params[first].default is inspect.Parameter.empty:
        kwargs[first] = cfg.path
    return detector_cls(**kwargs)  # type: ignore[no-any-return]


def load_model_set(cfg: EdgeConfig) -> ModelSet:
    """Every model of cameras.yaml as one `ModelSet` (one model: no merging)."""
    if not cfg.models:
        return ModelSet([load_detector(cfg.model)])
    return ModelSet([load_detector(m, f"models[{i}]") for i, m in enumerate(cfg.models)], cfg.merge_iou)


def load_models(cfg: EdgeConfig) -> ModelSet | ParallelModels:
    """The worker's models: `load_model_set`, loaded `inference_copies` times when more than once."""
    copies = inference_copies(cfg.inference_threads)
    if copies == 1:
        return load_model_set(cfg)
    return ParallelModels([load_model_set(cfg) for _ in range(copies)])


def inference_copies(configured: int | None, cores: int | None = None) -> int:
    """`inference_threads` as configured, else 2 on a box with 2 or more cores, else 1."""
    if configured is not None:
        return configured
    return 2 if (cores if cores is not None else os.cpu_count() or 1) >= 2 else 1


class ParallelModels:
    """Copies of the box's models, each inferring its share of a batch on a thread of its own.

    The runtimes release the GIL while they infer, so two copies keep two cores on inference where
    one copy leaves the second to the decoders. A copy is never shared between threads (an
    ultralytics predictor is not thread-safe); detection is stateless (tracking is per camera, in the
    worker), so which copy sees a frame does not matter.
    """

    def __init__(self, copies: Sequence[ModelSet]) -> None:
        if not copies:
            raise ValueError("ParallelModels needs at least one copy")
        self.copies = list(copies)
        self._pool = ThreadPoolExecutor(len(self.copies), thread_name_prefix="inference")

    @property
    def names(self) -> list[str]:
        return self.copies[0].names

    @property
    def versions(self) -> dict[str, str]:
        return self.copies[0].versions

    def detect(
        self, frames: list[np.ndarray], use: Sequence[Collection[str] | None] | None = None
    ) -> list[list[DetectionLike]]:
        """Frame i goes to copy i mod k; the results come back in the frames' order."""
        k = min(len(self.copies), len(frames))
        if k <= 1:
            return list(self.copies[0].detect(frames, use))
        shares = [list(range(j, len(frames), k)) for j in range(k)]
        futures = [
            self._pool.submit(
                self.copies[j].detect,
                [frames[i] for i in idx],
                None if use is None else [use[i] for i in idx],
            )
            for j, idx in enumerate(shares)
        ]
        out: list[list[DetectionLike]] = [[] for _ in frames]
        for idx, fut in zip(shares, futures, strict=True):
            for i, dets in zip(idx, fut.result(), strict=True):
                out[i] = list(dets)
        return out


@dataclass(slots=True)
class BatchResult:
    detections: list[Sequence[DetectionLike]]
    ms_per_frame: float


def run_batch(
    detector: DetectorLike, images: list[np.ndarray], use: Sequence[Collection[str] | None] | None = None
) -> BatchResult:
    """Run one batch (`use`: the models each frame goes through, for a ModelSet); the time per frame
    is the batch's time shared equally."""
    t0 = time.perf_counter()
    out = list(detector.detect(images) if use is None else detector.detect(images, use))  # type: ignore[call-arg]
    ms = (time.perf_counter() - t0) * 1000.0
    if len(out) != len(images):
        raise RuntimeError(f"detector returned {len(out)} results for {len(images)} frames")
    return BatchResult(out, ms / max(1, len(images)))


class NullDetector:
    """Detects nothing: runs the capture/motion/publish path without a model (probing, benches)."""

    def detect(self, frames: list[np.ndarray]) -> list[list[DetectionLike]]:
        return [[] for _ in frames]
