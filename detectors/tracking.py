"""Per-camera object tracking over `Detector.detect()` results: ByteTrack's two-stage association
by box overlap, with a longer memory for objects that stand still.

Why our own association instead of ultralytics' `model.track()`:
- one model serves every camera of the box in batches; ultralytics keeps tracker state on the
  predictor per batch slot, not per camera, so a shared batched model would mix cameras;
- its default tracker spends ~13 ms a frame on camera-motion compensation (BENCHMARKS.md), which a
  fixed street camera does not need;
- frames are analysed at 2 fps while something moves and every `refresh_s` when the scene is
  still: a Kalman prediction across a 10 s gap is a guess, whereas a parked car, a puddle or a bin
  is exactly where it was. What matters for the rules is that a *standing* object keeps its id;
  a passing car that changes id every frame is harmless (it never dwells).

Pure: no I/O, time is passed in. Every per-track structure is bounded (`max_tracks`, the score
window) and `update()` returns the ids it dropped, so the rules can evict theirs.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from detectors.zones import Box, DetectionLike, PointXY, box_distance_ratio, box_iou


class TrackerConfig(BaseModel):
    """`tracking:` of a camera in cameras.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high_score: float = Field(0.5, ge=0, le=1, description="detections at or above this start tracks")
    low_score: float = Field(
        0.1, ge=0, le=1, description="weaker detections only extend existing tracks (ByteTrack's 2nd stage)"
    )
    match_iou: float = Field(0.3, gt=0, le=1, description="least box overlap to continue a track")
    lost_ttl_s: float = Field(3.0, ge=0, description="a moving object unseen this long is dropped")
    min_missed: int = Field(
        2,
        ge=1,
        description="analyses a track must miss before it can be dropped (the scene may be analysed "
        "only every refresh_s when nothing moves)",
    )
    stationary_after_s: float = Field(
        5.0, ge=0, description="an object standing this long counts as stationary"
    )
    stationary_tolerance: float = Field(
        0.25, gt=0, description="drift of the box bottom centre still counted as standing (units of box size)"
    )
    stationary_hold_s: float = Field(
        120.0,
        ge=0,
        description="a stationary object unseen this long keeps its id: re-associated by overlap with its "
        "last box when it reappears (occlusion by a bus or a missed detection)",
    )
    reassociate_iou: float = Field(
        0.4, gt=0, le=1, description="least overlap with a stationary track's last box to take its id back"
    )
    score_window: int = Field(5, ge=1, le=100, description="scores kept per track; its score is their median")
    max_tracks: int = Field(256, ge=1, le=100_000, description="tracks kept per camera at most")


@dataclass(slots=True)
class Track:
    track_id: int
    label: str
    box: Box
    polygon: Sequence[PointXY] | None
    class_name: str
    first_seen: float
    last_seen: float
    anchor: Box
    stationary_since: float
    scores: deque[float]
    missed: int = 0
    hits: int = 1

    @property
    def score(self) -> float:
        return float(statistics.median(self.scores))


@dataclass(frozen=True, slots=True)
class TrackedObject:
    """A detection with its track: what the rules see (it is `DetectionLike`)."""

    track_id: int
    label: str
    score: float  # median of the track's recent scores
    raw_score: float
    box: Box
    polygon: Sequence[PointXY] | None
    class_name: str
    first_seen: float
    stationary_s: float


@dataclass(slots=True)
class TrackUpdate:
    objects: list[TrackedObject]
    removed: list[int] = field(default_factory=list)


def _greedy_match(
    tracks: list[Track], dets: list[DetectionLike], min_iou: float
) -> tuple[list[tuple[Track, DetectionLike]], list[Track], list[DetectionLike]]:
    """Pairs by decreasing IoU, each at least `min_iou`, same label only.

    Greedy rather than Hungarian: street scenes hold a few dozen objects, where both agree in
    practice, and greedy keeps this free of dependencies and deterministic.
    """
    pairs: list[tuple[float, int, int]] = []
    for ti, t in enumerate(tracks):
        for di, d in enumerate(dets):
            if d.label != t.label:
                continue
            iou = box_iou(t.box, d.box)
            if iou >= min_iou:
                pairs.append((iou, ti, di))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_t: set[int] = set()
    used_d: set[int] = set()
    matched: list[tuple[Track, DetectionLike]] = []
    for _iou, ti, di in pairs:
        if ti in used_t or di in used_d:
            continue
        used_t.add(ti)
        used_d.add(di)
        matched.append((tracks[ti], dets[di]))
    return (
        matched,
        [t for i, t in enumerate(tracks) if i not in used_t],
        [d for i, d in enumerate(dets) if i not in used_d],
    )


