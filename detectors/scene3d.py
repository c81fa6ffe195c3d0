"""Street scenes seen by a pinhole camera anywhere: the domain-randomised data the detector learns.

A camera of random height (2-14 m), pitch (0-50 deg down), yaw, roll, field of view and barrel
distortion looks at a ground plane holding a road (lanes, dashes, zebra crossings, kerbs), pavements,
buildings, trees, poles, people, two- and three-wheelers (distractors), vehicles built from 3-D boxes
(saloon, hatchback, SUV -> `car`; van, light truck, bus -> `truck`), Chinese municipal wheelie bins
(120/240 L, green/grey/blue/red, lid open or closed), garbage heaps, standing water that mirrors the
sky (and wet-road sheen that is not water), under day, dusk, night with street lamps, infrared
greyscale, rain and glare, then blurred, noised and compressed.

Labels come from the geometry: every labelled object is drawn into an id buffer alongside the
pixels, so its box is what is visible of it after occlusion, truncation and lens distortion.

Two distributions share the code: `TRAIN` and `EVAL` differ in their view ranges and palettes, and
the evaluation seeds are never used for training (`detectors.train` renders `TRAIN`; the evaluation
in `bench/detect_eval.py` renders `EVAL`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from detectors.synth import Label

Rng = np.random.Generator
Color = tuple[float, float, float]

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


# ------------------------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at (0, y_m, height_m) looking along yaw (0 = along the road, +X)."""

    width: int
    height: int
    height_m: float
    pitch_deg: float
    yaw_deg: float
    roll_deg: float
    fov_deg: float
    k1: float = 0.0
    y_m: float = 0.0

    @property
    def centre(self) -> np.ndarray:
        return np.array([0.0, self.y_m, self.height_m])

    @property
    def focal(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)

    @functools.cached_property
    def _axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        yaw, pitch, roll = (math.radians(a) for a in (self.yaw_deg, self.pitch_deg, self.roll_deg))
        f = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
        r = np.array([f[1], -f[0], 0.0])
        r /= np.linalg.norm(r)
        u = _cross(r, f)
        c, s = math.cos(roll), math.sin(roll)
        return f, c * r + s * u, -s * r + c * u

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward, right and up unit vectors in world coordinates (Z up)."""
        return self._axes

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> undistorted pixels (N, 2) and depth along the view axis (N,)."""
        f, r, u = self.axes()
        d = np.asarray(pts, dtype=np.float64) - self.centre
        z = d @ f
        zs = np.maximum(z, 1e-3)
        px = np.stack(
            [self.focal * (d @ r) / zs + self.width / 2, -self.focal * (d @ u) / zs + self.height / 2], 1
        )
        return px, z

    def rays(self) -> np.ndarray:
        """The world direction of every pixel, (H, W, 3)."""
        f, r, u = self.axes()
        xs = (np.arange(self.width) + 0.5 - self.width / 2) / self.focal
        ys = (np.arange(self.height) + 0.5 - self.height / 2) / self.focal
        rays = f + xs[None, :, None] * r - ys[:, None, None] * u
        return rays.astype(np.float32)

    def ground_point(self, x: float, y: float) -> np.ndarray | None:
        """Where pixel (x, y) meets the ground, or None above the horizon."""
        f, r, u = self.axes()
        d = f + (x - self.width / 2) / self.focal * r - (y - self.height / 2) / self.focal * u
        if d[2] > -1e-3:
            return None
        return self.centre + d * (-self.height_m / d[2])

    def distortion_maps(self) -> tuple[np.ndarray, np.ndarray] | None:
        """cv2.remap maps that bend the undistorted render through the lens (None without distortion).

        `k1` > 0 is barrel distortion (straight lines bow outwards, as on wide street cameras). The
        frame's corners stay where they are, so the picture is filled.
        """
        if abs(self.k1) < 1e-4:
            return None
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        nx, ny = (xx + 0.5 - w / 2) / (w / 2), (yy + 0.5 - h / 2) / (w / 2)
        scale = (1 + self.k1 * (nx * nx + ny * ny)) / (1 + self.k1 * (1 + (h / w) ** 2))
        return nx * scale * (w / 2) + w / 2 - 0.5, ny * scale * (w / 2) + h / 2 - 0.5


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def clip_near(poly: np.ndarray, cam: Camera, near: float = 0.3) -> np.ndarray:
    """A convex 3-D polygon cut to the part in front of the camera (Sutherland-Hodgman, one plane)."""
    f = cam.axes()[0]
    z = (poly - cam.centre) @ f - near
    if (z >= 0).all():
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        a, b, za, zb = poly[i], poly[(i + 1) % n], z[i], z[(i + 1) % n]
        if za >= 0:
            out.append(a)
        if (za >= 0) != (zb >= 0):
            out.append(a + (b - a) * (za / (za - zb)))
    return np.array(out) if len(out) >= 3 else np.zeros((0, 3))


# ----------------------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Lighting:
    """The light of one frame."""

    kind: str  # one of LIGHTS
    ambient: float
    sun: tuple[float, float, float]  # unit vector towards the sun
    sun_strength: float
    tint: Color  # BGR multipliers
    sky_top: Color
    sky_horizon: Color
    lamps: tuple[tuple[float, float], ...] = ()  # ground points under lit street lamps
    lamp_color: Color = (120, 190, 255)
    headlights: bool = False
    shadows: float = 0.0  # how dark cast shadows are (0 none)


