"""What streets are made of, and the two distributions they are drawn from.

Builders of vehicles (saloon, hatchback, SUV -> `car`; van, light truck, bus -> `truck`), Chinese
municipal wheelie bins (120/240 L, green/grey/blue/red, lid open or closed), garbage heaps, people,
e-bikes and three-wheelers (distractors), trees, poles and buildings, and the light of a frame (day,
dusk, night with street lamps, infrared, rain). `TRAIN` and `EVAL` differ in their view ranges, lens
and palettes: training renders `TRAIN`, `bench/detect_eval.py` measures on `EVAL`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from detectors.render3d import Color, Lighting, Part, Thing, prism, rot_z

Rng = np.random.Generator

LIGHTS = ("day", "dusk", "night", "ir", "rain")


@dataclass(frozen=True)
class Domain:
    """The ranges a scene is drawn from."""

    name: str
    height_m: tuple[float, float]
    pitch_deg: tuple[float, float]
    fov_deg: tuple[float, float]
    roll_deg: float
    k1: tuple[float, float]  # radial distortion of the lens (positive: barrel)
    car_hues: tuple[float, ...]  # hue centres (OpenCV 0-180) of coloured vehicles
    bin_palette: tuple[Color, ...]  # BGR
    light_weights: tuple[float, ...]  # per LIGHTS
    negative_share: float = 0.08  # frames with nothing to label (textures, empty streets)


TRAIN = Domain(
    "train",
    height_m=(1.5, 14.0),
    pitch_deg=(0.0, 50.0),
    fov_deg=(45.0, 100.0),
    roll_deg=4.0,
    k1=(-0.03, 0.3),
    car_hues=(0, 10, 20, 60, 100, 115, 130, 150, 170),
    bin_palette=(
        (40, 130, 40),
        (60, 150, 70),
        (110, 110, 105),
        (80, 80, 80),
        (160, 90, 30),
        (180, 110, 40),
        (40, 40, 170),
        (50, 60, 190),
        (35, 35, 35),
    ),
    light_weights=(0.34, 0.2, 0.18, 0.14, 0.14),
)

EVAL = Domain(
    "eval",
    height_m=(2.0, 13.0),
    pitch_deg=(0.0, 48.0),
    fov_deg=(40.0, 90.0),
    roll_deg=6.0,
    k1=(0.0, 0.35),
    car_hues=(5, 15, 35, 75, 90, 108, 122, 140, 160, 175),
    bin_palette=(
        (30, 110, 55),
        (70, 160, 50),
        (120, 125, 120),
        (95, 90, 85),
        (140, 70, 25),
        (200, 130, 60),
        (30, 30, 150),
        (70, 50, 200),
        (60, 60, 55),
    ),
    light_weights=(0.3, 0.2, 0.2, 0.15, 0.15),
)


def _hsv_color(rng: Rng, hue: float, sat: tuple[float, float], val: tuple[float, float]) -> Color:
    hsv = np.uint8([[[int(hue) % 180, int(rng.uniform(*sat)), int(rng.uniform(*val))]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return float(b), float(g), float(r)


def vehicle_color(rng: Rng, dom: Domain) -> Color:
    """Most cars are white, black, grey or silver; the rest take the domain's hues."""
    u = rng.random()
    if u < 0.3:
        v = rng.uniform(200, 245)
        return v, v, v - rng.uniform(0, 8)
    if u < 0.5:
        v = rng.uniform(20, 50)
        return v, v, v
    if u < 0.68:
        v = rng.uniform(110, 180)
        return v + 5, v, v
    hue = float(rng.choice(dom.car_hues)) + rng.uniform(-4, 4)
    return _hsv_color(rng, hue, (120, 240), (90, 220))