class Tracker:
    """One camera's tracks. Feed every analysis (even an empty one) in frame-time order."""

    def __init__(self, cfg: TrackerConfig | None = None) -> None:
        self.cfg = cfg or TrackerConfig()
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.tracks)

    def _stationary(self, t: Track, now: float) -> bool:
        return now - t.stationary_since >= self.cfg.stationary_after_s

    def update(self, detections: Sequence[DetectionLike], now: float) -> TrackUpdate:
        cfg = self.cfg
        high = [d for d in detections if d.score >= cfg.high_score]
        low = [d for d in detections if cfg.low_score <= d.score < cfg.high_score]
        recent = [t for t in self.tracks.values() if t.missed == 0]
        lost = [t for t in self.tracks.values() if t.missed > 0]

        # 1. confident detections against every live track; 2. weak ones against those seen last time
        m1, rest_recent, rest_high = _greedy_match(recent + lost, high, cfg.match_iou)
        rest_recent = [t for t in rest_recent if t.missed == 0]
        m2, _, _ = _greedy_match(rest_recent, low, max(cfg.match_iou, 0.5))
        matched = m1 + m2
        seen = {t.track_id for t, _ in matched}

        # 3. a stationary object that vanished and reappears (slightly smaller, say, behind a van)
        stale = [
            t for t in self.tracks.values() if t.track_id not in seen and self._stationary(t, t.last_seen)
        ]
        if stale and rest_high:
            anchored = [
                Track(t.track_id, t.label, t.anchor, None, t.class_name, 0, 0, t.anchor, 0, t.scores)
                for t in stale
            ]
            m3, _, rest_high = _greedy_match(anchored, rest_high, cfg.reassociate_iou)
            for proxy, d in m3:
                matched.append((self.tracks[proxy.track_id], d))
                seen.add(proxy.track_id)

        for t, d in matched:
            self._extend(t, d, now)
        for d in rest_high:
            self._start(d, now)

        removed: list[int] = []
        for t in list(self.tracks.values()):
            if t.last_seen == now:
                continue
            t.missed += 1
            ttl = cfg.stationary_hold_s if self._stationary(t, t.last_seen) else cfg.lost_ttl_s
            if t.missed >= cfg.min_missed and now - t.last_seen > ttl:
                removed.append(t.track_id)
                del self.tracks[t.track_id]
        removed += self._bound()

        objects = [
            TrackedObject(
                track_id=t.track_id,
                label=t.label,
                score=t.score,
                raw_score=t.scores[-1],
                box=t.box,
                polygon=t.polygon,
                class_name=t.class_name,
                first_seen=t.first_seen,
                stationary_s=now - t.stationary_since,
            )
            for t in self.tracks.values()
            if t.last_seen == now
        ]
        return TrackUpdate(objects, removed)

    def _extend(self, t: Track, d: DetectionLike, now: float) -> None:
        if box_distance_ratio(d.box, t.anchor) > self.cfg.stationary_tolerance:
            t.anchor = d.box
            t.stationary_since = now
        t.box = d.box
        t.polygon = d.polygon
        t.last_seen = now
        t.missed = 0
        t.hits += 1
        t.scores.append(float(d.score))

    def _start(self, d: DetectionLike, now: float) -> None:
        tid = self._next_id
        self._next_id += 1
        self.tracks[tid] = Track(
            track_id=tid,
            label=d.label,
            box=d.box,
            polygon=d.polygon,
            class_name=getattr(d, "class_name", d.label),
            first_seen=now,
            last_seen=now,
            anchor=d.box,
            stationary_since=now,
            scores=deque([float(d.score)], maxlen=self.cfg.score_window),
        )

    def _bound(self) -> list[int]:
        """Keep at most `max_tracks`: drop the longest-unseen first, then the oldest."""
        excess = len(self.tracks) - self.cfg.max_tracks
        if excess <= 0:
            return []
        order = sorted(self.tracks.values(), key=lambda t: (t.last_seen, t.first_seen, t.track_id))
        dropped = [t.track_id for t in order[:excess]]
        for tid in dropped:
            del self.tracks[tid]
        return dropped