@dataclass(frozen=True)
class Road:
    """A straight road along X: its centre line at y, lanes, pavements on both sides."""

    y: float
    lanes: int
    lane_w: float
    walk_w: float
    asphalt: Color
    walk: Color
    line: Color = (225, 225, 225)
    zebra_x: float | None = None
    kerb_line: Color | None = None  # a yellow no-parking line along the kerb

    @property
    def half(self) -> float:
        return self.lanes * self.lane_w / 2


@dataclass(frozen=True)
class Puddle3:
    """Standing water on the ground: a blob around (x, y) of radius r (m) with a wobbly outline."""

    x: float
    y: float
    r: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) for k = 2, 3, ...
    stretch: float = 1.0  # elongation along X
    sheen: bool = False  # a wet patch that is not standing water (a hard negative): no label

    def radius(self, theta: np.ndarray) -> np.ndarray:
        r = np.ones_like(theta)
        for k, (a, ph) in enumerate(self.harmonics, start=2):
            r = r + a * np.cos(k * theta + ph)
        return self.r * r

    def outline(self, n: int = 48) -> np.ndarray:
        th = np.linspace(0, 2 * np.pi, n, endpoint=False)
        rr = self.radius(th)
        return np.stack([self.x + rr * np.cos(th) * self.stretch, self.y + rr * np.sin(th), np.zeros(n)], 1)


@dataclass(frozen=True)
class Part:
    """One convex piece of a thing: a prism (8 corners), a sphere or a flat ground quad."""

    kind: str  # "prism" | "sphere" | "flat" | "disc"
    pts: np.ndarray  # prism (8, 3); sphere (1, 3) centre; flat (4, 3); disc (n, 3) ring
    color: Color
    radius: float = 0.0
    glass: tuple[int, ...] = ()  # prism faces (0 front, 1 right, 2 back, 3 left, 4 top) drawn as glass
    decals: tuple[
        tuple[int, tuple[float, float, float, float], Color], ...
    ] = ()  # face, (u0,u1,v0,v1), colour
    emissive: bool = False


@dataclass
class Thing:
    """Something standing on the ground: its parts, and its class when it is labelled."""

    cls: str | None
    x: float
    y: float
    parts: list[Part]
    lights: list[tuple[np.ndarray, Color]] = field(default_factory=list)  # world points that glow at night
    casts_shadow: bool = True


