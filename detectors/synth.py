"""Synthetic street scenes with labels: the data the shipped detector is trained on.

A fixed street camera on a pole looks across a road: buildings at the top, a far pavement, the
road with its lanes, a near pavement with bins. Everything is drawn with OpenCV primitives from a
seeded generator, so the same seed gives the same pixels and the same labels on any machine.
The drawing functions take explicit object specs, so `detectors.clip` animates the same objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("car", "truck", "water", "bin", "garbage")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}

Color = tuple[int, int, int]
Rng = np.random.Generator

CAR_COLORS: tuple[Color, ...] = (
    (235, 235, 235), (30, 30, 30), (150, 150, 150), (40, 40, 170), (160, 70, 30), (40, 120, 40),
    (200, 200, 205), (20, 150, 220), (90, 60, 40), (120, 30, 120), (60, 60, 90), (210, 180, 120),
)  # fmt: skip
BIN_COLORS: tuple[Color, ...] = (
    (40, 110, 40), (150, 80, 20), (70, 70, 70), (30, 30, 30), (20, 160, 200), (40, 40, 140), (110, 120, 40),
)  # fmt: skip
TRASH_COLORS: tuple[Color, ...] = (
    (25, 25, 25), (230, 230, 230), (60, 110, 170), (150, 90, 40), (40, 150, 60), (40, 40, 200),
    (200, 200, 80), (90, 140, 190), (170, 60, 150), (50, 50, 60),
)  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """Horizontal bands of the street, as fractions of the frame height, and the look of each."""

    far_walk_y: float = 0.30
    road_top_y: float = 0.40
    road_bottom_y: float = 0.80
    sky: Color = (200, 170, 140)
    facade: Color = (120, 130, 150)
    walk: Color = (150, 155, 160)
    asphalt: Color = (85, 85, 88)
    lane_color: Color = (225, 225, 225)
    lanes: int = 2
    dashed: bool = True

    def lane_bottom_y(self, lane: int) -> float:
        """Relative y of the tyre line of a vehicle in `lane` (0 = far lane, lanes-1 = near kerb)."""
        step = (self.road_bottom_y - self.road_top_y) / self.lanes
        return self.road_top_y + step * (lane + 0.85)


@dataclass(frozen=True)
class Vehicle:
    """A car or truck seen from the side; x, y is the bottom-left corner in pixels."""

    kind: str  # "car" or "truck"
    x: float
    y: float
    w: float
    h: float
    color: Color
    facing_right: bool = True
    cab_color: Color = (200, 200, 200)
    lights_on: bool = False
    style: int = 0  # 0 saloon, 1 hatchback, 2 SUV (cars); 0 box, 1 van (trucks)


@dataclass(frozen=True)
class Puddle:
    """Standing water: an irregular flat blob centred at cx, cy (pixels)."""

    cx: float
    cy: float
    rx: float
    ry: float
    seed: int
    lobes: int = 5


@dataclass(frozen=True)
class Bin:
    """A street bin standing on the pavement; x, y is the bottom-left corner in pixels."""

    x: float
    y: float
    w: float
    h: float
    color: Color
    lid_open: bool = False


@dataclass(frozen=True)
class Heap:
    """A heap of garbage: pieces scattered in an ellipse around cx, cy (pixels)."""

    cx: float
    cy: float
    rx: float
    ry: float
    pieces: int
    seed: int


@dataclass
class Label:
    """One labelled object: its class and outline in pixels."""

    cls: str
    polygon: np.ndarray  # (N, 2) float pixels

    def box(self) -> tuple[float, float, float, float]:
        xs, ys = self.polygon[:, 0], self.polygon[:, 1]
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


@dataclass
class Scene:
    """Everything needed to draw one frame: background spec, objects and the light."""

    width: int
    height: int
    layout: Layout
    background_seed: int
    puddles: list[Puddle] = field(default_factory=list)
    bins: list[Bin] = field(default_factory=list)
    heaps: list[Heap] = field(default_factory=list)
    vehicles: list[Vehicle] = field(default_factory=list)
    pedestrians: list[tuple[float, float, float, int]] = field(default_factory=list)  # x, y, h, seed
    light: float = 1.0  # brightness multiplier: 1 day, ~0.6 dusk, ~0.3 night
    tint: Color = (0, 0, 0)  # added per channel (BGR), e.g. blue at night
    gamma: float = 1.0


# ---------------------------------------------------------------------------------------------- drawing


def _ipt(x: float, y: float) -> tuple[int, int]:
    return round(x), round(y)


def _shade(c: Color, f: float) -> Color:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)  # type: ignore[return-value]


def blob_polygon(
    cx: float, cy: float, rx: float, ry: float, seed: int, lobes: int = 5, n: int = 40
) -> np.ndarray:
    """An irregular closed outline: an ellipse whose radius wobbles with a few random harmonics."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 2 + lobes):
        r += rng.uniform(0.02, 0.22) / (k - 1) ** 0.6 * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.45, 1.6)
    pts = np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)
    return pts


