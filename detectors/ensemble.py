"""Several models on one edge box: each runs on the same batched frames, their detections merged.

A COCO model finds vehicles on real streets, the street model finds water, bins and garbage; each
has its own class map and thresholds (`detectors.model.Detector`). Where two models see the same
object under the same gridgate label, class-aware non-maximum suppression keeps the higher score,
so the tracker sees one object. Different labels never suppress each other (a bin on a puddle is
both). With one model nothing is merged: the single-model path costs what it did.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import numpy as np

from detectors.model import Detection


class ModelLike(Protocol):
    name: str
    version: str

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]: ...


def merge(detections: Sequence[Detection], iou: float) -> list[Detection]:
    """Class-aware NMS: within each label, a box overlapping a higher-scored one by `iou` or more
    goes. Pure; keeps the input order of the survivors' scores (highest first)."""
    if len(detections) < 2:
        return list(detections)
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    dets = [detections[i] for i in order]
    boxes = np.array([d.box for d in dets], dtype=np.float64)
    labels = np.array([d.label for d in dets])
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = np.ones(len(dets), dtype=bool)
    for i in range(len(dets)):
        if not keep[i]:
            continue
        rest = np.arange(i + 1, len(dets))
        rest = rest[keep[rest] & (labels[rest] == labels[i])]
        if rest.size == 0:
            continue
        ix = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None
        )
        iy = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None
        )
        inter = ix * iy
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        keep[rest[overlap >= iou]] = False
    return [d for d, k in zip(dets, keep, strict=True) if k]


class ModelSet:
    """The box's models: `detect` runs each on the frames that use it and merges per frame."""

    def __init__(self, models: Sequence[ModelLike], merge_iou: float = 0.5) -> None:
        if not models:
            raise ValueError("a ModelSet needs at least one model")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique: {names}")
        self.models = list(models)
        self.merge_iou = merge_iou

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def versions(self) -> dict[str, str]:
        """Model name -> `file@sha12[+version]`: what the stats report."""
        return {m.name: m.version for m in self.models}

    def detect(
        self, frames: list[np.ndarray], use: Sequence[Collection[str] | None] | None = None
    ) -> list[list[Detection]]:
        """Detections per frame; `use[i]` names the models frame i goes through (None: all)."""
        if len(self.models) == 1 and use is None:
            return self.models[0].detect(frames)
        found: list[list[list[Detection]]] = [[] for _ in frames]
        for m in self.models:
            idx = [i for i in range(len(frames)) if use is None or use[i] is None or m.name in use[i]]  # type: ignore[operator]
            if not idx:
                continue
            for i, dets in zip(idx, m.detect([frames[i] for i in idx]), strict=True):
                found[i].append(dets)
        return [
            parts[0] if len(parts) == 1 else merge([d for p in parts for d in p], self.merge_iou)
            for parts in found
        ]