def lighting(rng: Rng, dom: Domain, kind: str | None = None) -> Lighting:
    kind = kind or str(rng.choice(LIGHTS, p=np.array(dom.light_weights) / sum(dom.light_weights)))
    az = rng.uniform(0, 2 * math.pi)
    if kind in ("day", "rain"):
        el = rng.uniform(0.35, 1.3) if kind == "day" else 1.2
        sun = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
        overcast = kind == "rain" or rng.random() < 0.3
        top = (
            _hsv_color(rng, rng.uniform(100, 115), (60, 160), (190, 250)) if not overcast else (185, 180, 175)
        )
        return Lighting(
            kind,
            ambient=rng.uniform(0.55, 0.8) if not overcast else rng.uniform(0.6, 0.8),
            sun=sun,
            sun_strength=0.0 if overcast else rng.uniform(0.3, 0.55),
            tint=(1.0, 1.0, 1.0) if kind == "day" else (0.85, 0.82, 0.8),
            sky_top=top,
            sky_horizon=(225, 222, 220) if not overcast else (200, 198, 196),
            shadows=0.0 if overcast else rng.uniform(0.3, 0.55),
            headlights=kind == "rain" and rng.random() < 0.5,
        )
    if kind == "dusk":
        el = rng.uniform(0.03, 0.2)
        sun = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
        return Lighting(
            kind,
            ambient=rng.uniform(0.28, 0.48),
            sun=sun,
            sun_strength=rng.uniform(0.1, 0.35),
            tint=(rng.uniform(0.65, 0.85), rng.uniform(0.7, 0.85), rng.uniform(0.85, 1.0)),
            sky_top=_hsv_color(rng, rng.uniform(110, 135), (60, 140), (90, 160)),
            sky_horizon=_hsv_color(rng, rng.uniform(5, 20), (90, 200), (170, 240)),
            shadows=rng.uniform(0.2, 0.45),
            headlights=rng.random() < 0.7,
        )
    ambient = rng.uniform(0.1, 0.22) if kind == "night" else rng.uniform(0.45, 0.65)
    return Lighting(
        kind,
        ambient=ambient,
        sun=(0.0, 0.0, 1.0),
        sun_strength=0.0,
        tint=(1.0, 0.95, 0.9) if kind == "night" else (1.0, 1.0, 1.0),
        sky_top=(30, 20, 15),
        sky_horizon=(60, 50, 45) if kind == "night" else (90, 90, 90),
        lamp_color=(60, 150, 230) if rng.random() < 0.5 else (200, 200, 190),
        headlights=kind == "night",
    )


# things ------------------------------------------------------------------------------------------

VEHICLE_KINDS = ("saloon", "hatchback", "suv", "van", "light_truck", "bus")
VEHICLE_CLASS = {
    "saloon": "car",
    "hatchback": "car",
    "suv": "car",
    "van": "truck",
    "light_truck": "truck",
    "bus": "truck",
}