def _rot(heading: float) -> np.ndarray:
    c, s = math.cos(heading), math.sin(heading)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def prism(
    x: float,
    y: float,
    heading: float,
    z0: float,
    z1: float,
    x_lo: float,
    x_hi: float,
    half_w: float,
    top: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """8 corners of a box along `heading`, in local x [x_lo, x_hi] and y [-half_w, half_w]; `top`
    insets the top face at the front, the back and the sides (a windscreen's slope)."""
    fi, bi, si = top
    local = np.array(
        [
            [x_hi, half_w, z0],
            [x_hi, -half_w, z0],
            [x_lo, -half_w, z0],
            [x_lo, half_w, z0],
            [x_hi - fi, half_w - si, z1],
            [x_hi - fi, -half_w + si, z1],
            [x_lo + bi, -half_w + si, z1],
            [x_lo + bi, half_w - si, z1],
        ]
    )
    return local @ _rot(heading).T + np.array([x, y, 0.0])


FACES = ((0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7), (4, 5, 6, 7))


def face_quad(face: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """A sub-rectangle of a quad face (bottom-left, bottom-right, top-right, top-left order)."""
    a, b, c, d = face

    def at(u: float, v: float) -> np.ndarray:
        return (a + (b - a) * u) * (1 - v) + (d + (c - d) * u) * v

    return np.array([at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)])


# ------------------------------------------------------------------------------------------ drawing


@dataclass
class Scene3:
    """Everything one frame shows."""

    cam: Camera
    road: Road
    light: Lighting
    buildings: list[Thing] = field(default_factory=list)
    things: list[Thing] = field(default_factory=list)
    puddles: list[Puddle3] = field(default_factory=list)
    texture_seed: int = 0
    post_seed: int = 0
    post: dict[str, float] = field(default_factory=dict)  # blur, noise, jpeg, rain, glare, downscale


def _sky(light: Lighting, elev: np.ndarray) -> np.ndarray:
    """Sky colour for ray elevations (sin of the angle above the horizon), (..., 3)."""
    t = np.clip(elev * 2.5, 0, 1)[..., None]
    return np.array(light.sky_horizon, np.float32) * (1 - t) + np.array(light.sky_top, np.float32) * t


def _texture(seed: int, size: int = 256) -> np.ndarray:
    """A tileable grey noise texture around 0 (several octaves)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), np.float32)
    for octave, amp in ((8, 1.0), (32, 0.5), (128, 0.3)):
        small = rng.normal(0, 1, (octave, octave)).astype(np.float32)
        out += (
            amp
            * cv2.resize(np.tile(small, (3, 3)), (size * 3, size * 3), interpolation=cv2.INTER_CUBIC)[
                size : 2 * size, size : 2 * size
            ]
        )
    return out / 1.8


class Renderer:
    """Draws a Scene3 into pixels and an id buffer (0 ground, -1 unlabelled things, k > 0 labels)."""

    def __init__(self, scene: Scene3) -> None:
        self.s = scene
        cam = scene.cam
        self.img = np.zeros((cam.height, cam.width, 3), np.float32)
        self.ids = np.zeros((cam.height, cam.width), np.int32)
        self.classes: dict[int, str] = {}
        self.full_area: dict[int, float] = {}
        self.glows: list[tuple[float, float, float, Color]] = []  # x, y, radius px, colour
        f, _, _ = cam.axes()
        self._f = f
        self._focal = cam.focal

    # the ground -------------------------------------------------------------------------------
    def ground(self) -> None:
        """Sky, road, pavements and water, per pixel at half resolution (then scaled up)."""
        s, light, road = self.s, self.s.light, self.s.road
        full = s.cam
        cam = replace(full, width=full.width // 2, height=full.height // 2)
        ids = np.zeros((cam.height, cam.width), np.int32)
        rays = cam.rays()
        norm = np.linalg.norm(rays, axis=2)
        elev = rays[..., 2] / norm
        sky = _sky(light, np.maximum(elev, 0))
        below = elev < -1e-4
        t = np.where(below, -cam.height_m / np.where(below, rays[..., 2], -1), 0)
        gx = t * rays[..., 0]
        gy = cam.y_m + t * rays[..., 1]
        dist = t * norm
        tex = _texture(s.texture_seed)
        ti = ((gx * 24).astype(np.int64) % 256, (gy * 24).astype(np.int64) % 256)
        noise = tex[ti[1], ti[0]]
        dy = gy - road.y
        on_road = np.abs(dy) <= road.half
        kerb = (np.abs(dy) > road.half) & (np.abs(dy) <= road.half + 0.25)
        col = np.where(
            on_road[..., None], np.array(road.asphalt, np.float32), np.array(road.walk, np.float32)
        )
        col = col * (1 + 0.12 * noise[..., None])
        # pavement slabs
        walk = ~on_road & ~kerb
        seams = ((np.abs((gx % 0.6) - 0.3) > 0.28) | (np.abs((gy % 0.6) - 0.3) > 0.28)) & walk
        fade = np.clip(1 - dist / 40, 0, 1)
        col = np.where(seams[..., None], col * (1 - 0.25 * fade[..., None]), col)
        col = np.where(kerb[..., None], np.float32(190) + 10 * noise[..., None], col)
        # lane lines: solid edges, dashed between lanes, a zebra crossing
        mark = np.zeros_like(on_road)
        for k in range(1, road.lanes):
            b = -road.half + k * road.lane_w
            mark |= (np.abs(dy - b) < 0.07) & ((gx % 9.0) < 3.0)
        mark |= on_road & (np.abs(np.abs(dy) - (road.half - 0.3)) < 0.07)
        if road.zebra_x is not None:
            mark |= on_road & (np.abs(gx - road.zebra_x) < 2.0) & ((dy % 1.0) < 0.5)
        if road.kerb_line is not None:
            yl = np.abs(np.abs(dy) - (road.half - 0.12)) < 0.05
            col = np.where((yl & on_road)[..., None], np.array(road.kerb_line, np.float32), col)
        mfade = np.clip(1.2 - dist / 70, 0, 1)[..., None]
        col = np.where(mark[..., None], col * (1 - mfade) + np.array(road.line, np.float32) * mfade, col)
        # light: ambient + sun on a flat ground, street-lamp pools
        shade = light.ambient + light.sun_strength * max(0.0, light.sun[2])
        col = col * shade * np.array(light.tint, np.float32)
        for lx, ly in light.lamps:
            pool = np.exp(-((gx - lx) ** 2 + (gy - ly) ** 2) / (2 * 5.0**2))
            col = col + pool[..., None] * (np.array(light.lamp_color, np.float32) * 0.9)
        # water and wet sheen: the sky mirrored, rippled, darker where deep
        mirror = _sky(light, np.abs(elev)) * np.array(light.tint, np.float32)
        fresnel = (0.35 + 0.6 * (1 - np.abs(elev)) ** 4)[..., None]
        for k, p in enumerate(s.puddles):
            th = np.arctan2(gy - p.y, (gx - p.x) / p.stretch)
            d = np.hypot((gx - p.x) / p.stretch, gy - p.y)
            r = p.radius(th)
            if p.sheen:
                a = (np.clip(1 - d / r, 0, 1) ** 0.7 * 0.3)[..., None] * below[..., None]
                col = col * (1 - a) + mirror * a
                continue
            inside = below & (d < r)
            rim = below & (d >= r) & (d < r * 1.12 + 0.08)
            col = np.where(rim[..., None], col * 0.72, col)
            ripple = 1 + 0.07 * np.sin(gx * 9 + gy * 4 + k) * np.sin(gy * 7 - gx * 3)
            deep = np.array((40, 45, 45), np.float32) * shade
            water = (mirror * fresnel + deep * (1 - fresnel)) * ripple[..., None]
            for lx, ly in light.lamps:  # lamps glint in the water
                water = water + (np.exp(-((gx - lx) ** 2 + (gy - ly) ** 2) / 8.0) * 200)[..., None]
            col = np.where(inside[..., None], water, col)
            lid = self._new_id("water")
            ids[inside] = lid
            self.full_area[lid] = float(inside.sum()) * 4
            if self.full_area[lid] < 1:
                self.full_area[lid] = self._hull_area(p.outline())
        # the far distance fades into the haze of the horizon
        haze = (1 - np.exp(-dist / 180.0))[..., None]
        col = col * (1 - haze) + np.array(light.sky_horizon, np.float32) * np.array(light.tint) * haze
        img = np.where(below[..., None], col, sky * np.array(light.tint, np.float32)).astype(np.float32)
        self.img = cv2.resize(img, (full.width, full.height), interpolation=cv2.INTER_LINEAR)
        self.ids = cv2.resize(ids, (full.width, full.height), interpolation=cv2.INTER_NEAREST)

    def _new_id(self, cls: str) -> int:
        lid = len(self.classes) + 1
        self.classes[lid] = cls
        return lid

    def _hull_area(self, pts3: np.ndarray) -> float:
        poly = clip_near(pts3, self.s.cam)
        if len(poly) < 3:
            return 0.0
        px, _ = self.s.cam.project(poly)
        return float(cv2.contourArea(cv2.convexHull(px.astype(np.float32))))

    # shapes -----------------------------------------------------------------------------------
    def _fill(self, pts3: np.ndarray, color: np.ndarray, oid: int) -> None:
        poly = clip_near(pts3, self.s.cam)
        if len(poly) < 3:
            return
        px, _ = self.s.cam.project(poly)
        if np.abs(px).max() > 1e5:
            return
        ipx = np.round(px * 16).astype(np.int32)
        cv2.fillPoly(self.img, [ipx], color.tolist(), cv2.LINE_AA, shift=4)
        cv2.fillPoly(self.ids, [ipx], oid, cv2.LINE_8, shift=4)

    def _shade(self, color: Color, normal: np.ndarray, at: np.ndarray) -> np.ndarray:
        light = self.s.light
        n = normal / (np.linalg.norm(normal) + 1e-9)
        lit = light.ambient + light.sun_strength * max(0.0, float(n @ np.array(light.sun)))
        c = np.array(color, np.float32) * lit * np.array(light.tint, np.float32)
        for lx, ly in light.lamps:
            d2 = (at[0] - lx) ** 2 + (at[1] - ly) ** 2
            c = c + np.array(light.lamp_color, np.float32) * 0.8 * math.exp(-d2 / (2 * 6.0**2)) * (
                0.5 + 0.5 * max(0.0, float(n[2]))
            )
        return c

    def _prism(self, part: Part, oid: int) -> None:
        cam_c = self.s.cam.centre
        centre = part.pts.mean(0)
        faces = []
        for fi, idx in enumerate(FACES):
            quad = part.pts[list(idx)]
            n = _cross(quad[1] - quad[0], quad[3] - quad[0])
            if n @ (quad.mean(0) - centre) < 0:
                n = -n
            if n @ (cam_c - quad.mean(0)) <= 0:
                continue  # faces away from the camera
            faces.append((float(np.linalg.norm(quad.mean(0) - cam_c)), fi, quad, n))
        for _, fi, quad, n in sorted(faces, key=lambda f: -f[0]):
            if fi in part.glass:
                self._fill(quad, self._shade(part.color, n, quad.mean(0)), oid)
                glass = self._glass(n)
                self._fill(face_quad(quad, 0.06, 0.94, 0.08, 0.92), glass, oid)
            else:
                self._fill(quad, self._shade(part.color, n, quad.mean(0)), oid)
            for dfi, (u0, u1, v0, v1), color in part.decals:
                if dfi == fi:
                    sub = face_quad(quad, u0, u1, v0, v1)
                    c = np.array(color, np.float32) if part.emissive else self._shade(color, n, sub.mean(0))
                    self._fill(sub, c, oid)

    def _glass(self, normal: np.ndarray) -> np.ndarray:
        """Glass mirrors the sky above it, dark when it faces down the street."""
        light = self.s.light
        n = normal / (np.linalg.norm(normal) + 1e-9)
        sky = _sky(light, np.array([max(0.05, float(n[2]) + 0.2)]))[0] * np.array(light.tint, np.float32)
        return 0.35 * sky + np.array((35, 30, 28), np.float32) * (0.5 + light.ambient)

    def _sphere(self, part: Part, oid: int) -> None:
        c = part.pts[0]
        px, z = self.s.cam.project(c[None])
        if z[0] < 0.3:
            return
        r = self._focal * part.radius / z[0]
        if r < 0.5 or np.abs(px).max() > 1e5:
            return
        x, y = px[0]
        base = self._shade(part.color, np.array([0.0, 0.0, 1.0]), c) * 0.85
        cv2.circle(self.img, (round(x * 16), round(y * 16)), round(r * 16), base.tolist(), -1, cv2.LINE_AA, 4)
        cv2.circle(self.ids, (round(x), round(y)), max(1, round(r)), oid, -1)
        hi = np.minimum(base * 1.3 + 12, 255)
        cv2.circle(
            self.img,
            (round((x - r * 0.3) * 16), round((y - r * 0.35) * 16)),
            round(r * 0.45 * 16),
            hi.tolist(),
            -1,
            cv2.LINE_AA,
            4,
        )

    def thing(self, t: Thing) -> None:
        oid = self._new_id(t.cls) if t.cls else -1
        if t.cls:
            pts = np.concatenate([self._extent(p) for p in t.parts])
            self.full_area[oid] = self._hull_area_pts(pts)
        for part in t.parts:
            if part.kind == "prism":
                self._prism(part, oid)
            elif part.kind == "sphere":
                self._sphere(part, oid)
            else:  # a flat or a disc: one polygon
                n = _cross(part.pts[1] - part.pts[0], part.pts[2] - part.pts[0])
                if n @ (self.s.cam.centre - part.pts.mean(0)) < 0:
                    n = -n
                if part.kind == "disc" and n @ (self.s.cam.centre - part.pts.mean(0)) <= 0:
                    continue
                self._fill(part.pts, self._shade(part.color, n, part.pts.mean(0)), oid)
        if self.s.light.headlights:
            for p, color in t.lights:
                px, z = self.s.cam.project(p[None])
                if z[0] > 0.5:
                    self.glows.append(
                        (float(px[0, 0]), float(px[0, 1]), min(12.0, self._focal * 0.12 / z[0]), color)
                    )

    def _extent(self, part: Part) -> np.ndarray:
        if part.kind != "sphere":
            return part.pts
        c, r = part.pts[0], part.radius
        return c + np.array([[dx, dy, dz] for dx in (-r, r) for dy in (-r, r) for dz in (-r, r)])

    def _hull_area_pts(self, pts: np.ndarray) -> float:
        _, z = self.s.cam.project(pts)
        front = pts[z > 0.3]
        if len(front) < 3:
            return 0.0
        px, _ = self.s.cam.project(front)
        return float(cv2.contourArea(cv2.convexHull(px.astype(np.float32))))

    def shadow(self, t: Thing) -> None:
        light = self.s.light
        if light.shadows <= 0 or not t.casts_shadow:
            return
        sun = np.array(light.sun)
        pts = np.concatenate([self._extent(p) for p in t.parts])
        flat = pts - pts[:, 2:3] / max(sun[2], 0.15) * sun
        flat[:, 2] = 0.0
        flat = np.concatenate([flat, pts[pts[:, 2] < 0.05]]) if (pts[:, 2] < 0.05).any() else flat
        _, z = self.s.cam.project(flat)
        flat = flat[z > 0.3]
        if len(flat) < 3:
            return
        px, _ = self.s.cam.project(flat)
        hull = cv2.convexHull(np.round(px * 16).astype(np.int32))
        mask = np.zeros(self.ids.shape, np.uint8)
        cv2.fillPoly(mask, [hull], 255, cv2.LINE_AA, shift=4)
        a = (mask.astype(np.float32) / 255 * light.shadows)[..., None]
        self.img *= 1 - a

    # the whole frame --------------------------------------------------------------------------
    def draw(self) -> tuple[np.ndarray, list[Label]]:
        s = self.s
        self.ground()
        c = s.cam.centre
        for b in sorted(s.buildings, key=lambda t: -math.hypot(t.x - c[0], t.y - c[1])):
            self.thing(b)
        for t in s.things:
            self.shadow(t)
        for t in sorted(s.things, key=lambda t: -math.hypot(t.x - c[0], t.y - c[1])):
            self.thing(t)
        img, ids = self.img, self.ids
        maps = s.cam.distortion_maps()
        if maps is not None:
            img = cv2.remap(img, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            ids = cv2.remap(ids.astype(np.float32), maps[0], maps[1], cv2.INTER_NEAREST).astype(np.int32)
        img = postprocess(img, s, self.glows)
        return img, self._labels(ids)

    def _labels(self, ids: np.ndarray) -> list[Label]:
        out = []
        for lid, cls in self.classes.items():
            mask = (ids == lid).astype(np.uint8)
            n = int(mask.sum())
            if n < 24:
                continue
            x, y, bw, bh = cv2.boundingRect(mask)
            if bw < 5 or bh < 4:
                continue
            full = max(self.full_area.get(lid, n), 1.0)
            if n / full < 0.3 and cls != "water":  # mostly hidden: not a fair thing to ask for
                continue
            if cls == "water" and n < 60:
                continue
            out.append(Label(cls, np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], np.float64)))
        return out


def postprocess(img: np.ndarray, s: Scene3, glows: Sequence[tuple[float, float, float, Color]]) -> np.ndarray:
    """Lamps and headlights glow, rain, glare, IR, blur, noise and compression: a camera's output."""
    rng = np.random.default_rng(s.post_seed)
    h, w = img.shape[:2]
    p = s.post
    if glows:
        glow = np.zeros_like(img)
        for x, y, r, color in glows:
            if -r < x < w + r and -r < y < h + r:
                cv2.circle(glow, (round(x), round(y)), max(1, round(r)), color, -1, cv2.LINE_AA)
        k = int(max(3, min(41, 2 * round(max(g[2] for g in glows)) + 1)))
        img = img + cv2.GaussianBlur(glow, (k | 1, k | 1), 0) * 0.9 + glow * 0.6
    if p.get("rain", 0) > 0:
        streaks = np.zeros((h, w), np.float32)
        angle = rng.uniform(-0.3, 0.3)
        for _ in range(int(p["rain"] * 600)):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            ln = rng.uniform(6, 22)
            cv2.line(streaks, (int(x), int(y)), (int(x + ln * angle), int(y + ln)), 1.0, 1, cv2.LINE_AA)
        img = img * 0.92 + cv2.GaussianBlur(streaks, (3, 3), 0)[..., None] * rng.uniform(40, 110)
    if p.get("glare", 0) > 0:
        gx, gy = rng.uniform(0, w), rng.uniform(-0.2 * h, 0.5 * h)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d = np.hypot(xx - gx, yy - gy) / w
        img = img + (np.exp(-d * rng.uniform(3, 8)) * 255 * p["glare"])[..., None]
    if s.light.kind == "ir":
        grey = img @ np.array([0.2, 0.45, 0.35], np.float32)  # IR: foliage and paint look alike
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        spot = 1.3 - 0.8 * (np.hypot(xx - w / 2, yy - h * 0.6) / w)  # the camera's own illuminator
        grey = grey * spot * rng.uniform(1.4, 2.2)
        img = np.repeat(grey[..., None], 3, axis=2)
    if p.get("gamma", 1.0) != 1.0:
        img = 255 * (np.clip(img, 0, 255) / 255) ** p["gamma"]
    blur = int(p.get("blur", 0))
    if blur:
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (2 * blur + 1, 2 * blur + 1), 0)
        else:  # motion blur along a random direction
            k = np.zeros((2 * blur + 1, 2 * blur + 1), np.float32)
            a = rng.uniform(0, math.pi)
            c = blur
            cv2.line(
                k,
                (round(c - c * math.cos(a)), round(c - c * math.sin(a))),
                (round(c + c * math.cos(a)), round(c + c * math.sin(a))),
                1.0,
                1,
            )
            img = cv2.filter2D(img, -1, k / max(k.sum(), 1))
    sigma = p.get("noise", 2.0)
    img = (
        img
        + rng.normal(0, sigma, (h, w, 1)).astype(np.float32)
        + rng.normal(0, sigma / 3, (h, w, 3)).astype(np.float32)
    )
    out = np.clip(img, 0, 255).astype(np.uint8)
    down = p.get("downscale", 1.0)
    if down > 1.0:
        small = cv2.resize(out, (int(w / down), int(h / down)), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    q = int(p.get("jpeg", 90))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else out


# ----------------------------------------------------------------------------------------- sampling


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
    rot = _rot(h)

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
    rot = _rot(heading)
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


@dataclass(frozen=True)
class View:
    """Where the camera is, for reporting metrics per view bucket."""

    height_m: float
    pitch_deg: float
    light: str

    @property
    def bucket(self) -> str:
        h = "low<5m" if self.height_m < 5 else ("mid5-9m" if self.height_m < 9 else "high>=9m")
        p = "flat<10" if self.pitch_deg < 10 else ("10-25" if self.pitch_deg < 25 else "steep>=25")
        return f"{h}/{p}"

    @property
    def elevated(self) -> bool:
        return self.height_m >= 5 and self.pitch_deg >= 10


def random_camera(rng: Rng, dom: Domain, width: int, height: int, road: Road) -> Camera:
    """A camera that looks at the road: across it, along it or anything between."""
    hgt = rng.uniform(*dom.height_m)
    pitch = rng.uniform(*dom.pitch_deg)
    if hgt > 4 and pitch < 5:
        pitch = rng.uniform(5, 25)  # a pole camera looking at the horizon sees only sky and the far distance
    return Camera(
        width,
        height,
        hgt,
        pitch,
        yaw_deg=(90 * math.copysign(1, road.y) + rng.uniform(-88, 88))
        if abs(road.y) > road.half
        else rng.uniform(0, 360),
        roll_deg=rng.uniform(-dom.roll_deg, dom.roll_deg),
        fov_deg=rng.uniform(*dom.fov_deg),
        k1=rng.uniform(*dom.k1),
        y_m=0.0,
    )


def random_road(rng: Rng, dom: Domain) -> Road:
    lanes = int(rng.choice([2, 2, 3, 4, 4, 6]))
    lane_w = rng.uniform(3.0, 3.75)
    half = lanes * lane_w / 2
    walk_w = rng.uniform(2.5, 7.0)
    # the pole stands on a pavement (most often) or the camera hangs over the road
    side = 1 if rng.random() < 0.5 else -1
    y = side * (half + rng.uniform(0.3, walk_w)) if rng.random() < 0.8 else rng.uniform(-half, half)
    a = rng.uniform(60, 110)
    walk = (a + rng.uniform(-15, 25), a + rng.uniform(-10, 20), a + rng.uniform(-10, 20))
    return Road(
        y=-y,
        lanes=lanes,
        lane_w=lane_w,
        walk_w=walk_w,
        asphalt=(a * 0.8, a * 0.8, a * 0.82),
        walk=tuple(min(230, v * 1.6) for v in walk),
        zebra_x=rng.uniform(8, 40) if rng.random() < 0.35 else None,
        kerb_line=(40, 200, 230) if rng.random() < 0.3 else None,
    )


class _Placer:
    """Finds free, visible ground spots by casting rays through random pixels."""

    def __init__(self, rng: Rng, cam: Camera, road: Road) -> None:
        self.rng, self.cam, self.road = rng, cam, road
        self.taken: list[tuple[float, float, float]] = []
        hor = self._horizon()
        self.v0 = min(cam.height - 8, max(4, hor + 6))

    def _horizon(self) -> float:
        # the row where rays turn horizontal, at the frame's centre column
        for v in range(0, self.cam.height, 4):
            if self.cam.ground_point(self.cam.width / 2, v) is not None:
                return v
        return self.cam.height

    def spot(self, where: str, radius: float, max_dist: float = 70.0) -> tuple[float, float] | None:
        """A free point on `where` ("road", "kerb", "walk", "any") visible in the frame."""
        for _ in range(25):
            u = self.rng.uniform(0, self.cam.width)
            v = self.rng.uniform(self.v0, self.cam.height + 20)
            g = self.cam.ground_point(u, v)
            if g is None or math.hypot(g[0], g[1] - self.cam.y_m) > max_dist:
                continue
            dy = g[1] - self.road.y
            region = (
                "road"
                if abs(dy) < self.road.half
                else ("walk" if abs(dy) < self.road.half + self.road.walk_w else "off")
            )
            if where == "kerb" and not (self.road.half - 3 < abs(dy) < self.road.half + 2.5):
                continue
            if where in ("road", "walk") and region != where:
                continue
            if region == "off" and where != "any":
                continue
            if any(math.hypot(g[0] - x, g[1] - y) < radius + r for x, y, r in self.taken):
                continue
            self.taken.append((float(g[0]), float(g[1]), radius))
            return float(g[0]), float(g[1])
        return None


def random_scene(rng: Rng, dom: Domain, width: int = 640, height: int = 360) -> tuple[Scene3, View]:
    """One random street scene from the domain, and its view for reporting."""
    road = random_road(rng, dom)
    cam = random_camera(rng, dom, width, height, road)
    light = lighting(rng, dom)
    place = _Placer(rng, cam, road)
    things: list[Thing] = []
    empty = rng.random() < dom.negative_share
    along = 0.0 if rng.random() < 0.5 else math.pi
    if not empty:
        for _ in range(int(rng.integers(0, 11))):
            moving = rng.random() < 0.5
            spot = place.spot("road" if moving else "kerb", 2.6)
            if spot is None:
                continue
            kind = str(rng.choice(VEHICLE_KINDS, p=[0.32, 0.14, 0.22, 0.14, 0.1, 0.08]))
            if moving:
                heading = (along if rng.random() < 0.5 else along + math.pi) + rng.normal(0, 0.05)
            elif rng.random() < 0.7:
                heading = along + (math.pi if rng.random() < 0.5 else 0) + rng.normal(0, 0.15)
            else:
                heading = rng.uniform(0, 2 * math.pi)  # parked askew, on the pavement
            things.append(vehicle(rng, dom, kind, *spot, heading))
        for _ in range(int(rng.integers(0, 4))):
            spot = place.spot("walk", 1.8, 45)
            if spot is None:
                continue
            n = int(rng.integers(1, 5))
            facing = math.atan2(road.y - spot[1], 0.0) + rng.normal(0, 0.2)
            lid_open = rng.random() < 0.45
            for k in range(n):
                off = (k - (n - 1) / 2) * 0.75
                bx, by = (
                    spot[0] + off * math.cos(facing + math.pi / 2),
                    spot[1] + off * math.sin(facing + math.pi / 2),
                )
                things.append(wheelie_bin(rng, dom, bx, by, facing, lid_open and rng.random() < 0.7))
            if rng.random() < 0.55:  # overflowing: bags around the bins
                things.append(
                    garbage_heap(
                        rng,
                        spot[0] + rng.uniform(-0.5, 0.5) * n,
                        spot[1] + rng.uniform(-0.9, 0.9),
                        rng.uniform(0.5, 1.4) + 0.3 * n,
                        rng.uniform(0.4, 1.0),
                    )
                )
        for _ in range(int(rng.integers(0, 3))):  # illegal dumping away from bins
            spot = place.spot("walk" if rng.random() < 0.7 else "any", 1.5, 40)
            if spot is not None:
                things.append(garbage_heap(rng, *spot, rng.uniform(0.4, 1.5), rng.uniform(0.4, 1.2)))
    puddles = []
    for _ in range(int(rng.integers(0, 4))):
        spot = place.spot("road" if rng.random() < 0.6 else "walk", 0.5, 50)
        if spot is None:
            continue
        harm = tuple(
            (float(rng.uniform(0, 0.22 / k)), float(rng.uniform(0, 2 * math.pi))) for k in range(2, 6)
        )
        sheen = empty or rng.random() < 0.3
        puddles.append(
            Puddle3(*spot, float(rng.uniform(0.6, 4.0)), harm, float(rng.uniform(0.8, 2.2)), sheen)
        )
    # people, two-wheelers, trees, poles: never labelled
    for _ in range(int(rng.integers(0, 9))):
        spot = place.spot("walk" if rng.random() < 0.7 else "any", 0.4, 40)
        if spot is not None:
            things.append(person(rng, *spot))
    if rng.random() < 0.15:  # a person right in front of the lens: faces and torsos are not bins
        g = cam.ground_point(width * rng.uniform(0.2, 0.8), height * rng.uniform(0.9, 1.1))
        if g is not None and math.hypot(g[0], g[1]) < 12:
            things.append(person(rng, float(g[0]), float(g[1])))
    for _ in range(int(rng.integers(0, 5))):
        spot = place.spot("road", 1.2)
        if spot is not None:
            things.append(two_wheeler(rng, dom, *spot, along + rng.normal(0, 0.3)))
    edge = road.half + road.walk_w * rng.uniform(0.6, 0.9)
    for side in (1, -1):
        for _ in range(int(rng.integers(0, 4))):
            x = rng.uniform(3, 60)
            if rng.random() < 0.5:
                things.append(tree(rng, x, road.y + side * edge))
            else:
                things.append(pole(rng, x, road.y + side * (road.half + 0.4), road.y))
    buildings = []
    for side in (1, -1):
        if rng.random() < 0.85:
            x = rng.uniform(-60, -20)
            while x < 200:
                ln = rng.uniform(10, 45)
                if rng.random() < 0.85:
                    buildings.append(
                        building(rng, x, x + ln, road.y + side * (road.half + road.walk_w + 0.3), side)
                    )
                x += ln + rng.uniform(0, 8)
    if light.kind in ("night", "dusk"):
        lamps = tuple(
            (float(rng.uniform(-10, 80)), road.y + s * road.half) for s in (1, -1) for _ in range(3)
        )
        light = Lighting(
            **{**light.__dict__, "lamps": lamps if light.kind == "night" or rng.random() < 0.5 else ()}
        )
    post = {
        "blur": float(rng.choice([0, 0, 0, 1, 1, 2])),
        "noise": float(rng.uniform(1, 5) * (2.2 if light.kind in ("night", "ir") else 1)),
        "jpeg": float(rng.uniform(25, 95)),
        "downscale": float(rng.choice([1.0, 1.0, 1.5, 2.0])),
        "rain": float(rng.uniform(0.5, 1.5)) if light.kind == "rain" else 0.0,
        "glare": float(rng.uniform(0.2, 0.6)) if rng.random() < 0.1 else 0.0,
        "gamma": float(rng.uniform(0.8, 1.25)),
    }
    scene = Scene3(
        cam,
        road,
        light,
        buildings,
        things,
        puddles,
        int(rng.integers(1 << 30)),
        int(rng.integers(1 << 30)),
        post,
    )
    return scene, View(cam.height_m, cam.pitch_deg, light.kind)


def texture_negative(rng: Rng, width: int, height: int) -> np.ndarray:
    """A frame of random texture and shapes: nothing to find in it."""
    img = np.zeros((height, width, 3), np.float32)
    base = _texture(int(rng.integers(1 << 30)), 256)
    img += cv2.resize(base, (width, height))[..., None] * rng.uniform(20, 60) + rng.uniform(40, 200, 3)
    for _ in range(int(rng.integers(5, 40))):
        c = rng.uniform(0, 255, 3).tolist()
        p = rng.uniform(0, 1, 2) * (width, height)
        if rng.random() < 0.5:
            cv2.circle(img, (int(p[0]), int(p[1])), int(rng.uniform(3, 60)), c, -1, cv2.LINE_AA)
        else:
            q = p + rng.normal(0, 80, 2)
            cv2.line(
                img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), c, int(rng.integers(1, 12)), cv2.LINE_AA
            )
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 3))
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def sample(
    dom: Domain, seed: int, index: int, width: int = 640, height: int = 360
) -> tuple[np.ndarray, list[Label], View]:
    """One labelled frame, fully determined by (domain, seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, sum(dom.name.encode())]))
    if rng.random() < dom.negative_share / 2:
        return texture_negative(rng, width, height), [], View(0.0, 0.0, "texture")
    scene, view = random_scene(rng, dom, width, height)
    img, labels = Renderer(scene).draw()
    return img, labels, view


def render(scene: Scene3) -> tuple[np.ndarray, list[Label]]:
    """Pixels and labels of one scene (for clips: animate the scene, render each frame)."""
    return Renderer(scene).draw()


def _write_part(
    out: str,
    split: str,
    indices: Sequence[int],
    dom_name: str,
    seed: int,
    flat_share: float,
    width: int,
    height: int,
) -> list[dict[str, object]]:
    from pathlib import Path

    from detectors.synth import synth_sample, yolo_line

    cv2.setNumThreads(1)
    dom = DOMAINS[dom_name]
    root = Path(out)
    meta = []
    for i in indices:
        pick = np.random.default_rng(np.random.SeedSequence([seed, i, 99])).random()
        if pick < flat_share:  # the flat side view of the demo street keeps working
            img, labels = synth_sample(seed + 7919, i, width, height)
            view = View(2.5, 3.0, "flat-demo")
        else:
            img, labels, view = sample(dom, seed, i, width, height)
        name = f"{split}_{i:06d}"
        cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        lines = [yolo_line(lab, width, height) for lab in labels]
        (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        meta.append(
            {
                "image": name,
                "height_m": round(view.height_m, 2),
                "pitch_deg": round(view.pitch_deg, 1),
                "light": view.light,
                "bucket": view.bucket,
                "labels": len(labels),
            }
        )
    return meta


DOMAINS = {d.name: d for d in (TRAIN, EVAL)}


def write_dataset(
    out: object,
    n_train: int,
    n_val: int,
    seed: int = 0,
    domain: str = "train",
    flat_share: float = 0.15,
    width: int = 640,
    height: int = 360,
    jobs: int = 1,
) -> object:
    """An ultralytics dataset (images/, labels/, data.yaml, views.jsonl) of `domain` scenes."""
    import json
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from detectors.synth import CLASSES

    root = Path(str(out))
    tasks = []
    for split, idx in (("train", range(n_train)), ("val", range(n_train, n_train + n_val))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        step = max(1, math.ceil(len(idx) / max(1, jobs * 4)))
        tasks += [(split, list(idx[k : k + step])) for k in range(0, len(idx), step)]
    args = [(str(root), sp, ix, domain, seed, flat_share, width, height) for sp, ix in tasks]
    if jobs <= 1:
        metas = [_write_part(*a) for a in args]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            metas = list(pool.map(_write_part, *zip(*args, strict=True)))
    with (root / "views.jsonl").open("w") as fh:
        for m in metas:
            for row in m:
                fh.write(json.dumps(row) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    data = root / "data.yaml"
    data.write_text(
        f"# street scenes from any camera ({domain} domain): seed {seed}, {n_train} train + {n_val} val, "
        f"{width}x{height}, {flat_share:.0%} flat demo-street views\n"
        f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    return data
