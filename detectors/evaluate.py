"""How well a detector finds what is there: matching, recall, false detections, calibrated thresholds.

Pure functions over boxes (pixels or relative, as long as both sides agree): `bench/detect_eval.py`
feeds them frames rendered from the held-out evaluation domain, and `calibrate` turns the same kind
of figures into the per-label thresholds written beside the shipped weights.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Box = tuple[float, float, float, float]

# the labels an evaluation reports, and the model classes that count as each
LABEL_OF_CLASS = {"car": "vehicle", "truck": "vehicle", "water": "water", "bin": "bin", "garbage": "garbage"}
LABELS = ("vehicle", "water", "bin", "garbage")
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(3, 19))  # 0.15 .. 0.90


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Truth:
    label: str
    box: Box


@dataclass(frozen=True)
class Found:
    label: str
    score: float
    box: Box


@dataclass
class FrameResult:
    """One frame, matched: the score each true object was found with (0: missed), the unmatched."""

    group: dict[str, str]  # e.g. {"bucket": "mid5-9m/10-25", "light": "dusk"}
    truth_scores: list[tuple[str, float]]  # (label, best matching score or 0.0)
    false_scores: list[tuple[str, float]]  # (label, score) of detections that match nothing
    negative: bool  # nothing to find in the frame


def match_frame(
    truths: Sequence[Truth], found: Sequence[Found], group: Mapping[str, str], min_iou: float = 0.5
) -> FrameResult:
    """Greedy matching by score, label by label, at IoU >= `min_iou` (the VOC/COCO rule)."""
    taken = [False] * len(truths)
    scores = [0.0] * len(truths)
    false: list[tuple[str, float]] = []
    for f in sorted(found, key=lambda f: -f.score):
        best, best_iou = -1, min_iou
        for i, t in enumerate(truths):
            if taken[i] or t.label != f.label:
                continue
            v = iou(t.box, f.box)
            if v >= best_iou:
                best, best_iou = i, v
        if best >= 0:
            taken[best] = True
            scores[best] = f.score
        elif not any(t.label == f.label and iou(t.box, f.box) >= min_iou for t in truths):
            false.append((f.label, f.score))  # a second box on a found object is not a new false alarm
    return FrameResult(
        dict(group), [(t.label, s) for t, s in zip(truths, scores, strict=True)], false, not truths
    )


@dataclass
class Tally:
    """Recall and false detections of one group of frames at given thresholds."""

    frames: int = 0
    negatives: int = 0
    truths: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    false: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    false_on_negatives: int = 0

    def recall(self, label: str) -> float | None:
        return self.hits[label] / self.truths[label] if self.truths[label] else None

    def false_per_negative_frame(self) -> float | None:
        return self.false_on_negatives / self.negatives if self.negatives else None

    def false_per_frame(self) -> float:
        return sum(self.false.values()) / self.frames if self.frames else 0.0


def tally(
    results: Iterable[FrameResult], thresholds: Mapping[str, float], by: str | None = None
) -> dict[str, Tally]:
    """Figures per value of group key `by` (all frames under "all" when None) at `thresholds`."""
    out: dict[str, Tally] = defaultdict(Tally)
    for r in results:
        keys = ["all"] if by is None else [r.group.get(by, "?")]
        for key in keys:
            t = out[key]
            t.frames += 1
            t.negatives += r.negative
            for label, score in r.truth_scores:
                t.truths[label] += 1
                t.hits[label] += score >= thresholds.get(label, 1.0) and score > 0
            for label, score in r.false_scores:
                if score >= thresholds.get(label, 1.0):
                    t.false[label] += 1
                    t.false_on_negatives += r.negative
    return dict(out)


@dataclass(frozen=True)
class Operating:
    """One label at one threshold: how much it finds and what it costs."""

    recall: float
    precision: float
    false_per_negative_frame: float


def operating_points(
    results: Sequence[FrameResult], label: str, grid: Sequence[float] = THRESHOLD_GRID
) -> dict[float, Operating]:
    negatives = max(1, sum(r.negative for r in results))
    out = {}
    for t in grid:
        tl = tally(results, {label: t})["all"]
        fp, hits = tl.false[label], tl.hits[label]
        neg_fp = sum(1 for r in results if r.negative for lb, s in r.false_scores if lb == label and s >= t)
        out[t] = Operating(
            tl.recall(label) or 0.0, hits / (hits + fp) if hits + fp else 1.0, neg_fp / negatives
        )
    return out


def calibrate(
    results: Sequence[FrameResult], fp_per_frame: float = 0.05, min_precision: float = 0.75,
    grid: Sequence[float] = THRESHOLD_GRID, labels: Sequence[str] = LABELS,
) -> dict[str, float]:  # fmt: skip
    """Per-label thresholds that find the most within one false-alarm budget: together, the labels'
    false detections on negative frames (nothing there) stay within `fp_per_frame`, and each
    label's precision over all frames is at least `min_precision`.

    Greedy: every label starts at the top of the grid; the step down that buys the most relative
    recall per false detection is taken while the budget lasts."""
    grid = sorted(grid, reverse=True)
    points = {lb: operating_points(results, lb, grid) for lb in labels}
    at = dict.fromkeys(labels, 0)  # index into grid
    spent = sum(points[lb][grid[0]].false_per_negative_frame for lb in labels)
    while True:
        best: tuple[float, str, int] | None = None
        for lb in labels:
            now = points[lb][grid[at[lb]]]
            for k in range(at[lb] + 1, len(grid)):  # any step down, not only the next: no myopia
                nxt = points[lb][grid[k]]
                cost = nxt.false_per_negative_frame - now.false_per_negative_frame
                if nxt.precision < min_precision or spent + cost > fp_per_frame + 1e-12:
                    continue
                # relative recall: a label that finds little gains as much as one that finds a lot
                gain = (math.log(nxt.recall + 0.01) - math.log(now.recall + 0.01)) / max(cost, 1e-3)
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, lb, k)
        if best is None:
            break
        _, lb, k = best
        spent += (
            points[lb][grid[k]].false_per_negative_frame - points[lb][grid[at[lb]]].false_per_negative_frame
        )
        at[lb] = k
    return {lb: grid[at[lb]] for lb in labels}


def thresholds_path(weights: Path) -> Path:
    """Where the calibrated thresholds of a weights file live: `street.pt` -> `street.thresholds.json`."""
    w = Path(weights)
    stem = w.name.split("_openvino_model")[0] if w.is_dir() else w.stem
    return w.parent / f"{stem}.thresholds.json"


def load_thresholds(weights: Path) -> dict[str, float]:
    """The calibrated per-label thresholds shipped beside `weights` ({} when there are none)."""
    p = thresholds_path(weights)
    if not p.is_file():
        return {}
    doc = json.loads(p.read_text(encoding="utf-8"))
    return {str(k): float(v) for k, v in doc.get("thresholds", {}).items()}


def save_thresholds(weights: Path, thresholds: Mapping[str, float], about: Mapping[str, object]) -> Path:
    p = thresholds_path(weights)
    p.write_text(json.dumps({"thresholds": dict(thresholds), **about}, indent=2) + "\n", encoding="utf-8")
    return p