def vehicle(rng: Rng, dom: Domain, kind: str, x: float, y: float, heading: float) -> Thing:
    """A vehicle of `kind` standing at (x, y), its nose towards `heading` (radians)."""
    color = vehicle_color(rng, dom)
    h = heading
    parts: list[Part] = []
    lights: list[tuple[np.ndarray, Color]] = []
    rot = rot_z(h)

    def world(lx: float, ly: float, lz: float) -> np.ndarray:
        return np.array([lx, ly, lz]) @ rot.T + np.array([x, y, 0.0])

    head = (
        (0, (0.04, 0.2, 0.55, 0.85), (235, 240, 245)),
        (0, (0.8, 0.96, 0.55, 0.85), (235, 240, 245)),
        (2, (0.04, 0.2, 0.55, 0.85), (40, 40, 200)),
        (2, (0.8, 0.96, 0.55, 0.85), (40, 40, 200)),
    )
    if kind in ("saloon", "hatchback", "suv"):
        length = rng.uniform(4.3, 4.9) if kind != "hatchback" else rng.uniform(3.7, 4.2)
        width = rng.uniform(1.7, 1.9)
        zb = rng.uniform(0.85, 1.0) if kind != "suv" else rng.uniform(1.05, 1.2)
        zt = zb + (rng.uniform(0.45, 0.55) if kind != "suv" else rng.uniform(0.55, 0.7))
        half = length / 2
        parts.append(
            Part(
                "prism",
                prism(x, y, h, 0.28, zb, -half, half, width / 2, (0.06, 0.06, 0.05)),
                color,
                decals=head,
            )
        )
        front = half - rng.uniform(0.9, 1.3) if kind != "suv" else half - rng.uniform(0.7, 1.0)
        rear = -half + (rng.uniform(0.6, 0.9) if kind == "saloon" else rng.uniform(0.15, 0.3))
        parts.append(
            Part(
                "prism",
                prism(
                    x,
                    y,
                    h,
                    zb,
                    zt,
                    rear,
                    front,
                    width / 2 - 0.08,
                    (rng.uniform(0.5, 0.8), rng.uniform(0.2, 0.6), 0.1),
                ),
                color,
                glass=(0, 1, 2, 3),
            )
        )
        wheel_x = half - 0.8
    elif kind == "van":
        length, width = rng.uniform(4.6, 5.4), rng.uniform(1.8, 2.0)
        half = length / 2
        zt = rng.uniform(1.9, 2.4)
        parts.append(Part("prism", prism(x, y, h, 0.3, 1.0, -half, half, width / 2), color, decals=head))
        parts.append(
            Part(
                "prism",
                prism(x, y, h, 1.0, zt, -half, half - 0.35, width / 2, (0.7, 0.0, 0.05)),
                color,
                glass=(0,),
                decals=(
                    (1, (0.65, 0.95, 0.15, 0.85), (60, 55, 50)),
                    (3, (0.05, 0.35, 0.15, 0.85), (60, 55, 50)),
                ),
            )
        )
        wheel_x = half - 0.9
    elif kind == "light_truck":
        width = rng.uniform(1.9, 2.3)
        cab_l, box_l = rng.uniform(1.6, 2.0), rng.uniform(3.0, 4.5)
        half = (cab_l + box_l) / 2
        cab_top = rng.uniform(2.0, 2.4)
        cab_col = color if rng.random() < 0.5 else vehicle_color(rng, dom)
        parts.append(
            Part(
                "prism",
                prism(x, y, h, 0.35, cab_top, half - cab_l, half, width / 2, (0.25, 0.0, 0.05)),
                cab_col,
                glass=(0,),
                decals=head[:2],
            )
        )
        box_top = rng.uniform(2.3, 3.0) if rng.random() < 0.6 else rng.uniform(1.2, 1.5)
        box_col = (230, 230, 230) if rng.random() < 0.5 else vehicle_color(rng, dom)
        parts.append(
            Part(
                "prism",
                prism(x, y, h, 0.8, box_top, -half, half - cab_l - 0.1, width / 2 + 0.05),
                box_col,
                decals=head[2:],
            )
        )
        wheel_x = half - 0.9
    else:  # bus
        length, width = rng.uniform(9.5, 12.0), 2.5
        half = length / 2
        zt = rng.uniform(2.9, 3.3)
        band = tuple(
            (f, (0.03 + i * 0.16, 0.16 + i * 0.16, 0.45, 0.85), (70, 60, 55))
            for f in (1, 3)
            for i in range(6)
        )
        parts.append(
            Part(
                "prism",
                prism(x, y, h, 0.3, zt, -half, half, width / 2, (0.1, 0.0, 0.0)),
                color,
                glass=(0,),
                decals=band + head[2:],
            )
        )
        wheel_x = half - 2.2
    for wx in (wheel_x, -wheel_x):
        for side in (1, -1):
            ring = np.array(
                [
                    world(wx + 0.34 * math.cos(a), side * (width / 2 + 0.02), 0.34 + 0.34 * math.sin(a))
                    for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)
                ]
            )
            parts.append(Part("disc", ring, (28, 28, 30)))
    for sy in (-0.35, 0.35):
        lights.append((world(half + 0.05, sy * width, 0.7), (220, 235, 255)))
        lights.append((world(-half - 0.05, sy * width, 0.75), (40, 40, 255)))
    return Thing(VEHICLE_CLASS[kind], x, y, parts, lights)


