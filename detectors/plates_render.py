"""Rendered Chinese licence plates: the plate itself (blue, yellow, green new-energy, with a CJK font
from Debian's fonts-noto-cjk) and the plate in perspective on a rendered vehicle, seen from a pole
camera at a distance that gives it a chosen width in pixels, by day or at dusk.

The layout follows GA 36: a blue or yellow plate is 440 x 140 mm with 7 characters 45 x 90 mm, a
separator dot after the second; a green new-energy plate is 480 x 140 mm with 8 narrower ones.
`plate_sample(seed)` is a pure function of its seed: the evaluation set is a range of seeds no test
tunes on (`EVAL_SEEDS`), the tests use a few others.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detectors.render3d import FACES, Camera, Renderer, Road, Scene3, face_quad
from detectors.street3d import EVAL, lighting, vehicle
from gridgate.plates import AUTHORITY, NEV_LETTERS, PLATE_COLOURS, PROVINCES, SERIAL, PlateColour

Rng = np.random.Generator

FONT_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc",
)
LIGHTS = ("day", "dusk")
EVAL_SEEDS = range(100_000, 100_240)  # the benchmark's set: no test and no threshold is tuned on these
PLATE_W_MM = {"blue": 440, "yellow": 440, "green": 480}
PLATE_H_MM = 140
BLUE_BG = (160, 70, 0)  # BGR
YELLOW_BG = (0, 190, 245)


def font_path() -> Path:
    """The first CJK font present, or an error that says which Debian package brings one."""
    for p in FONT_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise FileNotFoundError(
        f"no CJK font at {', '.join(FONT_PATHS)}: install Debian's fonts-noto-cjk (make debian-packages)"
    )


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path()), size)


def random_plate(rng: Rng, colour: PlateColour) -> str:
    """A well-formed plate of that colour (7 characters, or 8 for green new-energy)."""
    head = str(rng.choice(list(PROVINCES))) + str(rng.choice(list(AUTHORITY)))
    if colour != "green":
        return head + "".join(str(rng.choice(list(SERIAL))) for _ in range(5))
    digits = "".join(str(rng.integers(0, 10)) for _ in range(4))
    if rng.random() < 0.7:  # a small car: the energy letter first
        return head + str(rng.choice(list(NEV_LETTERS))) + str(rng.choice(list(SERIAL))) + digits
    return head + digits + str(rng.integers(0, 10)) + str(rng.choice(list(NEV_LETTERS)))


def _background(colour: PlateColour, w: int, h: int) -> np.ndarray:
    if colour == "blue":
        return np.full((h, w, 3), BLUE_BG, np.uint8)
    if colour == "yellow":
        return np.full((h, w, 3), YELLOW_BG, np.uint8)
    # new energy: white at the top fading to green at the bottom
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None] ** 1.4
    top, bottom = np.array([240, 250, 240], np.float32), np.array([90, 200, 60], np.float32)
    return np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8).copy()


def _glyph(ch: str, cell_w: int, cell_h: int) -> np.ndarray:
    """One character stretched to fill its cell, as plates' narrow tall lettering does (0-255 mask)."""
    font = _font(cell_h * 2)
    left, top, right, bottom = font.getbbox(ch)
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), ch, fill=255, font=font)
    return cv2.resize(np.asarray(img), (cell_w, cell_h), interpolation=cv2.INTER_AREA)


