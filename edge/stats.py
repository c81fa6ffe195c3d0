"""Per-camera health, published as JSON on `{p}/edge/{edge_id}/status` every `stats_interval_s`.

The same topic carries the plain strings `online` (retained, on connect) and `offline` (retained,
the LWT and a clean stop); a payload starting with `{` is an `EdgeStats`. The gateway writes each
camera entry as one `edge_stats` point (tags edge_id, camera_id; the numbers as fields).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CameraStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera_id: str
    connected: bool = Field(description="a stream is open and delivering frames")
    fps_in: float = Field(description="frames per second reaching the worker (after ffmpeg's decimation)")
    fps_analysed: float = Field(description="frames per second the detector ran on")
    inference_ms_p50: float | None = Field(description="detector time per frame, median of the recent window")
    inference_ms_p95: float | None
    latency_ms_p95: float | None = Field(
        description="frame received -> analysis done (tracker, rules, queue)"
    )
    reconnects_1h: int = Field(description="stream reopened in the last hour")
    stalls_1h: int = Field(description="watchdog reopens (no frame for stall_s) in the last hour")
    dropped_frames: int = Field(description="frames replaced by a newer one before analysis, since start")
    frames_in: int = Field(description="frames received since start")
    analysed: int = Field(description="frames analysed since start")
    tracks: int = Field(description="objects tracked now")
    active_events: int = Field(description="events of this camera now active")
    detections: dict[str, int] = Field(
        default_factory=dict, description="detections per label since start (after merging the models)"
    )
    detections_period: dict[str, int] = Field(
        default_factory=dict, description="detections per label since the previous stats message"
    )
    last_error: str = ""


class EdgeStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["edge_stats"] = "edge_stats"
    edge_id: str
    at: datetime
    uptime_s: float
    queue_depth: int = Field(description="messages waiting in the disk queue (broker away or slow)")
    queue_bytes: int
    queue_dropped: int = Field(description="messages dropped unsent because the queue cap was reached")
    evidence_bytes: int = Field(description="evidence (pictures, clips, manifests) kept on the edge box")
    broker_connected: bool
    models: dict[str, str] = Field(
        default_factory=dict,
        description="model name -> `file@sha256[:12]` (+`+version` from a {stem}.json/.yaml beside it)",
    )
    cameras: list[CameraStats]


class CameraCounters:
    """Rolling counters one camera's analysis loop updates (bounded windows)."""

    def __init__(self, window: int = 512) -> None:
        self.inference_ms: deque[float] = deque(maxlen=window)
        self.latency_ms: deque[float] = deque(maxlen=window)
        self.analysed_at: deque[float] = deque(maxlen=window)  # monotonic
        self.analysed = 0
        self.labels: Counter[str] = Counter()  # bounded by the models' label sets
        self.labels_period: Counter[str] = Counter()

    def record(self, inference_ms: float, latency_ms: float) -> None:
        self.inference_ms.append(inference_ms)
        self.latency_ms.append(latency_ms)
        self.analysed_at.append(time.monotonic())
        self.analysed += 1

    def count(self, labels: Iterable[str]) -> None:
        for label in labels:
            self.labels[label] += 1
            self.labels_period[label] += 1

    def new_period(self) -> None:
        self.labels_period = Counter()

    def fps(self, window_s: float = 10.0) -> float:
        now = time.monotonic()
        return sum(1 for t in self.analysed_at if now - t <= window_s) / window_s


def percentile(values: deque[float] | list[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return round(data[0], 2)
    return round(statistics.quantiles(data, n=100, method="inclusive")[int(q) - 1], 2)
