"""The motion gate: a 320x180 grey copy of each frame against the previous one (~1 ms a frame,
BENCHMARKS.md). The detector runs at `detect_fps` while something moves and once every
`refresh_s` when the scene is still, so parked cars, standing water and full bins are re-checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.config import MotionConfig

SMALL = (320, 180)


@dataclass(slots=True)
class GateDecision:
    motion: bool
    changed_ratio: float
    detect: bool
    reason: str  # "motion", "refresh", "first", "disabled" or "" (skipped)


class MotionGate:
    """One camera's gate. Pure apart from the image maths: time is the frame time passed in."""

    def __init__(self, cfg: MotionConfig, detect_fps: float, refresh_s: float) -> None:
        self.cfg = cfg
        self.min_interval_s = 1.0 / detect_fps
        self.refresh_s = refresh_s
        self._prev: np.ndarray | None = None
        self._last_detect: float | None = None
        self._next_due = 0.0  # the detect_fps cadence: kept on a grid so 5 fps in gives 2 fps out, not 1.67
        self._last_motion: float | None = None

    @staticmethod
    def small_grey(image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        small = cv2.resize(grey, SMALL, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0)

    def changed_ratio(self, image: np.ndarray) -> float:
        """Fraction of the small picture that changed since the previous frame (1.0 on the first)."""
        small = self.small_grey(image)
        prev, self._prev = self._prev, small
        if prev is None:
            return 1.0
        diff = cv2.absdiff(small, prev)
        return float(np.count_nonzero(diff > self.cfg.pixel_threshold)) / diff.size

    def decide(self, image: np.ndarray, t: float) -> GateDecision:
        """Whether to run the detector on this frame (frame time `t`)."""
        ratio = self.changed_ratio(image) if self.cfg.enabled else 1.0
        motion = ratio >= self.cfg.min_area_ratio
        if motion:
            self._last_motion = t
        recent = self._last_motion is not None and t - self._last_motion <= self.cfg.hold_s
        since = None if self._last_detect is None else t - self._last_detect
        if since is not None and since < 0:  # a looped file went back in time: start afresh
            since = None
        cadence = t >= self._next_due - 1e-6
        if since is None:
            reason = "first"
        elif not self.cfg.enabled and cadence:
            reason = "disabled"
        elif (motion or recent) and cadence:
            reason = "motion"
        elif since >= self.refresh_s - 1e-6:
            reason = "refresh"
        else:
            reason = ""
        if reason:
            step = self.min_interval_s
            on_grid = since is not None and t - self._next_due < step
            self._next_due = (self._next_due if on_grid else t) + step
            self._last_detect = t
        return GateDecision(motion, ratio, bool(reason), reason)
