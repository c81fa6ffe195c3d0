"""Drawing what the detector saw: boxes with their captions, zones with their names."""

from __future__ import annotations

import numpy as np

from detectors.annotate import annotate, caption
from detectors.model import Detection
from detectors.zones import PondingZone


def test_boxes_captions_and_zones_are_drawn_on_a_copy() -> None:
    image = np.full((360, 640, 3), 128, np.uint8)
    car = Detection("vehicle", 0.87, (0.25, 0.25, 0.50, 0.75), "car", model="coco")
    zone = PondingZone(name="dip", points=[(0.6, 0.5), (0.9, 0.5), (0.9, 0.9), (0.6, 0.9)])
    drawn = annotate(image, [car], [zone], "cam-1", track_ids=[12])
    assert (image == 128).all()  # the frame itself is untouched
    changed = (drawn != image).any(axis=2)
    assert changed[90:270, 160].mean() > 0.9 and changed[90:270, 320].mean() > 0.9  # box sides
    assert changed[180:324, 384].mean() > 0.9  # the zone's left edge
    assert not changed[150:200, 200:280].any()  # inside the box: the picture as it was
    assert caption(car, 12) == "vehicle 0.87 #12 (coco)"
    assert caption(Detection("water", 0.5, (0, 0, 1, 1), "water")) == "water 0.50"
