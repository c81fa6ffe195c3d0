"""Is the camera still watching? Frozen, covered, blurred or moved cameras, judged from its own frames.

Pure: frames and their times in, health changes out, so clips drive it in tests. A camera is
sampled every `sample_s` of frame time on a small grey copy of the frame (a few hundred
microseconds). Each check is judged against the camera's OWN baselines (kept apart for day and
night, since an IR switch changes brightness and sharpness), learnt during a warm-up and then
followed slowly while it is healthy:

- `camera_frozen`: the sampled picture is bit-identical for `frozen_after_s` (a decoder or NVR
  repeating its last frame; a live sensor always has noise);
- `camera_obscured`: dark and flat; or the contrast fell far below the baseline's and one colour
  covers most of the picture (while it normally does not) or its entropy fell far below the
  baseline's (a bag, paint, a hand);
- `camera_blurred`: the Laplacian variance fell far below the baseline's, and so did its ratio to
  that of a softened copy (defocus, fog, a wet or dirty lens; a car driving off lowers the first,
  not the second); not judged on a scene too flat to measure;
- `camera_moved`: phase correlation of the median of the last checks (traffic drops out of a
  median) against the reference (the first healthy view, kept on disk with the zones it was taken
  for) finds a steady shift of more than `moved_share` of the frame; the fault says by how much
  and which way. A flat scene moved along its only edge cannot show it.

A fault is raised after `bad_checks` bad checks in a row and cleared after `good_checks` good ones
(no flapping on a passing bus or a small shake). `camera_lost` (no frames at all) is judged from the
wall clock by `CameraHealth.idle`, since a lost camera has no frame time.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import cv2
import numpy as np

from edge.config import HealthConfig
from gridgate.models import CAMERA_FAULTS, Severity

LOST, FROZEN, OBSCURED, BLURRED, MOVED = (
    "camera_lost",
    "camera_frozen",
    "camera_obscured",
    "camera_blurred",
    "camera_moved",
)
SEVERITY: dict[str, Severity] = {
    LOST: Severity.major,
    FROZEN: Severity.major,
    OBSCURED: Severity.major,
    BLURRED: Severity.minor,
    MOVED: Severity.major,
}
assert set(SEVERITY) == CAMERA_FAULTS
SAMPLE_WIDTH = 192  # pixels across of the grey copy every check works on
EMA = 0.05  # how fast a baseline follows a healthy camera (per check)
MEDIAN_CHECKS = 5  # the view is compared as the median of this many checks (traffic drops out)
STEADY_SHIFT = 0.015  # a moved camera's shift agrees from check to check within this share


@dataclass(frozen=True, slots=True)
class HealthChange:
    kind: str
    action: Literal["raise", "clear"]
    at: float  # frame time (wall time for camera_lost)
    started_at: float
    measurements: dict[str, float | int | str | bool]


@dataclass(frozen=True, slots=True)
class Looks:
    """What one check measured on the grey copy."""

    mean: float
    std: float
    one_colour: float  # share of the picture in its most common of 16 grey bins
    entropy: float  # bits, 64 grey bins
    sharpness: float  # variance of the Laplacian
    crispness: (
        float  # the Laplacian's variance over that of a softened copy: edges' sharpness, not their number
    )


def looks(grey: np.ndarray) -> Looks:
    hist = cv2.calcHist([grey], [0], None, [64], [0, 256]).ravel()
    p = hist / max(1.0, float(hist.sum()))
    nz = p[p > 0]
    coarse = p.reshape(16, 4).sum(axis=1)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    softened = float(cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), 1.5), cv2.CV_64F).var())
    return Looks(
        mean=float(grey.mean()),
        std=float(grey.std()),
        one_colour=float(coarse.max()),
        entropy=float(-(nz * np.log2(nz)).sum()),
        sharpness=sharpness,
        crispness=sharpness / (softened + 1e-6),
    )


def small_grey(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    size = (SAMPLE_WIDTH, max(8, round(h * SAMPLE_WIDTH / w)))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def shift_of(reference: np.ndarray, grey: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy) as shares of the frame's width and height, and the correlation's peak response."""
    h, w = grey.shape
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(reference.astype(np.float32), grey.astype(np.float32), window)
    return dx / w, dy / h, float(response)


