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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from detectors.render3d import Camera, Lighting, Puddle3, Renderer, Road, Scene3, Thing, noise_texture
from detectors.street3d import (
    EVAL,
    TRAIN,
    VEHICLE_KINDS,
    Domain,
    building,
    garbage_heap,
    lighting,
    person,
    pole,
    tree,
    two_wheeler,
    vehicle,
    wheelie_bin,
)
from detectors.synth import Label

Rng = np.random.Generator


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


def random_scene(
    rng: Rng, dom: Domain, width: int = 640, height: int = 360, empty: bool | None = None
) -> tuple[Scene3, View]:
    """One random street scene from the domain, and its view for reporting."""
    road = random_road(rng, dom)
    cam = random_camera(rng, dom, width, height, road)
    light = lighting(rng, dom)
    place = _Placer(rng, cam, road)
    things: list[Thing] = []
    draw = rng.random()
    empty = draw < dom.negative_share if empty is None else empty
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
    base = noise_texture(int(rng.integers(1 << 30)), 256)
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
    dom: Domain, seed: int, index: int, width: int = 640, height: int = 360, negative: bool = False
) -> tuple[np.ndarray, list[Label], View]:
    """One labelled frame, fully determined by (domain, seed, index, negative). A `negative` frame
    holds nothing to find: an empty street (people, two-wheelers, wet sheen, buildings) or a texture."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, sum(dom.name.encode())]))
    if rng.random() < (0.25 if negative else dom.negative_share / 2):
        return texture_negative(rng, width, height), [], View(0.0, 0.0, "texture")
    scene, view = random_scene(rng, dom, width, height, empty=True if negative else None)
    img, labels = Renderer(scene).draw()
    return img, labels, view


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