def wheelie_bin(rng: Rng, dom: Domain, x: float, y: float, heading: float, lid_open: bool) -> Thing:
    """A 120 or 240 L municipal wheelie bin, its front (the lid's handle) towards `heading`."""
    big = rng.random() < 0.6
    w, d, hgt = (0.58, 0.73, 1.07) if big else (0.48, 0.55, 0.93)
    color = dom.bin_palette[int(rng.integers(len(dom.bin_palette)))]
    color = tuple(float(np.clip(c * rng.uniform(0.85, 1.15), 0, 255)) for c in color)
    body = prism(x, y, heading, 0.03, hgt, -d / 2 + 0.04, d / 2 - 0.04, w / 2 - 0.03, (-0.04, -0.04, -0.03))
    sticker = ((0, (0.2, 0.8, 0.45, 0.75), (235, 235, 235)),) if rng.random() < 0.7 else ()
    parts = [Part("prism", body, color, decals=sticker)]
    rot = rot_z(heading)
    if lid_open:
        back = -d / 2
        lid = np.array(
            [
                [back, w / 2, hgt],
                [back, -w / 2, hgt],
                [back - 0.1, -w / 2, hgt + d * 0.95],
                [back - 0.1, w / 2, hgt + d * 0.95],
            ]
        ) @ rot.T + np.array([x, y, 0.0])
        parts.append(Part("flat", lid, tuple(c * 0.8 for c in color)))
    else:
        parts.append(
            Part(
                "prism",
                prism(x, y, heading, hgt, hgt + 0.05, -d / 2 - 0.02, d / 2 + 0.03, w / 2),
                tuple(c * 0.85 for c in color),
            )
        )
    return Thing("bin", x, y, parts)


BAG_COLORS: tuple[Color, ...] = (
    (25, 25, 25),
    (40, 40, 45),
    (200, 200, 200),
    (160, 100, 40),
    (50, 140, 60),
    (60, 60, 170),
    (210, 210, 230),
    (80, 120, 150),
)


def garbage_heap(rng: Rng, x: float, y: float, rx: float, ry: float, z: float = 0.0) -> Thing:
    """Bags and scattered rubbish around (x, y): a pile for `bin_overflow` or illegal dumping."""
    parts: list[Part] = []
    for _ in range(int(rng.integers(3, 14))):
        a, rr = rng.uniform(0, 2 * math.pi), math.sqrt(rng.random())
        r = rng.uniform(0.12, 0.32)
        cx, cy = x + rr * rx * math.cos(a), y + rr * ry * math.sin(a)
        parts.append(
            Part(
                "sphere",
                np.array([[cx, cy, z + r * 0.8]]),
                BAG_COLORS[int(rng.integers(len(BAG_COLORS)))],
                radius=r,
            )
        )
    for _ in range(int(rng.integers(2, 12))):  # paper, cartons, bottles on the ground
        a, rr = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.3)
        cx, cy = x + rr * rx * math.cos(a), y + rr * ry * math.sin(a)
        s = rng.uniform(0.08, 0.3)
        quad = prism(cx, cy, rng.uniform(0, math.pi), 0.0, rng.uniform(0.02, 0.15), -s, s, s * 0.6)
        col = ((235, 235, 230), (90, 140, 190), (60, 160, 90), (40, 40, 200))[int(rng.integers(4))]
        parts.append(Part("prism", quad, col))
    return Thing("garbage", x, y, parts)


def person(rng: Rng, x: float, y: float, scale: float = 1.0) -> Thing:
    h = rng.uniform(1.55, 1.85) * scale
    top = _hsv_color(rng, rng.uniform(0, 180), (20, 200), (40, 230))
    legs = _hsv_color(rng, rng.uniform(90, 130), (10, 150), (30, 140))
    skin = ((140, 170, 210), (110, 140, 190), (80, 110, 160))[int(rng.integers(3))]
    a = rng.uniform(0, math.pi)
    parts = [
        Part("prism", prism(x, y, a, 0.0, h * 0.5, -0.12, 0.12, 0.17), legs),
        Part("prism", prism(x, y, a, h * 0.5, h * 0.84, -0.13, 0.13, 0.22, (0.0, 0.0, 0.03)), top),
        Part("sphere", np.array([[x, y, h * 0.92]]), skin, radius=0.11 * scale),
    ]
    return Thing(None, x, y, parts)