def draw_background(scene: Scene) -> np.ndarray:
    """The static street: sky, facades, pavements, road, lane marks and harmless clutter."""
    w, h, lay = scene.width, scene.height, scene.layout
    rng = np.random.default_rng(scene.background_seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = lay.sky
    far_y, top_y, bot_y = int(lay.far_walk_y * h), int(lay.road_top_y * h), int(lay.road_bottom_y * h)
    # facades with windows
    x = -int(rng.uniform(0, 0.1) * w)
    while x < w:
        bw = int(rng.uniform(0.12, 0.3) * w)
        top = int(rng.uniform(0.0, 0.6) * far_y)
        col = _shade(lay.facade, rng.uniform(0.7, 1.25))
        cv2.rectangle(img, (x, top), (x + bw, far_y), col, -1)
        win = _shade(col, rng.uniform(0.4, 0.7))
        ww, wh = max(3, int(bw * 0.1)), max(3, int(h * 0.035))
        for wy in range(top + wh, far_y - wh, int(wh * 2.2)):
            for wx in range(x + ww, x + bw - ww, int(ww * 2.2)):
                cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), win, -1)
        x += bw
    # pavements and kerbs
    cv2.rectangle(img, (0, far_y), (w, top_y), lay.walk, -1)
    cv2.rectangle(img, (0, bot_y), (w, h), _shade(lay.walk, rng.uniform(0.9, 1.1)), -1)
    for y0, y1 in ((far_y, top_y), (bot_y, h)):
        step = max(8, int(rng.uniform(0.04, 0.08) * w))
        for sx in range(0, w, step):
            cv2.line(img, (sx, y0), (sx, y1), _shade(lay.walk, 0.85), 1)
    cv2.rectangle(img, (0, top_y - max(2, h // 120)), (w, top_y), _shade(lay.walk, 1.15), -1)
    cv2.rectangle(img, (0, bot_y), (w, bot_y + max(2, h // 100)), _shade(lay.walk, 1.15), -1)
    # asphalt with texture and repaired patches (dark, but dry: a negative for water)
    road = img[top_y:bot_y]
    road[:] = lay.asphalt
    tex = rng.normal(0, 7, road.shape[:2]).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (0, 0), 1.2)
    road[:] = np.clip(road.astype(np.float32) + tex[..., None], 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 3)):
        px, py = rng.uniform(0, w), rng.uniform(top_y, bot_y)
        pw, ph = rng.uniform(0.04, 0.15) * w, rng.uniform(0.02, 0.06) * h
        cv2.rectangle(
            img, _ipt(px, py), _ipt(px + pw, py + ph), _shade(lay.asphalt, rng.uniform(0.7, 0.85)), -1
        )
    # lane marks
    lane_h = (bot_y - top_y) / lay.lanes
    lw = max(2, h // 90)
    for k in range(1, lay.lanes):
        y = int(top_y + k * lane_h)
        if lay.dashed:
            dash, gap = int(w * rng.uniform(0.05, 0.09)), int(w * rng.uniform(0.04, 0.08))
            off = int(rng.uniform(0, dash + gap))
            for sx in range(-off, w, dash + gap):
                cv2.line(img, (sx, y), (sx + dash, y), lay.lane_color, lw)
        else:
            cv2.line(img, (0, y), (w, y), lay.lane_color, lw)
    edge_y = bot_y - max(3, h // 60)
    cv2.line(img, (0, edge_y), (w, edge_y), lay.lane_color, max(1, lw - 1))
    # road paint: a zebra crossing or an arrow now and then
    if rng.random() < 0.35:
        zx = int(rng.uniform(0.05, 0.8) * w)
        for i in range(6):
            sx = zx + i * int(0.03 * w)
            cv2.rectangle(img, (sx, top_y + 3), (sx + int(0.015 * w), bot_y - 6), (215, 215, 215), -1)
    if rng.random() < 0.4:
        ax, ay = rng.uniform(0.1, 0.9) * w, rng.uniform(top_y + lane_h * 0.3, bot_y - lane_h * 0.3)
        d = 1 if rng.random() < 0.5 else -1
        cv2.arrowedLine(
            img, _ipt(ax, ay), _ipt(ax + d * 0.08 * w, ay), (210, 210, 210), lw + 2, tipLength=0.4
        )
    # manhole covers: dark round-ish things that are not water
    for _ in range(rng.integers(0, 3)):
        mx, my = rng.uniform(0, w), rng.uniform(top_y + 0.2 * lane_h, bot_y - 0.2 * lane_h)
        mr = rng.uniform(0.02, 0.035) * w
        cv2.ellipse(img, _ipt(mx, my), _ipt(mr, mr * 0.35), 0, 0, 360, (55, 55, 60), -1)
        cv2.ellipse(img, _ipt(mx, my), _ipt(mr * 0.7, mr * 0.25), 0, 0, 360, (75, 75, 80), 1)
    # poles and trees on the pavements
    for _ in range(rng.integers(0, 4)):
        tx = rng.uniform(0, w)
        base = rng.choice([top_y - 2, h - rng.uniform(0, 0.05) * h])
        th = rng.uniform(0.2, 0.45) * h
        cv2.line(img, _ipt(tx, base), _ipt(tx, base - th), (50, 60, 70), max(2, w // 200))
        if rng.random() < 0.6:
            crown = blob_polygon(tx, base - th, 0.05 * w, 0.08 * h, int(rng.integers(1 << 30)), n=24)
            cv2.fillPoly(img, [crown.astype(np.int32)], _shade((50, 110, 60), rng.uniform(0.7, 1.2)))
    return img


def draw_shadows(img: np.ndarray, scene: Scene) -> None:
    """Soft dark shapes across the road (trees, buildings): dark but not water."""
    rng = np.random.default_rng(scene.background_seed + 17)
    h, w = img.shape[:2]
    top_y, bot_y = scene.layout.road_top_y * h, scene.layout.road_bottom_y * h
    for _ in range(rng.integers(0, 3)):
        poly = blob_polygon(
            rng.uniform(0, w), rng.uniform(top_y, bot_y),
            rng.uniform(0.05, 0.2) * w, rng.uniform(0.03, 0.1) * h,
            int(rng.integers(1 << 30)),
        )  # fmt: skip
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(mask, [poly.astype(np.int32)], 255)
        mask = cv2.GaussianBlur(mask, (0, 0), 3).astype(np.float32) / 255 * rng.uniform(0.2, 0.45)
        img[:] = (img * (1 - mask[..., None])).astype(np.uint8)


def draw_puddle(img: np.ndarray, p: Puddle, sky: Color) -> np.ndarray:
    """Wet dark surface reflecting what stands above it; returns the outline drawn."""
    poly = blob_polygon(p.cx, p.cy, p.rx, p.ry, p.seed, p.lobes)
    h, w = img.shape[:2]
    x0, y0 = max(0, int(poly[:, 0].min()) - 2), max(0, int(poly[:, 1].min()) - 2)
    x1, y1 = min(w, int(poly[:, 0].max()) + 3), min(h, int(poly[:, 1].max()) + 3)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return poly
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [(poly - (x0, y0)).astype(np.int32)], 255)
    roi = img[y0:y1, x0:x1].astype(np.float32)
    # reflection: the rows just above the puddle, mirrored, blended into a darkened surface
    rh = y1 - y0
    src_top = max(0, y0 - rh)
    above = img[src_top:y0, x0:x1]
    refl = np.empty_like(roi)
    refl[:] = sky
    if above.shape[0] > 0:
        flipped = above[::-1].astype(np.float32)
        refl[: flipped.shape[0]] = flipped
    rng = np.random.default_rng(p.seed + 1)
    # a still surface mirrors the sky more than the kerb: brighten towards the sky colour
    sheen = np.linspace(1.15, 0.8, rh, dtype=np.float32)[:, None, None] * np.asarray(sky, np.float32)
    refl = cv2.GaussianBlur(refl * 0.45 + sheen * 0.55, (0, 0), 1.5)
    base = roi * rng.uniform(0.35, 0.55)
    mix = rng.uniform(0.45, 0.7)
    water = base * (1 - mix) + refl * mix
    # ripples / specular streaks
    for _ in range(max(1, int((x1 - x0) / 25))):
        sy = rng.uniform(0, rh)
        sx = rng.uniform(0, x1 - x0)
        cv2.line(water, _ipt(sx, sy), _ipt(sx + rng.uniform(5, 30), sy), (230, 230, 230), 1)
    m = cv2.GaussianBlur(mask, (0, 0), 1.0).astype(np.float32)[..., None] / 255
    img[y0:y1, x0:x1] = np.clip(roi * (1 - m) + water * m, 0, 255).astype(np.uint8)
    # dark wet rim
    cv2.polylines(img, [poly.astype(np.int32)], True, _shade(sky, 0.25), 1, cv2.LINE_AA)
    return poly


def _wheel(img: np.ndarray, cx: float, cy: float, r: float) -> None:
    cv2.circle(img, _ipt(cx, cy), max(2, round(r)), (20, 20, 20), -1, cv2.LINE_AA)
    cv2.circle(img, _ipt(cx, cy), max(1, round(r * 0.5)), (150, 150, 155), -1, cv2.LINE_AA)


def draw_vehicle(img: np.ndarray, v: Vehicle) -> np.ndarray:
    """A side view of a car or a truck; returns its outline (the bounding rectangle)."""
    x, y, w, h = v.x, v.y, v.w, v.h
    r = h * (0.17 if v.kind == "car" else 0.13)
    body, dark = v.color, _shade(v.color, 0.6)
    glass = (90, 70, 55)
    # soft shadow under the vehicle
    cv2.ellipse(img, _ipt(x + w / 2, y), _ipt(w * 0.52, max(2, h * 0.07)), 0, 0, 360, (35, 35, 38), -1)
    fx = (lambda t: x + t * w) if v.facing_right else (lambda t: x + (1 - t) * w)
    if v.kind == "car":
        belt = y - h * (0.62 if v.style != 2 else 0.68)
        sill = y - r * 0.9
        nose = 0.1 if v.style != 1 else 0.06
        lower = np.array([(fx(0.0), sill), (fx(0.0), belt + h * 0.05), (fx(nose), belt),
                          (fx(1.0 - nose), belt), (fx(1.0), belt + h * 0.08), (fx(1.0), sill)])  # fmt: skip
        cv2.fillPoly(img, [lower.astype(np.int32)], body, cv2.LINE_AA)
        back = {0: (0.12, 0.28), 1: (0.04, 0.06), 2: (0.05, 0.1)}[v.style]
        front = {0: (0.72, 0.9), 1: (0.68, 0.86), 2: (0.78, 0.9)}[v.style]
        cabin = np.array([(fx(back[0]), belt), (fx(back[1]), y - h), (fx(front[0]), y - h),
                          (fx(front[1]), belt)])  # fmt: skip
        cv2.fillPoly(img, [cabin.astype(np.int32)], body, cv2.LINE_AA)
        inset = h * 0.06
        win = np.array([(fx(back[0] + 0.04), belt - inset * 0.5), (fx(back[1] + 0.03), y - h + inset),
                        (fx(front[0] - 0.01), y - h + inset),
                        (fx(front[1] - 0.04), belt - inset * 0.5)])  # fmt: skip
        cv2.fillPoly(img, [win.astype(np.int32)], glass, cv2.LINE_AA)
        pillar = fx((back[1] + front[0]) / 2)
        cv2.line(img, _ipt(pillar, y - h + inset), _ipt(pillar, belt), body, max(2, round(w * 0.025)))
        cv2.line(img, _ipt(pillar, belt), _ipt(pillar, sill), dark, 1)
        cv2.line(img, _ipt(fx(0.02), belt + h * 0.14), _ipt(fx(0.98), belt + h * 0.14), _shade(body, 1.2), 1)
        wheels = (0.2, 0.8)
        top = y - h
    else:
        cab_t = 0.22 if v.style == 0 else 0.0
        box_top = y - h
        if v.style == 0:  # box truck: cargo box behind a cab
            cv2.rectangle(img, _ipt(fx(0.0), box_top), _ipt(fx(0.74), y - r * 1.1), body, -1)
            cv2.rectangle(img, _ipt(fx(0.0), box_top), _ipt(fx(0.74), y - r * 1.1), dark, 1)
            cab = np.array([(fx(0.76), y - r * 1.1), (fx(0.76), y - h * 0.72), (fx(0.93), y - h * 0.72),
                            (fx(1.0), y - h * 0.45), (fx(1.0), y - r * 1.1)])  # fmt: skip
            cv2.fillPoly(img, [cab.astype(np.int32)], v.cab_color, cv2.LINE_AA)
            win = np.array([(fx(0.85), y - h * 0.68), (fx(0.92), y - h * 0.68), (fx(0.97), y - h * 0.5),
                            (fx(0.85), y - h * 0.5)])  # fmt: skip
            cv2.fillPoly(img, [win.astype(np.int32)], glass, cv2.LINE_AA)
            cv2.rectangle(img, _ipt(fx(0.0), y - r * 1.6), _ipt(fx(1.0), y - r * 1.0), (40, 40, 40), -1)
            wheels = (0.12, 0.27, 0.86)
        else:  # van
            van = np.array([(fx(0.0), y - r), (fx(0.0), box_top), (fx(0.8), box_top),
                            (fx(0.92), y - h * 0.55),
                            (fx(1.0), y - h * 0.45), (fx(1.0), y - r)])  # fmt: skip
            cv2.fillPoly(img, [van.astype(np.int32)], body, cv2.LINE_AA)
            win = np.array([(fx(0.8), box_top + h * 0.08), (fx(0.9), y - h * 0.55), (fx(0.72), y - h * 0.55),
                            (fx(0.72), box_top + h * 0.08)])  # fmt: skip
            cv2.fillPoly(img, [win.astype(np.int32)], glass, cv2.LINE_AA)
            cv2.line(img, _ipt(fx(0.45), box_top + 3), _ipt(fx(0.45), y - r), dark, 1)
            wheels = (0.17, 0.83)
        del cab_t
        top = box_top
    for t in wheels:
        _wheel(img, fx(t), y - r, r)
    # lights
    lw, lh = max(2, w * 0.03), max(2, h * 0.06)
    head_y = y - h * (0.5 if v.kind == "car" else 0.3)
    hx = fx(1.0) - (lw if v.facing_right else 0)
    tx = fx(0.0) - (0 if v.facing_right else lw)
    cv2.rectangle(img, _ipt(hx, head_y), _ipt(hx + lw, head_y + lh), (200, 240, 250), -1)
    cv2.rectangle(img, _ipt(tx, head_y), _ipt(tx + lw, head_y + lh), (30, 30, 200), -1)
    if v.lights_on:
        gx = fx(1.0) + (w * 0.15 if v.facing_right else -w * 0.15)
        overlay = img.copy()
        cv2.ellipse(overlay, _ipt(gx, y - h * 0.2), _ipt(w * 0.18, h * 0.25), 0, 0, 360, (190, 235, 255), -1)
        cv2.addWeighted(overlay, 0.35, img, 0.65, 0, dst=img)
    return np.array([(x, top), (x + w, top), (x + w, y), (x, y)], np.float64)


def draw_bin(img: np.ndarray, b: Bin) -> np.ndarray:
    """A wheelie bin or a communal container with a lid; returns its outline."""
    x, y, w, h = b.x, b.y, b.w, b.h
    col, dark = b.color, _shade(b.color, 0.65)
    lid_h = h * 0.1
    body = np.array([(x + w * 0.04, y - h * 0.04), (x, y - h + lid_h), (x + w, y - h + lid_h),
                     (x + w * 0.96, y - h * 0.04)])  # fmt: skip
    cv2.fillPoly(img, [body.astype(np.int32)], col, cv2.LINE_AA)
    cv2.polylines(img, [body.astype(np.int32)], True, dark, 1, cv2.LINE_AA)
    for t in (0.3, 0.5, 0.7):  # ribs
        cv2.line(img, _ipt(x + w * 0.1, y - h * t), _ipt(x + w * 0.9, y - h * t), dark, 1)
    top = y - h
    if b.lid_open:
        lid = np.array([(x - w * 0.04, y - h + lid_h), (x + w * 1.04, y - h + lid_h),
                        (x + w * 0.9, y - h - lid_h * 2.2), (x + w * 0.75, y - h - lid_h * 2.4)])  # fmt: skip
        top = y - h - lid_h * 2.4
    else:
        lid = np.array([(x - w * 0.05, y - h + lid_h), (x + w * 1.05, y - h + lid_h), (x + w * 1.05, y - h),
                        (x - w * 0.05, y - h)])  # fmt: skip
    cv2.fillPoly(img, [lid.astype(np.int32)], dark, cv2.LINE_AA)
    r = max(2, w * 0.1)
    for wx in (x + w * 0.15, x + w * 0.85):
        cv2.circle(img, _ipt(wx, y - r * 0.6), round(r * 0.7), (25, 25, 25), -1, cv2.LINE_AA)
    return np.array([(x - w * 0.05, top), (x + w * 1.05, top), (x + w * 1.05, y), (x - w * 0.05, y)])


def draw_heap(img: np.ndarray, heap: Heap) -> np.ndarray:
    """Bags, boxes and loose rubbish; returns the outline of the whole heap."""
    rng = np.random.default_rng(heap.seed)
    pts: list[np.ndarray] = []
    # big pieces first, small ones on top, lower pieces drawn last so the heap reads as a pile
    pieces = []
    for _ in range(heap.pieces):
        a = rng.uniform(0, 2 * np.pi)
        d = math.sqrt(rng.uniform(0, 1))
        px, py = heap.cx + math.cos(a) * d * heap.rx, heap.cy + math.sin(a) * d * heap.ry
        size = rng.uniform(0.25, 0.55) * min(heap.rx, heap.ry * 2.0)
        pieces.append(
            (py, px, size, rng.integers(0, 3), int(rng.integers(1 << 30)), rng.integers(len(TRASH_COLORS)))
        )
    for py, px, size, kind, seed, ci in sorted(pieces):
        col = TRASH_COLORS[ci]
        if kind == 0:  # a bag: a wobbly blob with a knot
            poly = blob_polygon(px, py, size, size * 0.8, seed, lobes=3, n=20)
            cv2.fillPoly(img, [poly.astype(np.int32)], col, cv2.LINE_AA)
            cv2.polylines(img, [poly.astype(np.int32)], True, _shade(col, 0.55), 1, cv2.LINE_AA)
            cv2.circle(img, _ipt(px, py - size * 0.8), max(1, round(size * 0.15)), _shade(col, 0.7), -1)
            cv2.line(
                img, _ipt(px - size * 0.3, py - size * 0.2), _ipt(px, py + size * 0.3), _shade(col, 1.3), 1
            )
        elif kind == 1:  # a cardboard box at an angle
            rect = cv2.boxPoints(((px, py), (size * 1.6, size * 1.1), float(rng.uniform(-30, 30))))
            poly = np.asarray(rect, np.float64)
            cv2.fillPoly(img, [poly.astype(np.int32)], (60, 120, 170), cv2.LINE_AA)
            cv2.polylines(img, [poly.astype(np.int32)], True, (40, 80, 110), 1, cv2.LINE_AA)
        else:  # loose litter: a small bright irregular piece
            poly = blob_polygon(px, py, size * 0.6, size * 0.35, seed, lobes=6, n=12)
            cv2.fillPoly(img, [poly.astype(np.int32)], col, cv2.LINE_AA)
        pts.append(poly)
    allp = np.concatenate(pts)
    x0, y0 = allp.min(axis=0)
    x1, y1 = allp.max(axis=0)
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def draw_pedestrian(img: np.ndarray, x: float, y: float, h: float, seed: int) -> None:
    """A person-like blob: a distractor the model must not call a bin or garbage."""
    rng = np.random.default_rng(seed)
    shirt, trousers = TRASH_COLORS[rng.integers(len(TRASH_COLORS))], _shade(CAR_COLORS[rng.integers(12)], 0.6)
    w = h * 0.28
    cv2.line(img, _ipt(x - w * 0.2, y), _ipt(x - w * 0.1, y - h * 0.45), trousers, max(2, round(w * 0.3)))
    cv2.line(img, _ipt(x + w * 0.2, y), _ipt(x + w * 0.1, y - h * 0.45), trousers, max(2, round(w * 0.3)))
    cv2.ellipse(img, _ipt(x, y - h * 0.62), _ipt(w * 0.5, h * 0.2), 0, 0, 360, shirt, -1, cv2.LINE_AA)
    cv2.circle(img, _ipt(x, y - h * 0.9), max(2, round(h * 0.09)), (120, 150, 190), -1, cv2.LINE_AA)


def apply_light(img: np.ndarray, scene: Scene, noise: np.ndarray | None = None) -> np.ndarray:
    """Time of day: brightness, tint and gamma; then sensor noise."""
    f = img.astype(np.float32) * scene.light + np.asarray(scene.tint, np.float32)
    if scene.gamma != 1.0:
        f = 255.0 * (np.clip(f, 0, 255) / 255.0) ** scene.gamma
    if noise is not None:
        f += noise
    return np.clip(f, 0, 255).astype(np.uint8)


def render(scene: Scene, background: np.ndarray | None = None, noise: np.ndarray | None = None) -> tuple[
    np.ndarray, list[Label]
]:  # fmt: skip
    """Draw a scene: returns the BGR image and its labels (pixel outlines)."""
    img = (background if background is not None else draw_background(scene)).copy()
    labels: list[Label] = []
    for p in scene.puddles:
        labels.append(Label("water", draw_puddle(img, p, scene.layout.sky)))
    draw_shadows(img, scene)
    # objects from the far side to the near side, so nearer ones cover farther ones
    items: list[tuple[float, int, object]] = []
    items += [(b.y, 0, b) for b in scene.bins]
    items += [(hp.cy + hp.ry, 1, hp) for hp in scene.heaps]
    items += [(v.y, 2, v) for v in scene.vehicles]
    items += [(ped[1], 3, ped) for ped in scene.pedestrians]
    for _, _kind, obj in sorted(items, key=lambda t: (t[0], t[1])):
        if isinstance(obj, Bin):
            labels.append(Label("bin", draw_bin(img, obj)))
        elif isinstance(obj, Heap):
            labels.append(Label("garbage", draw_heap(img, obj)))
        elif isinstance(obj, Vehicle):
            labels.append(Label(obj.kind, draw_vehicle(img, obj)))
        else:
            x, y, hh, seed = obj  # type: ignore[misc]
            draw_pedestrian(img, x, y, hh, seed)
    return apply_light(img, scene, noise), labels


# ---------------------------------------------------------------------------------------------- random scenes


def random_layout(rng: Rng) -> Layout:
    """A street with random proportions and colours."""
    far = rng.uniform(0.18, 0.36)
    top = far + rng.uniform(0.06, 0.12)
    bottom = rng.uniform(max(top + 0.32, 0.7), 0.88)
    grey = rng.uniform(60, 115)
    return Layout(
        far_walk_y=far,
        road_top_y=top,
        road_bottom_y=bottom,
        sky=tuple(int(v) for v in rng.uniform([150, 120, 90], [250, 220, 200])),  # type: ignore[arg-type]
        facade=tuple(int(v) for v in rng.uniform(60, 200, 3)),  # type: ignore[arg-type]
        walk=tuple(int(v) for v in np.full(3, rng.uniform(120, 190)) + rng.uniform(-12, 12, 3)),  # type: ignore[arg-type]
        asphalt=tuple(int(v) for v in np.full(3, grey) + rng.uniform(-5, 5, 3)),  # type: ignore[arg-type]
        lane_color=(225, 225, 225) if rng.random() < 0.75 else (40, 190, 230),
        lanes=int(rng.choice([2, 2, 3])),
        dashed=bool(rng.random() < 0.7),
    )


def random_vehicle(
    rng: Rng, layout: Layout, w_px: int, h_px: int, lane: int, x: float | None = None
) -> Vehicle:
    """A car (or now and then a truck) standing in `lane`."""
    y = layout.lane_bottom_y(lane) * h_px + rng.uniform(-0.015, 0.015) * h_px
    depth = 0.55 + 0.45 * (y / h_px - layout.road_top_y) / max(1e-3, layout.road_bottom_y - layout.road_top_y)
    truck = rng.random() < 0.25
    hh = (rng.uniform(0.2, 0.3) if truck else rng.uniform(0.11, 0.16)) * h_px * depth
    ww = hh * (rng.uniform(2.2, 3.2) if truck else rng.uniform(2.3, 2.9))
    if x is None:
        x = rng.uniform(-0.25 * ww, w_px - 0.75 * ww)
    return Vehicle(
        kind="truck" if truck else "car",
        x=x,
        y=y,
        w=ww,
        h=hh,
        color=CAR_COLORS[rng.integers(len(CAR_COLORS))],
        facing_right=bool(rng.random() < 0.5),
        cab_color=CAR_COLORS[rng.integers(len(CAR_COLORS))],
        style=int(rng.integers(0, 2 if truck else 3)),
    )


def random_scene(rng: Rng, width: int = 640, height: int = 360) -> Scene:
    """A random street with a random mix of vehicles, water, bins, garbage and distractors."""
    lay = random_layout(rng)
    mode = rng.choice(["day", "day", "day", "dusk", "night"])
    light, tint, gamma = {
        "day": (rng.uniform(0.85, 1.15), (0, 0, 0), rng.uniform(0.85, 1.15)),
        "dusk": (rng.uniform(0.55, 0.8), (10, 0, -5), rng.uniform(1.0, 1.3)),
        "night": (rng.uniform(0.3, 0.5), (25, 5, 0), rng.uniform(1.1, 1.4)),
    }[str(mode)]
    sc = Scene(width, height, lay, int(rng.integers(1 << 30)), light=light, tint=tint, gamma=gamma)  # type: ignore[arg-type]
    top, bot = lay.road_top_y * height, lay.road_bottom_y * height
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        rx = rng.uniform(0.03, 0.22) * width
        sc.puddles.append(
            Puddle(
                cx=rng.uniform(0.05, 0.95) * width,
                cy=rng.uniform(top + 0.1 * (bot - top), bot),
                rx=rx,
                ry=rx * rng.uniform(0.15, 0.35),
                seed=int(rng.integers(1 << 30)),
                lobes=int(rng.integers(3, 7)),
            )
        )
    for walk_y, scale in (
        (lay.road_top_y * height - 1, 0.6),
        (height - rng.uniform(0.02, 0.1) * height, 1.0),
    ):
        for _ in range(rng.choice([0, 1, 1, 2])):
            bh = rng.uniform(0.1, 0.2) * height * scale
            big = rng.random() < 0.2
            bw = bh * (rng.uniform(1.3, 1.8) if big else rng.uniform(0.55, 0.75))
            bx = rng.uniform(0, width - bw)
            overflow = rng.random() < 0.5
            sc.bins.append(
                Bin(bx, walk_y, bw, bh, BIN_COLORS[rng.integers(len(BIN_COLORS))], lid_open=overflow)
            )
            if overflow:
                sc.heaps.append(
                    Heap(
                        cx=bx + bw / 2 + rng.uniform(-0.3, 0.3) * bw,
                        cy=walk_y - bh * rng.uniform(0.3, 0.9),
                        rx=bw * rng.uniform(0.6, 1.3),
                        ry=bh * rng.uniform(0.3, 0.6),
                        pieces=int(rng.integers(8, 26)),
                        seed=int(rng.integers(1 << 30)),
                    )
                )
        if rng.random() < 0.15:  # fly-tipping without a bin
            hr = rng.uniform(0.05, 0.1) * width * scale
            sc.heaps.append(
                Heap(rng.uniform(0.1, 0.9) * width, walk_y - hr * 0.3, hr, hr * 0.45,
                     int(rng.integers(6, 18)), int(rng.integers(1 << 30)))
            )  # fmt: skip
        for _ in range(rng.choice([0, 0, 1, 2])):
            sc.pedestrians.append(
                (
                    rng.uniform(0, width),
                    walk_y,
                    rng.uniform(0.15, 0.28) * height * scale,
                    int(rng.integers(1 << 30)),
                )
            )
    for lane in range(lay.lanes):
        x = rng.uniform(-0.3, 0.2) * width
        while x < width:
            if rng.random() < 0.5:
                v = random_vehicle(rng, lay, width, height, lane, x)
                v = replace(v, lights_on=mode == "night" and rng.random() < 0.7)
                sc.vehicles.append(v)
                x += v.w + rng.uniform(0.05, 0.4) * width
            else:
                x += rng.uniform(0.2, 0.5) * width
    return sc


def random_homography(rng: Rng, w: int, h: int, strength: float = 0.04) -> np.ndarray:
    """A slight perspective change, as between two cameras on two poles."""
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + rng.uniform(-strength, strength, (4, 2)).astype(np.float32) * np.float32([w, h])
    return cv2.getPerspectiveTransform(src, dst)


def warp_labels(labels: Sequence[Label], m: np.ndarray) -> list[Label]:
    """Labels moved by a homography."""
    out = []
    for lab in labels:
        pts = cv2.perspectiveTransform(lab.polygon.reshape(-1, 1, 2).astype(np.float64), m).reshape(-1, 2)
        out.append(Label(lab.cls, pts))
    return out


def clip_labels(
    labels: Iterable[Label], w: int, h: int, min_visible: float = 0.4, min_px: float = 4
) -> list[Label]:
    """Clip outlines to the frame; drop objects mostly outside it or too small to see."""
    out = []
    for lab in labels:
        x0, y0, x1, y1 = lab.box()
        area = max(1e-6, (x1 - x0) * (y1 - y0))
        poly = lab.polygon.copy()
        poly[:, 0] = poly[:, 0].clip(0, w)
        poly[:, 1] = poly[:, 1].clip(0, h)
        cl = Label(lab.cls, poly)
        cx0, cy0, cx1, cy1 = cl.box()
        if (cx1 - cx0) < min_px or (cy1 - cy0) < min_px:
            continue
        if (cx1 - cx0) * (cy1 - cy0) / area < min_visible:
            continue
        out.append(cl)
    return out


def synth_sample(
    seed: int, index: int, width: int = 640, height: int = 360
) -> tuple[np.ndarray, list[Label]]:
    """One labelled image, fully determined by (seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    scene = random_scene(rng, width, height)
    noise = rng.normal(0, rng.uniform(1, 7), (height, width, 1)).astype(np.float32)
    img, labels = render(scene, noise=noise)
    if rng.random() < 0.6:
        m = random_homography(rng, width, height)
        img = cv2.warpPerspective(img, m, (width, height), borderMode=cv2.BORDER_REFLECT)
        labels = warp_labels(labels, m)
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    return img, clip_labels(labels, width, height)


def yolo_line(lab: Label, w: int, h: int, segment: bool = False) -> str:
    """A YOLO label line: class and normalised box centre/size, or class and the polygon."""
    cid = CLASS_ID[lab.cls]
    if segment:
        pts = lab.polygon / (w, h)
        return f"{cid} " + " ".join(f"{v:.5f}" for v in pts.clip(0, 1).reshape(-1))
    x0, y0, x1, y1 = lab.box()
    return f"{cid} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"


def _write_samples(
    out: Path,
    split: str,
    indices: Sequence[int],
    seed: int,
    width: int,
    height: int,
    segment: bool,
    quality: int,
) -> int:
    cv2.setNumThreads(1)
    for i in indices:
        img, labels = synth_sample(seed, i, width, height)
        name = f"{split}_{i:06d}"
        cv2.imwrite(str(out / "images" / split / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        lines = [yolo_line(lab, width, height, segment) for lab in labels]
        (out / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return len(indices)


def write_dataset(
    out: Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    width: int = 640,
    height: int = 360,
    segment: bool = False,
    jpeg_quality: int = 90,
    jobs: int = 1,
) -> Path:
    """Write an ultralytics YOLO dataset (images/, labels/, data.yaml); returns the data.yaml path."""
    out = Path(out)
    splits = {"train": range(n_train), "val": range(n_train, n_train + n_val)}
    tasks = []
    for split, indices in splits.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        step = max(1, math.ceil(len(indices) / max(1, jobs * 4)))
        tasks += [(split, list(indices[k : k + step])) for k in range(0, len(indices), step)]
    if jobs <= 1:
        for split, idx in tasks:
            _write_samples(out, split, idx, seed, width, height, segment, jpeg_quality)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            futures = [
                pool.submit(_write_samples, out, split, idx, seed, width, height, segment, jpeg_quality)
                for split, idx in tasks
            ]
            for f in futures:
                f.result()
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    data = out / "data.yaml"
    data.write_text(
        f"# synthetic street scenes: seed {seed}, {n_train} train + {n_val} val, {width}x{height}\n"
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    return data