@dataclass(slots=True)
class Baseline:
    """A camera's normal look for one light (day or night), learnt while it is healthy."""

    checks: int = 0
    std: float = 0.0
    entropy: float = 0.0
    sharpness: float = 0.0
    crispness: float = 0.0
    one_colour: float = 0.0

    def learn(self, lk: Looks, warmup: int) -> None:
        a = 1.0 / (self.checks + 1) if self.checks < warmup else EMA
        self.std += a * (lk.std - self.std)
        self.entropy += a * (lk.entropy - self.entropy)
        self.sharpness += a * (lk.sharpness - self.sharpness)
        self.crispness += a * (lk.crispness - self.crispness)
        self.one_colour += a * (lk.one_colour - self.one_colour)
        self.checks += 1


@dataclass(slots=True)
class _Fault:
    bad: int = 0
    good: int = 0
    active: bool = False
    since: float = 0.0  # frame time of the first bad check of this run


@dataclass(slots=True)
class CameraHealth:
    """One camera's health state; `check` each sampled frame, `idle` while no frame comes."""

    camera_id: str
    cfg: HealthConfig
    tz: ZoneInfo
    reference: np.ndarray | None = None
    baselines: dict[str, Baseline] = field(default_factory=lambda: {"day": Baseline(), "night": Baseline()})
    faults: dict[str, _Fault] = field(default_factory=lambda: {k: _Fault() for k in SEVERITY})
    reference_is_new: bool = False  # taken since the last save (the worker keeps it on disk)
    last_check: float = float("-inf")
    checks: int = 0
    _previous: np.ndarray | None = None
    _same_since: float | None = None
    _recent: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=MEDIAN_CHECKS))
    _last_shift: tuple[float, float] | None = None

    # -- what the worker asks -------------------------------------------------------------------

    def due(self, ts: float) -> bool:
        return self.cfg.enabled and ts - self.last_check >= self.cfg.sample_s

    @property
    def moved(self) -> bool:
        """While moved the camera's zones cover other ground: its zone events are muted."""
        return self.faults[MOVED].active

    def active(self) -> list[str]:
        return [k for k, f in self.faults.items() if f.active]

    def idle(self, now: float, last_frame_at: float | None) -> list[HealthChange]:
        """No frame since `last_frame_at` (wall time): `camera_lost` after `lost_after_s`."""
        f = self.faults[LOST]
        if not self.cfg.enabled or f.active or last_frame_at is None:
            return []
        if now - last_frame_at < self.cfg.lost_after_s:
            return []
        f.active, f.since = True, last_frame_at
        silent = round(now - last_frame_at, 1)
        return [HealthChange(LOST, "raise", now, last_frame_at, {"no_frames_s": silent})]

    def frame_arrived(self, now: float) -> list[HealthChange]:
        """A frame came (wall time `now`): a lost camera is back at once, no cool-down."""
        f = self.faults[LOST]
        if not f.active:
            return []
        f.active = False
        return [HealthChange(LOST, "clear", now, f.since, {"lost_s": round(now - f.since, 1)})]

    def check(self, image: np.ndarray, ts: float) -> list[HealthChange]:
        """Judge one sampled frame (BGR) of frame time `ts`."""
        previous_check, self.last_check = self.last_check, ts
        self.checks += 1
        grey = small_grey(image)
        lk = looks(grey)
        base = self.baselines[self._light(ts)]
        warm = self.checks > self.cfg.warmup_checks
        bad: dict[str, dict[str, float | int | str | bool]] = {}

        frozen_s = self._frozen_for(grey, ts, previous_check)
        if frozen_s >= self.cfg.frozen_after_s:
            bad[FROZEN] = {"identical_s": round(frozen_s, 1)}
        judged = warm and base.checks >= self.cfg.warmup_checks
        obscured = self._obscured(lk, base if judged else None)
        if obscured:
            bad[OBSCURED] = {
                "why": obscured,
                "brightness": round(lk.mean, 1),
                "entropy_bits": round(lk.entropy, 2),
            }
        elif judged and base.sharpness >= self.cfg.min_sharpness and not self.faults[OBSCURED].bad:
            # fewer edges (a parked car drove off) lowers the sharpness too, but not the crispness
            ratio, crisp = lk.sharpness / base.sharpness, lk.crispness / max(base.crispness, 1e-6)
            if ratio < self.cfg.blur_ratio and crisp < self.cfg.crisp_ratio:
                bad[BLURRED] = {"sharpness_ratio": round(ratio, 3), "crispness_ratio": round(crisp, 3)}
        shift = self._shift(grey, obscured is not None, warm)
        if shift is not None:
            bad[MOVED] = shift

        changes = self._step(bad, ts)
        if not bad and not self.active():  # baselines follow a healthy camera only
            base.learn(lk, self.cfg.warmup_checks)
        return changes

    # -- the checks -----------------------------------------------------------------------------

    def _shift(
        self, grey: np.ndarray, obscured: bool, warm: bool
    ) -> dict[str, float | int | str | bool] | None:
        """The view's shift against the reference, on the median of the last checks: traffic
        passes through a median, the street does not. None while it is where it was."""
        if obscured or (self._recent and self._recent[-1].shape != grey.shape):
            self._recent.clear()  # nothing to compare until the picture is back (or its new size)
        if obscured:
            return None
        self._recent.append(grey)
        if len(self._recent) < self._recent.maxlen:  # type: ignore[operator]
            return None
        background = np.median(np.stack(self._recent), axis=0).astype(np.uint8)
        if self.reference is None or self.reference.shape != background.shape:
            if warm:
                self.reference = background  # the view the zones were drawn on (the first healthy one)
                self.reference_is_new = True
            return None
        dx, dy, response = shift_of(self.reference, background)
        share = float(np.hypot(dx, dy))
        if share < self.cfg.moved_share or response < self.cfg.min_response:
            self._last_shift = None
            return None
        last, self._last_shift = self._last_shift, (dx, dy)
        if last is not None and np.hypot(dx - last[0], dy - last[1]) > STEADY_SHIFT:
            self.faults[MOVED].bad = 0  # not steady: something large passing, not the camera
        return {"shift_share": round(share, 3), "dx_share": round(dx, 3), "dy_share": round(dy, 3)}

    def _light(self, ts: float) -> str:
        hour = datetime.fromtimestamp(ts, self.tz).hour
        return "day" if self.cfg.day_starts <= hour < self.cfg.night_starts else "night"

    def _frozen_for(self, grey: np.ndarray, ts: float, previous_check: float) -> float:
        """How long the picture has been bit-identical (since the check before the first repeat)."""
        same = self._previous is not None and np.array_equal(grey, self._previous)
        self._previous = grey
        if not same:
            self._same_since = None
            return 0.0
        if self._same_since is None:
            self._same_since = previous_check
        return ts - self._same_since

    def _obscured(self, lk: Looks, base: Baseline | None) -> str | None:
        c = self.cfg
        if lk.mean < c.dark_below and lk.std < c.flat_below:
            return "dark"
        # a cover takes the contrast away; dusk only scales it (and the baseline follows dusk)
        if base is None or lk.std >= c.contrast_ratio * base.std:
            return None
        if self.faults[OBSCURED].active or lk.std < c.contrast_ratio * base.std / 2:
            return "no_contrast"  # once covered, covered until the contrast is back
        if lk.one_colour >= c.one_colour_share and base.one_colour < c.one_colour_share - 0.15:
            return "one_colour"
        if base.entropy >= c.min_entropy_bits and lk.entropy < c.entropy_ratio * base.entropy:
            return "featureless"
        return None

    def _step(self, bad: dict[str, dict[str, float | int | str | bool]], ts: float) -> list[HealthChange]:
        out: list[HealthChange] = []
        for kind in (FROZEN, OBSCURED, BLURRED, MOVED):
            f = self.faults[kind]
            if kind in bad:
                if f.bad == 0:
                    f.since = ts
                f.bad, f.good = f.bad + 1, 0
                needed = 1 if kind == FROZEN else self.cfg.bad_checks  # frozen_after_s is its hold-down
                if not f.active and f.bad >= needed:
                    f.active = True
                    out.append(HealthChange(kind, "raise", ts, f.since, bad[kind]))
            else:
                f.good, f.bad = f.good + 1, 0
                if f.active and f.good >= self.cfg.good_checks:
                    f.active = False
                    out.append(HealthChange(kind, "clear", ts, f.since, {}))
        return out


# -- the reference frame on disk: a camera moved while the box was down is still seen as moved ---


def zones_digest(zones: object) -> str:
    return hashlib.sha256(json.dumps(zones, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_reference(path: Path, digest: str) -> np.ndarray | None:
    """The saved reference, if it was taken for these zones (redrawn zones: a new reference)."""
    try:
        with np.load(path) as saved:
            if str(saved["zones"]) == digest:
                return np.asarray(saved["grey"], dtype=np.uint8)
    except (OSError, KeyError, ValueError):
        return None
    return None


def save_reference(path: Path, digest: str, grey: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, grey=grey, zones=np.array(digest))
    tmp.replace(path)
