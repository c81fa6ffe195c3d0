"""The any-camera renderer: geometry, labels from what is visible, two separate distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.clip3d import POLE_ZONES, PoleClip
from detectors.render3d import Camera, Renderer, Scene3, render
from detectors.scene3d import View, random_road, sample
from detectors.street3d import EVAL, TRAIN, lighting, vehicle, wheelie_bin
from detectors.synth import CLASSES


def test_a_point_straight_ahead_lands_in_the_centre_and_the_ground_meets_its_ray() -> None:
    cam = Camera(640, 360, height_m=6.0, pitch_deg=20.0, yaw_deg=30.0, roll_deg=0.0, fov_deg=60.0)
    f, _, _ = cam.axes()
    px, z = cam.project((cam.centre + 10 * f)[None])
    assert np.allclose(px[0], (320, 180), atol=1e-6) and math.isclose(z[0], 10)
    g = cam.ground_point(400, 300)
    assert g is not None and abs(g[2]) < 1e-9
    back, _ = cam.project(g[None])
    assert np.allclose(back[0], (400, 300), atol=1e-6)
    level = Camera(640, 360, height_m=6.0, pitch_deg=5.0, yaw_deg=0.0, roll_deg=0.0, fov_deg=60.0)
    assert level.ground_point(320, 0) is None  # above the horizon: no ground


@given(st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_labels_lie_in_the_frame_and_use_the_model_classes(index: int) -> None:
    img, labels, view = sample(TRAIN, 3, index)
    assert img.shape == (360, 640, 3) and img.dtype == np.uint8
    for lab in labels:
        x0, y0, x1, y1 = lab.box()
        assert lab.cls in CLASSES
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360
    assert view.light in ("day", "dusk", "night", "ir", "rain", "texture")


def test_the_same_seed_gives_the_same_pixels_and_another_domain_other_ones() -> None:
    a, la, _ = sample(TRAIN, 5, 17)
    b, lb, _ = sample(TRAIN, 5, 17)
    assert np.array_equal(a, b) and [x.box() for x in la] == [x.box() for x in lb]
    c, _, _ = sample(EVAL, 5, 17)
    assert not np.array_equal(a, c)
    assert not set(TRAIN.car_hues) & set(EVAL.car_hues)
    assert not set(TRAIN.bin_palette) & set(EVAL.bin_palette)


def _street(things: list, pitch: float = 20.0) -> Scene3:
    rng = np.random.default_rng(0)
    cam = Camera(640, 360, height_m=6.0, pitch_deg=pitch, yaw_deg=0.0, roll_deg=0.0, fov_deg=60.0)
    road = random_road(rng, TRAIN)
    return Scene3(cam, road, lighting(rng, TRAIN, "day"), [], things, [], post={"noise": 0.0, "jpeg": 95})


def test_a_car_hidden_behind_a_bus_is_not_labelled_and_a_visible_one_is() -> None:
    rng = np.random.default_rng(1)
    bus = vehicle(rng, TRAIN, "bus", 20.0, 0.0, math.pi / 2)  # broadside across the view
    hidden = vehicle(rng, TRAIN, "saloon", 30.0, 0.0, math.pi / 2)  # right behind it
    _, labels = render(_street([bus, hidden]))
    assert [lab.cls for lab in labels] == ["truck"]
    _, labels = render(_street([vehicle(rng, TRAIN, "saloon", 30.0, 0.0, math.pi / 2)]))
    assert [lab.cls for lab in labels] == ["car"]


def test_a_bin_box_is_what_is_drawn() -> None:
    rng = np.random.default_rng(2)
    scene = _street([wheelie_bin(rng, TRAIN, 12.0, 1.0, math.pi, lid_open=True)])
    r = Renderer(scene)
    _, labels = r.draw()
    assert [lab.cls for lab in labels] == ["bin"]
    x0, y0, x1, y1 = labels[0].box()
    assert 5 < x1 - x0 < 120 and 5 < y1 - y0 < 160


@pytest.mark.parametrize("k1", [0.0, 0.3])
def test_lens_distortion_keeps_the_frame_filled(k1: float) -> None:
    cam = Camera(320, 180, 5.0, 20.0, 0.0, 0.0, 80.0, k1=k1)
    maps = cam.distortion_maps()
    if k1 == 0:
        assert maps is None
        return
    assert maps is not None
    mx, my = maps
    assert mx.min() >= -1 and mx.max() <= 320 and my.min() >= -1 and my.max() <= 180


def test_views_fall_into_the_reported_buckets() -> None:
    assert View(7.5, 15.0, "dusk").bucket == "mid5-9m/10-25" and View(7.5, 15.0, "dusk").elevated
    assert not View(3.0, 30.0, "day").elevated


def test_pole_clip_zones_hold_their_objects() -> None:
    """The clip's story is where its zones are: the parked car's tyres in the no-parking zone, the
    puddle in the ponding zone, the garbage on the bins' region."""
    from detectors.zones import overlap_fraction, point_in_polygon

    clip = PoleClip()
    zones = {z["type"]: z["points"] for z in POLE_ZONES}
    _, labels = clip.frame(50.0)
    rel = {
        lab.cls: tuple(v / s for v, s in zip(lab.box(), (640, 360, 640, 360), strict=True)) for lab in labels
    }
    car = min((lab for lab in labels if lab.cls == "car"), key=lambda lab: -lab.box()[3])
    x0, _, x1, y1 = car.box()
    assert point_in_polygon(((x0 + x1) / 2 / 640, y1 / 360), zones["no_parking"])
    assert overlap_fraction(rel["water"], zones["ponding"]) > 0.5
    assert overlap_fraction(rel["garbage"], zones["bin_overflow"]) > 0.5
    _, later = clip.frame(95.0)
    assert not {"car", "water", "garbage"} & {lab.cls for lab in later}