def two_wheeler(rng: Rng, dom: Domain, x: float, y: float, heading: float) -> Thing:
    """An e-bike with its rider, or a three-wheeler: vehicles the detector must not call cars."""
    if rng.random() < 0.6:
        col = vehicle_color(rng, dom)
        parts = [Part("prism", prism(x, y, heading, 0.25, 0.75, -0.8, 0.8, 0.15), col)]
        for wx in (0.6, -0.6):
            ring = np.array(
                [
                    [
                        x + (wx + 0.3 * math.cos(a)) * math.cos(heading),
                        y + (wx + 0.3 * math.cos(a)) * math.sin(heading),
                        0.3 + 0.3 * math.sin(a),
                    ]
                    for a in np.linspace(0, 6.2, 10)
                ]
            )
            parts.append(Part("disc", ring, (25, 25, 25)))
        rider = person(rng, x, y)
        lifted = [Part(p.kind, p.pts + np.array([0, 0, 0.45]), p.color, p.radius) for p in rider.parts[1:]]
        return Thing(None, x, y, parts + lifted)
    col = _hsv_color(rng, rng.uniform(0, 180), (80, 220), (80, 200))
    parts = [
        Part("prism", prism(x, y, heading, 0.25, 0.9, -1.3, 1.3, 0.65), col),
        Part("prism", prism(x, y, heading, 0.9, 1.75, -1.2, 0.6, 0.62, (0.3, 0.0, 0.02)), col, glass=(0,)),
    ]
    return Thing(None, x, y, parts)


def tree(rng: Rng, x: float, y: float) -> Thing:
    trunk_h = rng.uniform(1.8, 3.2)
    parts = [Part("prism", prism(x, y, 0.0, 0.0, trunk_h + 0.5, -0.13, 0.13, 0.13), (40, 60, 80))]
    green = _hsv_color(rng, rng.uniform(35, 75), (80, 200), (50, 140))
    for _ in range(int(rng.integers(3, 7))):
        r = rng.uniform(0.9, 2.0)
        c = [x + rng.uniform(-1, 1), y + rng.uniform(-1, 1), trunk_h + r * rng.uniform(0.6, 1.4)]
        parts.append(Part("sphere", np.array([c]), tuple(v * rng.uniform(0.8, 1.2) for v in green), radius=r))
    return Thing(None, x, y, parts, casts_shadow=True)


def pole(rng: Rng, x: float, y: float, towards_y: float) -> Thing:
    hgt = rng.uniform(6, 10)
    grey = (rng.uniform(90, 160),) * 3
    arm_dir = math.copysign(1, towards_y - y)
    parts = [
        Part("prism", prism(x, y, 0.0, 0.0, hgt, -0.09, 0.09, 0.09), grey),
        Part("prism", prism(x, y + arm_dir * 0.9, 0.0, hgt - 0.1, hgt, -0.06, 0.06, 0.9), grey),
    ]
    return Thing(None, x, y, parts)


def building(rng: Rng, x0: float, x1: float, y_front: float, side: int) -> Thing:
    """A block along the road between x0 and x1, its facade at y_front, extending away on `side`."""
    depth = rng.uniform(8, 20)
    hgt = rng.uniform(5, 35)
    yc = y_front + side * depth / 2
    col = _hsv_color(rng, rng.uniform(0, 180), (0, 60), (100, 220))
    body = prism((x0 + x1) / 2, yc, 0.0, 0.0, hgt, -(x1 - x0) / 2, (x1 - x0) / 2, depth / 2)
    glass = (rng.uniform(60, 120), rng.uniform(60, 110), rng.uniform(50, 90))
    floors, cols = max(1, int(hgt / 3.2)), max(1, int((x1 - x0) / 3.5))
    face = 1 if side > 0 else 3  # the facade that faces the road
    decals = []
    for fl in range(floors):
        for c in range(cols):
            decals.append(
                (face, ((c + 0.2) / cols, (c + 0.8) / cols, (fl + 0.3) / floors, (fl + 0.8) / floors), glass)
            )
    if rng.random() < 0.6:  # shop fronts: a glass band at street level
        decals.append((face, (0.02, 0.98, 0.02, min(0.9, 2.8 / hgt)), (70, 65, 60)))
    return Thing(
        None, (x0 + x1) / 2, yc, [Part("prism", body, col, decals=tuple(decals))], casts_shadow=False
    )


# scenes ------------------------------------------------------------------------------------------
