"""The demo clip: deterministic frames and zones that match what happens in them."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.clip import DEMO_CAMERA_YAML, DEMO_ZONES, TIMELINE, DemoClip


def _inside(pt: tuple[float, float], zone: dict) -> bool:
    xs = [p[0] for p in zone["points"]]
    ys = [p[1] for p in zone["points"]]
    return min(xs) <= pt[0] <= max(xs) and min(ys) <= pt[1] <= max(ys)


@pytest.fixture(scope="module")
def clip() -> DemoClip:
    return DemoClip(640, 360)


def test_frames_are_deterministic(clip: DemoClip) -> None:
    a, _ = clip.frame(40.0)
    b, _ = DemoClip(640, 360).frame(40.0)
    assert a.shape == (360, 640, 3) and np.array_equal(a, b)


def test_parked_car_stands_in_the_no_parking_zone(clip: DemoClip) -> None:
    zone = next(z for z in DEMO_ZONES if z["type"] == "no_parking")
    for t in (TIMELINE.park_arrive[1] + 1, 60.0, TIMELINE.park_leave[0] - 1):
        cars = [lab for lab in clip.frame(t)[1] if lab.cls == "car"]
        assert len(cars) == 1
        x0, _, x1, y1 = cars[0].box()
        assert _inside(((x0 + x1) / 2 / 640, y1 / 360), zone)
    assert not [lab for lab in clip.frame(TIMELINE.park_leave[1] + 1)[1] if lab.cls == "car"]


def test_puddle_grows_inside_the_ponding_zone(clip: DemoClip) -> None:
    zone = next(z for z in DEMO_ZONES if z["type"] == "ponding")
    assert not [lab for lab in clip.frame(TIMELINE.puddle_grow[0] - 1)[1] if lab.cls == "water"]
    sizes = []
    for t in (40.0, 55.0, TIMELINE.puddle_grow[1]):
        (water,) = [lab for lab in clip.frame(t)[1] if lab.cls == "water"]
        x0, y0, x1, y1 = water.box()
        assert _inside(((x0 + x1) / 2 / 640, (y0 + y1) / 2 / 360), zone)
        sizes.append((x1 - x0) * (y1 - y0))
    assert sizes == sorted(sizes)


def test_bin_overflows_inside_the_bin_zone(clip: DemoClip) -> None:
    zone = next(z for z in DEMO_ZONES if z["type"] == "bin_overflow")
    assert not [lab for lab in clip.frame(TIMELINE.bin_fill[0] - 1)[1] if lab.cls == "garbage"]
    labels = clip.frame(TIMELINE.bin_fill[1] + 1)[1]
    for cls in ("bin", "garbage"):
        (lab,) = [x for x in labels if x.cls == cls]
        x0, y0, x1, y1 = lab.box()
        assert _inside(((x0 + x1) / 2 / 640, (y0 + y1) / 2 / 360), zone)


def test_camera_yaml_carries_the_same_zones() -> None:
    import yaml

    cams = yaml.safe_load(DEMO_CAMERA_YAML)["cameras"]
    zones = cams[0]["zones"]
    assert [(z["name"], z["type"], z["points"]) for z in zones] == [
        (z["name"], z["type"], z["points"]) for z in DEMO_ZONES
    ]
