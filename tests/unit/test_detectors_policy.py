"""Class map and per-label thresholds of the detector, without a model."""

from __future__ import annotations

from pathlib import Path

from detectors.model import Detection, LabelPolicy, backend_of


def test_class_map_covers_shipped_and_coco_names() -> None:
    p = LabelPolicy()
    assert [p.label(n) for n in ("car", "truck", "bus", "water", "bin", "garbage")] == [
        "vehicle", "vehicle", "vehicle", "water", "bin", "garbage",
    ]  # fmt: skip
    assert p.label("Car") == "vehicle"
    assert p.label("person") == "person"  # unknown classes keep their name


def test_override_and_ignore() -> None:
    p = LabelPolicy(class_map={"truck": "ignore", "puddle_big": "water"})
    assert p.label("truck") is None
    assert p.label("puddle_big") == "water"
    assert p.make("truck", 0.99, (0, 0, 0.5, 0.5)) is None


def test_min_score_and_min_area_per_label() -> None:
    p = LabelPolicy(min_score={"vehicle": 0.6}, min_area_ratio={"bin": 0.01})
    assert p.make("car", 0.59, (0, 0, 0.5, 0.5)) is None
    car = p.make("car", 0.61, (0.1, 0.2, 0.3, 0.4))
    assert isinstance(car, Detection) and car.label == "vehicle" and car.class_name == "car"
    assert p.make("bin", 0.9, (0, 0, 0.05, 0.1)) is None  # area 0.005 < 0.01
    assert p.make("bin", 0.9, (0, 0, 0.1, 0.2)) is not None
    assert p.lowest_score() <= 0.25


def test_detection_geometry() -> None:
    d = Detection("vehicle", 0.9, (0.2, 0.4, 0.6, 0.8), "car")
    assert abs(d.area_ratio - 0.16) < 1e-9
    assert d.bottom_centre == (0.4, 0.8)


def test_backend_from_path(tmp_path: Path) -> None:
    assert backend_of(Path("m.pt")) == "pytorch"
    assert backend_of(Path("m.onnx")) == "onnx"
    assert backend_of(Path("m_openvino_model")) == "openvino"
    (tmp_path / "x").mkdir()
    assert backend_of(tmp_path / "x") == "openvino"
