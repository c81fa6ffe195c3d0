"""Synthetic street scenes: labels inside the image, deterministic by seed, every class present."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detectors.synth import CLASSES, synth_sample, write_dataset, yolo_line


def test_same_seed_same_pixels_and_labels() -> None:
    a_img, a_lab = synth_sample(3, 7)
    b_img, b_lab = synth_sample(3, 7)
    assert np.array_equal(a_img, b_img)
    assert [(x.cls, x.box()) for x in a_lab] == [(x.cls, x.box()) for x in b_lab]
    c_img, _ = synth_sample(4, 7)
    assert not np.array_equal(a_img, c_img)


def test_frames_are_16_9_and_labels_inside() -> None:
    for i in range(20):
        img, labels = synth_sample(0, i)
        assert img.shape == (360, 640, 3)
        for lab in labels:
            x0, y0, x1, y1 = lab.box()
            assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360
            assert lab.cls in CLASSES


def test_every_class_appears_in_a_small_set() -> None:
    seen = {lab.cls for i in range(40) for lab in synth_sample(0, i)[1]}
    assert seen == set(CLASSES)


def test_dataset_layout_and_yolo_lines(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "ds", 6, 2, seed=1, jobs=1)
    assert "names:" in data.read_text()
    assert len(list((tmp_path / "ds/images/train").glob("*.jpg"))) == 6
    assert len(list((tmp_path / "ds/labels/val").glob("*.txt"))) == 2
    for txt in (tmp_path / "ds/labels").rglob("*.txt"):
        for line in txt.read_text().splitlines():
            cid, *vals = line.split()
            assert 0 <= int(cid) < len(CLASSES)
            assert len(vals) == 4 and all(0 <= float(v) <= 1 for v in vals)


def test_parallel_rendering_is_identical(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 4, 0, seed=2, jobs=1)
    write_dataset(tmp_path / "b", 4, 0, seed=2, jobs=2)
    for f in (tmp_path / "a/labels/train").glob("*.txt"):
        assert f.read_text() == (tmp_path / "b/labels/train" / f.name).read_text()


def test_segment_lines_are_polygons() -> None:
    _, labels = synth_sample(0, 1)
    line = yolo_line(labels[0], 640, 360, segment=True)
    assert len(line.split()) >= 7 and (len(line.split()) - 1) % 2 == 0
