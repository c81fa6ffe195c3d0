"""The shipped model finds the parked car, the puddle, the bin and its garbage in the demo clip."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.clip import DEMO_ZONES, TIMELINE, DemoClip
from detectors.model import DEFAULT_WEIGHTS, Detection, Detector

pytestmark = pytest.mark.slow
ONNX = DEFAULT_WEIGHTS.with_suffix(".onnx")


def _zone(kind: str) -> dict:
    return next(z for z in DEMO_ZONES if z["type"] == kind)


def _inside(pt: tuple[float, float], zone: dict) -> bool:
    xs = [p[0] for p in zone["points"]]
    ys = [p[1] for p in zone["points"]]
    return min(xs) <= pt[0] <= max(xs) and min(ys) <= pt[1] <= max(ys)


def _centre(d: Detection) -> tuple[float, float]:
    return (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2


def test_shipped_files_are_small() -> None:
    assert DEFAULT_WEIGHTS.stat().st_size <= 10_000_000
    assert ONNX.stat().st_size <= 10_000_000
    assert (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").exists()


@pytest.mark.parametrize("weights", [DEFAULT_WEIGHTS, ONNX], ids=["pytorch", "onnx"])
def test_detects_demo_scene(weights: Path) -> None:
    sees_the_demo_scene(Detector(weights))


def test_openvino_export_sees_the_demo_scene_and_is_not_pinned(tmp_path: Path) -> None:
    """What config/cameras.yaml ships: the .pt exported to OpenVINO at 16:9 on first start. Its
    threads must not be pinned to cores, where the camera decoders would keep them waiting."""
    det = Detector(DEFAULT_WEIGHTS, backend="openvino", cache_dir=tmp_path)
    assert det.path.parent == tmp_path and det.imgsz == (384, 640)
    sees_the_demo_scene(det)
    compiled = det.model.predictor.model.backend.ov_compiled_model
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


def sees_the_demo_scene(det: Detector) -> None:
    clip = DemoClip()
    t_full = TIMELINE.bin_fill[1] + 5  # car parked, puddle grown, bin overflowing
    t_empty = TIMELINE.park_arrive[0] - 1  # street with only the bin
    full, empty = det.detect([clip.frame(t_full)[0], clip.frame(t_empty)[0]])

    parked = [d for d in full if d.label == "vehicle" and _inside(d.bottom_centre, _zone("no_parking"))]
    assert len(parked) == 1 and parked[0].score > 0.6
    water = [d for d in full if d.label == "water" and _inside(_centre(d), _zone("ponding"))]
    assert water and max(d.score for d in water) > 0.5
    bins = [d for d in full if d.label == "bin" and _inside(_centre(d), _zone("bin_overflow"))]
    garbage = [d for d in full if d.label == "garbage" and _inside(_centre(d), _zone("bin_overflow"))]
    assert bins and garbage

    assert not [d for d in empty if d.label in ("vehicle", "water", "garbage")]
    assert [d for d in empty if d.label == "bin"]


def test_track_keeps_the_parked_car_id() -> None:
    det = Detector(DEFAULT_WEIGHTS)
    clip = DemoClip()
    ids = set()
    for k in range(6):
        dets = det.track(clip.frame(TIMELINE.park_arrive[1] + 2 + k * 0.5)[0], camera="demo")
        cars = [d for d in dets if d.label == "vehicle" and _inside(d.bottom_centre, _zone("no_parking"))]
        assert len(cars) == 1 and cars[0].track_id is not None
        ids.add(cars[0].track_id)
    assert len(ids) == 1


@pytest.mark.slow
def test_fine_tune_on_a_labelled_dataset(tmp_path: Path) -> None:
    """`gridgate detectors train --data your.yaml --model weights.pt`: your labels, no synthetic scenes."""
    from detectors.synth import write_dataset
    from detectors.train import train

    write_dataset(tmp_path / "labelled", 12, 6, seed=3, jobs=1)  # stands in for a city's own labelled images
    res = train(
        tmp_path / "run", seed=1, epochs=1, imgsz=160, batch=6, workers=0,
        model=str(DEFAULT_WEIGHTS), data=tmp_path / "labelled" / "data.yaml",
    )  # fmt: skip
    assert res.best_pt.is_file() and set(res.per_class_map50_95) >= {"car", "water", "bin"}
    assert not (tmp_path / "run" / "dataset").exists()  # nothing synthetic was rendered


@pytest.mark.parametrize("photo", ["bus.jpg", "zidane.jpg"])
def test_no_street_class_fires_on_the_real_photos_inside_ultralytics(photo: str) -> None:
    """Real photos of people, a bus and a pavement: no water, garbage or bin at the shipped thresholds
    (`street.thresholds.json`); what the vehicle class scores on the bus is printed."""
    import cv2
    import ultralytics

    from detectors.evaluate import load_thresholds

    thresholds = load_thresholds(DEFAULT_WEIGHTS)
    assert set(thresholds) == {"vehicle", "water", "bin", "garbage"}, (
        "calibrated thresholds ship with the model"
    )
    img = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / photo))
    det = Detector(DEFAULT_WEIGHTS, imgsz=640)
    assert det.policy.min_score["water"] == thresholds["water"]
    found = det.detect([img])[0]
    print(photo, [(d.label, round(d.score, 2)) for d in found])
    assert not [d for d in found if d.label in ("water", "garbage", "bin")], found
