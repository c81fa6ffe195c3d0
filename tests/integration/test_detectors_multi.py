"""Several real ultralytics models on one rendered street frame, loaded from cameras.yaml as a user
writes it: class maps applied per model, the same object seen twice merged, other labels kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from detectors.clip import TIMELINE, DemoClip
from detectors.ensemble import ModelSet
from detectors.model import DEFAULT_WEIGHTS, Detection
from detectors.zones import box_iou
from edge.config import load_edge_config
from edge.scheduler import load_model_set

pytestmark = pytest.mark.integration
STREET_LABELS = {"vehicle", "water", "bin", "garbage"}


def coco_checkpoint(path: Path) -> Path:
    """An untrained COCO-shaped yolo26n (80 classes with COCO's names): what a user copies onto the box."""
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.utils import YAML

    from detectors.train import offline_env

    offline_env()
    model = YOLO("yolo26n.yaml")
    model.model.names = YAML.load(Path(ultralytics.__file__).parent / "cfg/datasets/coco.yaml")["names"]
    model.save(path)
    return path


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return DemoClip().frame(TIMELINE.bin_fill[1] + 5)[0]  # car parked, puddle, bin overflowing


def models_from(tmp_path: Path, models: list[dict[str, object]]) -> ModelSet:
    path = tmp_path / "cameras.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return load_model_set(load_edge_config(path))


def by_label(dets: list[Detection]) -> dict[str, list[Detection]]:
    out: dict[str, list[Detection]] = {}
    for d in dets:
        out.setdefault(d.label, []).append(d)
    return out


def test_two_models_split_by_class_map_and_merged(scene: np.ndarray, tmp_path: Path) -> None:
    vehicles = tmp_path / "vehicles.pt"
    shutil.copyfile(DEFAULT_WEIGHTS, vehicles)
    street = str(DEFAULT_WEIGHTS)
    only_vehicles = {"water": "ignore", "bin": "ignore", "garbage": "ignore"}
    [single] = models_from(tmp_path, [{"path": street}]).detect([scene])
    # one model for vehicles, one for the rest: each label comes from the model meant for it
    split = models_from(
        tmp_path,
        [
            {"name": "vehicles", "path": str(vehicles), "class_map": only_vehicles},
            {"name": "street", "path": street, "class_map": {"car": "ignore", "truck": "ignore"}},
        ],
    )
    [got] = split.detect([scene])
    assert set(by_label(single)) == STREET_LABELS
    assert {(d.label, d.model) for d in got} == {
        ("vehicle", "vehicles"),
        ("water", "street"),
        ("bin", "street"),
        ("garbage", "street"),
    }
    assert len(got) == len(single)
    # both models see everything: each object once after the merge, at the single model's box
    both = models_from(tmp_path, [{"name": "a", "path": str(vehicles)}, {"name": "b", "path": street}])
    [merged] = both.detect([scene])
    assert len(merged) == len(single)
    for d in single:
        assert any(m.label == d.label and box_iou(m.box, d.box) > 0.9 for m in merged), d
    assert split.versions["vehicles"].startswith("vehicles.pt@")


def test_coco_checkpoint_needs_only_config(scene: np.ndarray, tmp_path: Path) -> None:
    coco = str(coco_checkpoint(tmp_path / "yolo26n-coco.pt"))
    # untrained, it calls every box `person` at a tiny score: ask for all of them (score and area 0)
    anything = {
        "min_score": {"person": 0.0, "vehicle": 0.0},
        "min_area_ratio": {"person": 0.0, "vehicle": 0.0},
    }
    models = models_from(
        tmp_path,
        [
            {"name": "coco-keep", "path": coco, **anything},
            {"name": "coco-ignore", "path": coco, "unmapped": "ignore", **anything},
            {"name": "coco-mapped", "path": coco, "class_map": {"person": "vehicle"}, **anything},
            {"name": "street", "path": str(DEFAULT_WEIGHTS)},
        ],
    )
    [got] = models.detect([scene])
    found = {(d.model, d.label, d.class_name) for d in got}
    assert {(m, lab) for m, lab, _ in found if m.startswith("coco")} == {
        ("coco-keep", "person"),  # not in any map: kept under its own name
        ("coco-mapped", "vehicle"),  # `ignore`d by coco-ignore
    }
    assert {c for m, _, c in found if m == "coco-mapped"} == {"person"}
    # the street model's confident vehicle wins the merge over the coco boxes on the car
    street = by_label([d for d in got if d.model == "street"])
    assert set(street) == STREET_LABELS
    car = street["vehicle"][0]
    assert not [d for d in got if d.label == "vehicle" and d is not car and box_iou(d.box, car.box) >= 0.5]
