"""A pinhole camera over a ground plane, and a renderer that draws street things in 3-D.

`Camera` projects world points (metres, Z up) to pixels and casts each pixel's ray onto the ground;
`Renderer` draws the sky, the road and water per pixel, then convex things (prisms, spheres, flat
quads) far to near, and finally the camera's own faults: glows, rain, glare, infrared, blur, noise and
compression. Every labelled thing is drawn into an id buffer alongside the pixels, so its label box is
what is visible of it after occlusion, truncation and lens distortion.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from detectors.synth import Label

Color = tuple[float, float, float]


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

    def moved(self, x: float, y: float) -> Thing:
        """The same thing standing at (x, y)."""
        shift = np.array([x - self.x, y - self.y, 0.0])
        parts = [replace(p, pts=p.pts + shift) for p in self.parts]
        return Thing(self.cls, x, y, parts, [(pt + shift, c) for pt, c in self.lights], self.casts_shadow)


def rot_z(heading: float) -> np.ndarray:
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
    return local @ rot_z(heading).T + np.array([x, y, 0.0])


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


def noise_texture(seed: int, size: int = 256) -> np.ndarray:
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
        tex = noise_texture(s.texture_seed)
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
    def draw(self, overlay: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, list[Label]]:
        """The frame and its labels; `overlay` paints on the lit scene (e.g. a licence plate) before the
        lens and the camera's own faults act on it."""
        s = self.s
        self.ground()
        c = s.cam.centre
        for b in sorted(s.buildings, key=lambda t: -math.hypot(t.x - c[0], t.y - c[1])):
            self.thing(b)
        for t in s.things:
            self.shadow(t)
        for t in sorted(s.things, key=lambda t: -math.hypot(t.x - c[0], t.y - c[1])):
            self.thing(t)
        if overlay is not None:
            overlay(self.img)
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


def render(scene: Scene3) -> tuple[np.ndarray, list[Label]]:
    """Pixels and labels of one scene (for clips: animate the scene, render each frame)."""
    return Renderer(scene).draw()
