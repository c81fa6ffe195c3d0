"""`gridgate detectors predict`: annotated output where the boxes are, and a per-label summary."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detectors.clip import DEMO_CAMERA_YAML, TIMELINE, DemoClip, write_clip
from detectors.model import DEFAULT_WEIGHTS, Detector
from gridgate.cli import app

pytestmark = pytest.mark.integration


def test_predict_picture_draws_boxes_and_zones_and_summarises(tmp_path: Path) -> None:
    scene = DemoClip().frame(TIMELINE.bin_fill[1] + 5)[0]
    picture = tmp_path / "scene.png"
    cv2.imwrite(str(picture), scene)
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(DEMO_CAMERA_YAML + f"model:\n  path: {DEFAULT_WEIGHTS}\n")
    out = tmp_path / "out"
    args = [
        "detectors",
        "predict",
        str(picture),
        "-c",
        str(cameras),
        "--camera",
        "demo-street",
        "-o",
        str(out),
    ]
    res = CliRunner().invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    for label in ("vehicle", "water", "bin", "garbage"):
        assert label in res.stdout
    assert "street.pt@" in res.stdout  # the model's version in the table's title
    drawn = cv2.imread(str(out / "scene.jpg"))
    assert drawn.shape == scene.shape
    diff = np.abs(drawn.astype(int) - scene.astype(int)).max(axis=2)
    h, w = diff.shape
    car = next(d for d in Detector(DEFAULT_WEIGHTS).detect([scene])[0] if d.label == "vehicle")
    x1, y1, x2, y2 = (
        round(car.box[0] * w),
        round(car.box[1] * h),
        round(car.box[2] * w),
        round(car.box[3] * h),
    )
    # the box's outline is drawn: its left and right edges changed strongly along their length
    for x in (x1, x2):
        column = diff[y1 + 5 : y2 - 5, max(0, x - 2) : x + 3].max(axis=1)
        assert (column > 60).mean() > 0.9
    # the zone (kerb-no-parking, x 0.45-0.86, y 0.66-0.83) is outlined too
    zy = round(0.745 * h)
    assert diff[zy - 3 : zy + 3, round(0.45 * w) - 2 : round(0.45 * w) + 3].max() > 60
    # away from boxes, zones and captions only JPEG noise remains
    assert diff[round(0.30 * h) : round(0.40 * h), round(0.05 * w) : round(0.30 * w)].mean() < 6


def test_predict_video_writes_an_mp4(tmp_path: Path) -> None:
    clip = tmp_path / "street.mp4"
    write_clip(clip, duration_s=1, width=640, height=360)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["detectors", "predict", str(clip), "-w", str(DEFAULT_WEIGHTS), "--frames", "3", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    cap = cv2.VideoCapture(str(out / "street.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 3
    assert "3 frames" in res.stdout and "bin" in res.stdout


def test_predict_names_a_missing_source(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["detectors", "predict", str(tmp_path / "nope.jpg"), "-w", str(DEFAULT_WEIGHTS)]
    )
    assert res.exit_code == 1 and "nope.jpg: no such file or folder" in " ".join(res.output.split())


def test_probe_detect_prints_what_the_models_found(tmp_path: Path) -> None:
    clip = tmp_path / "street.mp4"
    write_clip(clip, duration_s=1, width=640, height=360)
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(DEMO_CAMERA_YAML + f"model:\n  path: {DEFAULT_WEIGHTS}\n")
    out = tmp_path / "probe.jpg"
    args = ["edge", "probe", str(clip), "--detect", "-c", str(cameras), "--camera", "demo-street"]
    res = CliRunner().invoke(app, [*args, "--frames", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["width"] == 640 and info["frames_analysed"] == 2
    assert info["detections"]["bin"]["count"] == 2 and info["models"]["street"].startswith("street.pt@")
    annotated = cv2.imread(info["annotated"])
    assert (
        annotated.shape == (360, 640, 3) and np.abs(annotated.astype(int) - cv2.imread(str(out))).max() > 60
    )