def plate_image(text: str, colour: PlateColour, px_per_mm: float = 1.0) -> np.ndarray:
    """The plate as a BGR image, 440 (480 green) x 140 mm at `px_per_mm`."""
    w, h = round(PLATE_W_MM[colour] * px_per_mm), round(PLATE_H_MM * px_per_mm)
    img = _background(colour, w, h)
    ink = (255, 255, 255) if colour == "blue" else (20, 20, 20)
    inset = round(5 * px_per_mm)
    cv2.rectangle(img, (inset, inset), (w - inset, h - inset), ink, max(1, round(3 * px_per_mm)))
    n = len(text)
    cell_w_mm = 45.0 if n == 7 else 43.0
    gap_mm, dot_mm = (12.0, 34.0) if n == 7 else (9.0, 30.0)
    x = (PLATE_W_MM[colour] - (n * cell_w_mm + (n - 2) * gap_mm + dot_mm)) / 2
    cell_w, cell_h = round(cell_w_mm * px_per_mm), round(90 * px_per_mm)
    y = round(25 * px_per_mm)
    for i, ch in enumerate(text):
        mask = _glyph(ch, cell_w, cell_h).astype(np.float32)[..., None] / 255.0
        x0 = round(x * px_per_mm)
        roi = img[y : y + cell_h, x0 : x0 + cell_w].astype(np.float32)
        img[y : y + cell_h, x0 : x0 + cell_w] = (roi * (1 - mask) + np.array(ink) * mask).astype(np.uint8)
        x += cell_w_mm
        if i == 1:  # the separator dot between the authority letter and the serial
            cx = round((x + dot_mm / 2) * px_per_mm)
            cv2.circle(img, (cx, h // 2), max(1, round(5 * px_per_mm)), ink, -1, cv2.LINE_AA)
            x += dot_mm
        elif i < n - 1:
            x += gap_mm
    return img


@dataclass(frozen=True)
class PlateSample:
    """A vehicle crop with its plate, and what the plate is."""

    seed: int
    text: str
    colour: PlateColour
    light: str
    plate_width_px: float  # the plate's width on the frame
    crop: np.ndarray  # the vehicle's box on the frame (BGR), what the edge reads plates from


def plate_sample(
    seed: int,
    colour: PlateColour | None = None,
    width_px: float | None = None,
    light: str | None = None,
    frame_size: tuple[int, int] = (960, 540),
) -> PlateSample:
    """A pole camera sees a vehicle nose- or tail-on with its plate `width_px` wide (drawn when None:
    40-220 px, i.e. 2.5 to 20 m away), colour and light drawn from the seed when not given."""
    rng = np.random.default_rng(seed)
    colour = colour or PLATE_COLOURS[int(rng.integers(0, 3))]
    light = light or LIGHTS[int(rng.integers(0, 2))]
    text = random_plate(rng, colour)
    width_px = float(width_px if width_px is not None else rng.uniform(40, 220))
    w, h = frame_size
    fov = rng.uniform(45, 70)
    focal = (w / 2) / math.tan(math.radians(fov) / 2)
    dist = focal * PLATE_W_MM[colour] / 1000 / width_px  # along the view axis, to the plate
    # a pole camera, but never steeper than about 30 degrees down onto the plate
    cam_h = 0.5 + min(rng.uniform(2.0, 5.5), dist * rng.uniform(0.25, 0.5))
    ground = math.sqrt(dist * dist - (cam_h - 0.5) ** 2)
    lateral = rng.uniform(-0.25, 0.25) * ground * math.tan(math.radians(fov) / 2)
    yaw = math.degrees(math.atan2(lateral, ground)) + rng.uniform(-6, 6)
    pitch = math.degrees(math.atan2(cam_h - 0.6, ground)) + rng.uniform(-3, 3)
    cam = Camera(w, h, cam_h, pitch, yaw, rng.uniform(-2, 2), fov, k1=rng.uniform(0.0, 0.08))
    kind = (
        str(rng.choice(["van", "light_truck", "bus"]))
        if colour == "yellow"
        else str(rng.choice(["saloon", "hatchback", "suv"]))
    )
    tail_on = rng.random() < 0.5
    heading = (0.0 if tail_on else math.pi) + rng.normal(0, 0.12)
    car = vehicle(rng, EVAL, kind, 0.0, 0.0, heading)
    body = car.parts[0].pts
    face_i = 2 if tail_on else 0
    face = body[list(FACES[face_i])]
    # move the car so that its plate face stands `ground` ahead of the camera, at `lateral`
    centre = face.mean(axis=0)
    shift = np.array([ground - centre[0], lateral - centre[1], 0.0])
    car = car.moved(car.x + shift[0], car.y + shift[1])
    face = face + shift
    face_w = float(np.linalg.norm(face[1] - face[0]))
    face_h = float(np.linalg.norm(face[3] - face[0]))
    pw, ph = PLATE_W_MM[colour] / 1000, PLATE_H_MM / 1000
    u0 = 0.5 - pw / 2 / face_w + rng.uniform(-0.05, 0.05)
    v0 = rng.uniform(0.12, 0.3) * 0.6 / face_h
    quad = face_quad(face, u0, u0 + pw / face_w, v0, v0 + ph / face_h)
    towards = cam.centre - quad.mean(axis=0)
    quad = quad + towards / np.linalg.norm(towards) * 0.01  # a hair in front of the body
    px, _ = cam.project(quad)
    if px[1][0] < px[0][0]:  # the face's u runs right to left as the camera sees it
        quad = quad[[1, 0, 3, 2]]
    road = Road(y=lateral, lanes=2, lane_w=3.5, walk_w=4.0, asphalt=(70, 70, 74), walk=(150, 158, 165))
    lit = lighting(rng, EVAL, light)
    post = {"noise": rng.uniform(1.5, 4.0), "jpeg": rng.uniform(70, 92), "blur": int(rng.random() < 0.25)}
    scene = Scene3(cam, road, lit, [], [car], [], texture_seed=seed, post_seed=seed, post=post)
    plate = plate_image(text, colour, 2.0)
    brightness = (lit.ambient + lit.sun_strength * 0.6) * rng.uniform(0.9, 1.15)
    renderer = Renderer(scene)
    frame, _ = renderer.draw(lambda img: _paint(img, plate, quad, cam, brightness, lit.tint))
    corners, depth = cam.project(np.concatenate([p.pts for p in car.parts]))
    corners = corners[depth > 0.3]
    x1, y1 = np.clip(corners.min(axis=0), 0, (w - 1, h - 1)).astype(int)
    x2, y2 = np.clip(corners.max(axis=0) + 1, 1, (w, h)).astype(int)
    px, _ = cam.project(quad)
    seen_w = float(np.linalg.norm(px[1] - px[0]))
    return PlateSample(seed, text, colour, light, seen_w, frame[y1:y2, x1:x2].copy())


def _paint(
    img: np.ndarray,
    plate: np.ndarray,
    quad: np.ndarray,
    cam: Camera,
    brightness: float,
    tint: tuple[float, float, float],
) -> None:
    """Warp the plate onto the float frame where its world quad projects, lit like the scene."""
    px, depth = cam.project(quad)
    if (depth <= 0.3).any():
        return
    ph, pw = plate.shape[:2]
    src = np.array([[0, ph], [pw, ph], [pw, 0], [0, 0]], np.float32)  # bottom-left, ... top-left
    m = cv2.getPerspectiveTransform(src, px.astype(np.float32))
    h, w = img.shape[:2]
    lit = plate.astype(np.float32) * np.array(tint, np.float32) * min(1.2, brightness)
    warped = cv2.warpPerspective(lit, m, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.ones((ph, pw), np.float32), m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    img[:] = img * (1 - mask) + warped * mask
