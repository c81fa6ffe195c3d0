"""A pole camera at dusk: a clip from the evaluation domain with a known story, for end-to-end tests.

The camera is 7.5 m up a pole on the pavement, looking 15 degrees down along a two-lane road at
dusk, with the evaluation domain's palettes (never trained on). In the clip a car stops briefly in
the no-parking zone and drives off, another parks there past the dwell and leaves; a puddle grows
in the road and dries; garbage piles up around two bins and is cleared. `POLE_ZONES` are the zones
of that camera, projected from the street's geometry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.clip import write_frames
from detectors.render3d import Camera, Lighting, Puddle3, Road, Scene3, Thing, render
from detectors.street3d import EVAL, building, garbage_heap, person, pole, tree, vehicle, wheelie_bin
from detectors.synth import Label

WIDTH, HEIGHT, FPS = 640, 360, 5
DURATION_S = 100.0


@dataclass(frozen=True)
class PoleTimeline:
    """When things happen, in seconds of clip time."""

    brief_arrive: tuple[float, float] = (3.0, 8.0)  # drives into the zone
    brief_leave: tuple[float, float] = (16.0, 19.0)  # and off again after 8 s: no event
    park_arrive: tuple[float, float] = (24.0, 29.0)
    park_leave: tuple[float, float] = (80.0, 84.0)  # parked 51 s: past the 30 s dwell
    puddle_grow: tuple[float, float] = (8.0, 16.0)
    puddle_dry: tuple[float, float] = (58.0, 63.0)
    garbage: tuple[float, float] = (10.0, 60.0)  # piled up, then cleared at once
    far_car: tuple[float, float] = (33.0, 41.0)  # traffic in the far lane, never stopping
    far_truck: tuple[float, float] = (46.0, 56.0)


POLE_TIMELINE = PoleTimeline()
POLE_DWELL_S = 30.0

CAMERA = Camera(WIDTH, HEIGHT, height_m=7.5, pitch_deg=15.0, yaw_deg=-22.0, roll_deg=1.5, fov_deg=62.0)
ROAD = Road(y=-6.0, lanes=2, lane_w=3.5, walk_w=5.0, asphalt=(70, 70, 74), walk=(150, 158, 165))
NEAR_LANE_Y, FAR_LANE_Y = -4.1, -7.8
PARK_X = 17.0
PUDDLE = (27.0, -6.9)
BINS_X, BINS_Y = 12.5, -1.6
LIGHT = Lighting(
    "dusk",
    ambient=0.4,
    sun=(math.cos(2.6) * 0.99, math.sin(2.6) * 0.99, 0.1),
    sun_strength=0.2,
    tint=(0.72, 0.78, 0.95),
    sky_top=(140, 90, 70),
    sky_horizon=(120, 160, 230),
    shadows=0.3,
    headlights=True,
)


def _project_zone(corners: list[tuple[float, float]]) -> list[list[float]]:
    pts = np.array([[x, y, 0.0] for x, y in corners])
    px, _ = CAMERA.project(pts)
    return [
        [round(float(np.clip(x / WIDTH, 0, 1)), 4), round(float(np.clip(y / HEIGHT, 0, 1)), 4)] for x, y in px
    ]


POLE_ZONES: list[dict[str, Any]] = [
    {
        "name": "kerb-no-parking",
        "type": "no_parking",
        "points": _project_zone(
            [(PARK_X - 5, -2.0), (PARK_X + 6, -2.0), (PARK_X + 6, -5.8), (PARK_X - 5, -5.8)]
        ),
        "dwell_s": POLE_DWELL_S,
        "absent_grace_s": 6,
    },
    {
        "name": "road-ponding",
        "type": "ponding",
        "points": _project_zone(
            [(PUDDLE[0] - 4, -4.5), (PUDDLE[0] + 5, -4.5), (PUDDLE[0] + 5, -9.4), (PUDDLE[0] - 4, -9.4)]
        ),
        "persist_s": 8,
        "clear_s": 8,
    },
    {
        "name": "bins",
        "type": "bin_overflow",
        "points": _project_zone(
            [(BINS_X - 2.2, 0.2), (BINS_X + 2.2, 0.2), (BINS_X + 2.2, -3.4), (BINS_X - 2.2, -3.4)]
        ),
        "persist_s": 8,
        "clear_s": 8,
    },
]


def _ramp(t: float, span: tuple[float, float]) -> float:
    return min(1.0, max(0.0, (t - span[0]) / (span[1] - span[0])))


class PoleClip:
    """Frames of the clip from clip time alone (the same pixels on every machine)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(31337)
        self.brief = vehicle(rng, EVAL, "saloon", 0, 0, math.pi)
        self.parker = vehicle(rng, EVAL, "suv", 0, 0, math.pi)
        self.far_car = vehicle(rng, EVAL, "hatchback", 0, 0, 0.0)
        self.far_truck = vehicle(rng, EVAL, "light_truck", 0, 0, 0.0)
        self.bins = [wheelie_bin(rng, EVAL, BINS_X + dx, BINS_Y, -math.pi / 2, False) for dx in (-0.4, 0.4)]
        self.heap = garbage_heap(rng, BINS_X, BINS_Y - 0.6, 1.3, 0.6)
        self.static: list[Thing] = [
            tree(rng, 40.0, -1.2),
            tree(rng, 52.0, -11.0),
            pole(rng, 22.0, -2.3, ROAD.y),
            person(rng, 15.0, 0.8),
            person(rng, 29.0, 1.4),
        ]
        self.buildings = [
            building(rng, x, x + 22, ROAD.y - ROAD.half - ROAD.walk_w - 0.3, -1) for x in (-10, 14, 38, 62)
        ]

    def _near_lane_car(
        self, car: Thing, t: float, arrive: tuple[float, float], leave: tuple[float, float]
    ) -> Thing | None:
        if t < arrive[0] or t > leave[1]:
            return None
        if t <= arrive[1]:  # decelerating towards the camera into the zone
            a = _ramp(t, arrive)
            x = 80.0 - (80.0 - PARK_X) * (1 - (1 - a) ** 2)
        elif t < leave[0]:
            x = PARK_X
        else:
            a = _ramp(t, leave)
            x = PARK_X - (PARK_X - 4.0) * a * a
        return car.moved(x, NEAR_LANE_Y)

    def scene(self, t: float, index: int) -> Scene3:
        tl = POLE_TIMELINE
        things = list(self.static) + list(self.bins)
        for car in (
            self._near_lane_car(self.brief, t, tl.brief_arrive, tl.brief_leave),
            self._near_lane_car(self.parker, t, tl.park_arrive, tl.park_leave),
        ):
            if car is not None:
                things.append(car)
        for thing, span in ((self.far_car, tl.far_car), (self.far_truck, tl.far_truck)):
            if span[0] <= t <= span[1]:
                things.append(thing.moved(14.0 + 80.0 * _ramp(t, span), FAR_LANE_Y))
        if tl.garbage[0] <= t < tl.garbage[1]:
            grown = _ramp(t, (tl.garbage[0], tl.garbage[0] + 6))
            n = max(1, round(len(self.heap.parts) * grown))
            things.append(Thing("garbage", self.heap.x, self.heap.y, self.heap.parts[:n]))
        puddles = []
        size = _ramp(t, tl.puddle_grow) * (1 - _ramp(t, tl.puddle_dry))
        if size > 0.05:
            puddles.append(
                Puddle3(PUDDLE[0], PUDDLE[1], 2.3 * size, ((0.12, 0.5), (0.06, 2.0), (0.04, 1.0)), 1.9)
            )
        puddles.append(Puddle3(13.0, -8.2, 1.3, ((0.1, 0.3),), 2.5, sheen=True))  # wet road, not water
        post = {"noise": 3.0, "jpeg": 80.0, "gamma": 1.05}
        return Scene3(
            CAMERA, ROAD, LIGHT, self.buildings, things, puddles, texture_seed=5, post_seed=index, post=post
        )

    def frame(self, t: float) -> tuple[np.ndarray, list[Label]]:
        return render(self.scene(t, round(t * FPS)))

    def frames(self, duration_s: float = DURATION_S) -> Iterator[np.ndarray]:
        for i in range(round(duration_s * FPS)):
            yield self.frame(i / FPS)[0]


def write_pole_clip(out: Path, duration_s: float = DURATION_S) -> str:
    """Write the clip as H.264 MP4 (what an RTSP server streams); returns the codec."""
    return write_frames(out, PoleClip().frames(duration_s), WIDTH, HEIGHT, FPS)
