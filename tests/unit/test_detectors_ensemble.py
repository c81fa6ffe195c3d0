"""Several models on one box: class maps, the class-aware merge, per-camera model choice, versions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from detectors.ensemble import ModelSet, merge
from detectors.model import DEFAULT_WEIGHTS, Detection, LabelPolicy, is_demo_model, model_version
from edge.config import load_edge_config
from gridgate.config import ConfigError


def det(label: str, score: float, box: tuple[float, float, float, float], model: str = "") -> Detection:
    return Detection(label, score, box, label, model=model)


CAR = (0.40, 0.50, 0.60, 0.70)
CAR_SHIFTED = (0.41, 0.51, 0.61, 0.71)  # IoU ~0.82 with CAR
FAR = (0.05, 0.05, 0.15, 0.15)


def test_same_label_overlap_merges_to_the_higher_score() -> None:
    got = merge([det("vehicle", 0.6, CAR, "street"), det("vehicle", 0.9, CAR_SHIFTED, "coco")], 0.5)
    assert [(d.label, d.score, d.model) for d in got] == [("vehicle", 0.9, "coco")]


def test_different_labels_and_distant_boxes_are_kept() -> None:
    dets = [
        det("vehicle", 0.9, CAR, "coco"),
        det("water", 0.5, CAR_SHIFTED, "street"),  # a car in a puddle is both
        det("vehicle", 0.7, FAR, "street"),
    ]
    got = merge(dets, 0.5)
    assert sorted((d.label, d.score) for d in got) == [("vehicle", 0.7), ("vehicle", 0.9), ("water", 0.5)]


def test_merge_threshold_and_chains() -> None:
    a, b = det("bin", 0.8, CAR), det("bin", 0.7, CAR_SHIFTED)
    assert len(merge([a, b], 0.9)) == 2  # overlap below the threshold: two bins
    # a suppressed box does not suppress others in turn
    c = det("bin", 0.6, (0.47, 0.57, 0.67, 0.77))  # overlaps b much more than a
    got = merge([a, b, c], 0.5)
    assert [d.score for d in got] == [0.8, 0.6]
    assert merge([], 0.5) == [] and merge([a], 0.5) == [a]


def test_class_map_and_unmapped_classes() -> None:
    coco = LabelPolicy({"bus": "vehicle", "car": "vehicle", "bicycle": "ignore"}, unmapped="ignore")
    assert coco.label("car") == "vehicle" and coco.label("bus") == "vehicle"
    assert coco.label("person") is None and coco.label("bicycle") is None
    assert coco.label("truck") == "vehicle"  # the built-in map still applies
    keep = LabelPolicy()
    assert keep.label("person") == "person"  # the old behaviour stays the default
    assert coco.make("car", 0.9, CAR, model="coco") == Detection("vehicle", 0.9, CAR, "car", model="coco")
    assert coco.make("dog", 0.9, CAR) is None


class ListModel:
    """A model whose detections per frame are given: exercises the set's routing, not YOLO."""

    def __init__(self, name: str, found: list[Detection]) -> None:
        self.name = name
        self.version = f"{name}.pt@000000000000"
        self.found = found
        self.calls: list[int] = []

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        self.calls.append(len(frames))
        return [list(self.found) for _ in frames]


def test_model_set_runs_each_model_on_its_cameras_frames_and_merges() -> None:
    coco = ListModel("coco", [det("vehicle", 0.9, CAR, "coco")])
    street = ListModel(
        "street", [det("vehicle", 0.5, CAR_SHIFTED, "street"), det("water", 0.8, FAR, "street")]
    )
    models = ModelSet([coco, street], merge_iou=0.5)
    frames = [np.zeros((4, 4, 3), np.uint8)] * 3
    out = models.detect(frames, [None, frozenset({"street"}), frozenset({"coco"})])
    assert sorted((d.label, d.model) for d in out[0]) == [("vehicle", "coco"), ("water", "street")]
    assert sorted((d.label, d.model) for d in out[1]) == [("vehicle", "street"), ("water", "street")]
    assert [(d.label, d.model) for d in out[2]] == [("vehicle", "coco")]
    assert coco.calls == [2] and street.calls == [2]  # one batch per model
    assert models.versions == {"coco": "coco.pt@000000000000", "street": "street.pt@000000000000"}


def test_a_single_model_is_not_merged() -> None:
    twice = ListModel("one", [det("vehicle", 0.9, CAR), det("vehicle", 0.8, CAR_SHIFTED)])
    assert len(ModelSet([twice]).detect([np.zeros((4, 4, 3), np.uint8)])[0]) == 2


def test_model_version_names_file_hash_and_metadata(tmp_path: Path) -> None:
    weights = tmp_path / "yolo11n.pt"
    weights.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()[:12]
    assert model_version(weights) == f"yolo11n.pt@{sha}"
    (tmp_path / "yolo11n.json").write_text(json.dumps({"version": "2026-11-30"}))
    assert model_version(weights) == f"yolo11n.pt@{sha}+2026-11-30"
    assert is_demo_model(DEFAULT_WEIGHTS) and is_demo_model(Path("var/models/street-0123456789.onnx"))
    assert not is_demo_model(weights)


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "cameras.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def cam(**extra: object) -> dict[str, object]:
    return {"id": "cam1", "url": "rtsp://10.0.0.2/live", "location": {"lat": 31.2, "lon": 121.4}, **extra}


MODELS = [
    {
        "name": "coco",
        "path": "yolo11n.pt",
        "class_map": {"car": "vehicle"},
        "unmapped": "ignore",
        "imgsz": 640,
    },
    {"path": "detectors/weights/street.pt", "class_map": {"car": "ignore"}, "min_score": {"water": 0.3}},
]


def test_models_list_loads_with_per_camera_choice(tmp_path: Path) -> None:
    cfg = load_edge_config(
        write(tmp_path, {"models": MODELS, "cameras": [cam(models=["street"]), cam(id="c2")]})
    )
    assert [m.label for m in cfg.model_list] == ["coco", "street"]
    assert cfg.model_list[1].min_score == {"water": 0.3} and cfg.model_list[0].unmapped == "ignore"
    assert cfg.cameras[0].models == ["street"] and cfg.cameras[1].models is None
    single = load_edge_config(write(tmp_path, {"model": {"path": "a.pt"}, "cameras": [cam()]}))
    assert [m.path for m in single.model_list] == [Path("a.pt")]  # the one-model form still works


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"model": {"path": "a.pt"}, "models": MODELS}, "either `model:`"),
        ({"models": [{"path": "a/street.pt"}, {"path": "b/street.pt"}]}, "set `name:` on each model"),
        ({"models": MODELS, "cameras": [cam(models=["cocoa"])]}, "cameras[0].models: cocoa is not a model"),
        ({"models": [{"path": "a.pt", "unmapped": "drop"}]}, "models[0].unmapped"),
    ],
)
def test_models_mistakes_name_the_field(tmp_path: Path, data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_edge_config(write(tmp_path, data))
    assert expected in exc.value.render()


def test_the_commented_multi_model_example_loads(tmp_path: Path) -> None:
    lines = (Path(__file__).resolve().parents[2] / "config" / "cameras.yaml").read_text().splitlines()
    start = lines.index("# models:")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("# merge_iou"))
    example = yaml.safe_load("\n".join(line.removeprefix("# ") for line in lines[start : end + 1]))
    cfg = load_edge_config(write(tmp_path, {**example, "cameras": [cam(models=["coco", "street"])]}))
    assert [(m.label, m.unmapped) for m in cfg.model_list] == [("coco", "ignore"), ("street", "keep")]
