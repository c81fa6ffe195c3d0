"""Frames kept by the edge box's feedback loop -> an ultralytics/YOLO detection dataset.

The edge box (`edge/feedback.py`) keeps frames around events and borderline detections, each JPEG
with a JSON sidecar (`FeedbackFrame`, defined here so both sides read one schema). Exporting
(`gridgate detectors dataset --from DIR --out DATASET`) writes `images/{train,val}`,
`labels/{train,val}` pre-filled from the stored detections, `data.yaml`, `manifest.csv` and a
README.txt for the people who correct the labels. The boxes of an event whose ticket ended as a
false alarm are left out, so the corrected dataset teaches the model that nothing was there.

The label and split logic is pure (`label_lines`, `split_of`); `export_dataset` does the I/O.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger("gridgate.detectors.dataset")

SIDECAR_VERSION = 1
Reason = Literal["event_start", "event_new", "event_end", "borderline"]
Split = Literal["train", "val"]
ClassChoice = Literal["shipped", "found"]


class FrameDetection(BaseModel):
    """One detection on a kept frame, as the model and the tracker saw it."""

    box_px: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in the image's pixels")
    label: str = Field(description="gridgate label (vehicle, water, bin, garbage, ...)")
    class_name: str = Field(description="the model's own class (car, truck, ...)")
    score: float = Field(ge=0, le=1)
    track_id: int | None = None
    borderline: bool = Field(False, description="below its label's min_score: the rules never saw it")
    events: list[str] = Field(
        default_factory=list, description="ids of the events this object is the subject of"
    )


class FrameEvent(BaseModel):
    """An event a frame was kept for."""

    event_id: str
    kind: str
    zone: str
    phase: Literal["start", "new", "end"] = Field(
        description="`start`: the moment it began (a vehicle came to rest), kept once it became an event; "
        "`new`: raised (for parking: the dwell exceeded); `end`: cleared"
    )


class FeedbackFrame(BaseModel):
    """The JSON sidecar of one kept frame (`<name>.json` beside `<name>.jpg`)."""

    version: int = SIDECAR_VERSION
    image: str = Field(description="the JPEG's file name, beside this sidecar")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    edge_id: str
    camera_id: str
    taken_at: datetime = Field(description="frame time (UTC)")
    reasons: list[Reason]
    events: list[FrameEvent] = Field(default_factory=list)
    model_version: str | None = Field(None, description="weights file and the start of its sha256")
    detections: list[FrameDetection] = Field(default_factory=list)
    false_alarm: bool = Field(False, description="a ticket of one of its events ended as a false alarm")
    false_alarm_events: list[str] = Field(default_factory=list)
    false_alarm_tickets: list[str] = Field(default_factory=list)
    marked_at: datetime | None = None

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for e in self.events]

    def labels(self) -> list[FrameDetection]:
        """The boxes a dataset should hold: all but the subjects of false-alarm events."""
        false = set(self.false_alarm_events)
        return [d for d in self.detections if not false.intersection(d.events)]


# ---- pure: labels and split ------------------------------------------------------------------------


def class_names(frames: Sequence[FeedbackFrame], choice: ClassChoice, shipped: Sequence[str]) -> list[str]:
    """`shipped`: the shipped model's classes, then any other class found; `found`: those found."""
    found = sorted({d.class_name for f in frames for d in f.detections})
    if choice == "found":
        return found
    return [*shipped, *(c for c in found if c not in shipped)]


def yolo_line(det: FrameDetection, width: int, height: int, class_id: int) -> str | None:
    """`class xc yc w h`, normalised to the image and clipped to it; None for an empty box."""
    x1, y1, x2, y2 = det.box_px
    x1, x2 = (min(max(v / width, 0.0), 1.0) for v in (x1, x2))
    y1, y2 = (min(max(v / height, 0.0), 1.0) for v in (y1, y2))
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return None
    return f"{class_id} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {w:.6f} {h:.6f}"


def label_lines(frame: FeedbackFrame, class_ids: dict[str, int]) -> list[str]:
    """The YOLO label file of a frame (false-alarm subjects removed)."""
    lines = (yolo_line(d, frame.width, frame.height, class_ids[d.class_name]) for d in frame.labels())
    return [line for line in lines if line is not None]


def group_of(frame: FeedbackFrame, name: str) -> str:
    """Frames of one event stay in one split (start and end look alike): the event, else the frame."""
    return frame.events[0].event_id if frame.events else name


def split_of(group: str, val_fraction: float) -> Split:
    """A stable split: the same group lands in the same split in every export."""
    h = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def assign_splits(groups: Sequence[str], val_fraction: float) -> list[Split]:
    """`split_of` each, except that with two groups or more neither split is left empty."""
    splits = [split_of(g, val_fraction) for g in groups]
    distinct = sorted(set(groups))
    if len(distinct) >= 2 and len(set(splits)) == 1:
        # move the group whose hash lies nearest the other side
        def h(g: str) -> int:
            return int.from_bytes(hashlib.sha256(g.encode()).digest()[:8], "big")

        want: Split = "val" if splits[0] == "train" else "train"
        pick = min(distinct, key=h) if want == "val" else max(distinct, key=h)
        splits = [want if g == pick else s for g, s in zip(groups, splits, strict=True)]
    return splits


# ---- I/O ---------------------------------------------------------------------------------------------


class DatasetError(Exception):
    """An export that cannot go ahead; the message names the path and the fix."""


def read_frames(src: Path) -> Iterator[tuple[Path, FeedbackFrame]]:
    """Every readable sidecar under `src` with its JPEG present, oldest first; others are logged."""
    for path in sorted(Path(src).rglob("*.json")):
        try:
            frame = FeedbackFrame.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            log.warning("event=feedback_sidecar_skipped path=%s error=%r", path, str(exc)[:300])
            continue
        if not (path.parent / frame.image).is_file():
            log.warning("event=feedback_sidecar_skipped path=%s error=%r", path, f"{frame.image} missing")
            continue
        yield path, frame


@dataclass
class ExportSummary:
    """What an export wrote."""

    data_yaml: Path
    names: list[str]
    images: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    boxes: int = 0
    borderline_boxes: int = 0
    false_alarm_frames: int = 0
    removed_boxes: int = 0


README = """\
Frames kept by gridgate edge boxes, exported as a YOLO detection dataset ({total} images).

  images/train, images/val   the frames, untouched (no boxes drawn)
  labels/train, labels/val   one .txt per image: `class x_centre y_centre width height`,
                             normalised 0-1, pre-filled from what the model detected
  data.yaml                  class names (ids as in the labels) and the split folders
  classes.txt                the same names, one a line (labellers that want a plain list)
  manifest.csv               per image: camera, time, why it was kept, events, false alarms,
                             borderline boxes and boxes removed

The labels are the model's guesses: CORRECT THEM before training.
- Borderline boxes ({borderline} in all) scored below their label's threshold: the model was
  unsure. Keep the right ones, delete the wrong ones, add what it missed.
- {false_frames} frames belong to tickets ended as false alarms: the boxes that raised those
  alarms were removed ({removed} in all), so those images teach the model that nothing was there.
  Check that nothing real was removed.

Correct the labels in any YOLO-format labeller, for example:
- CVAT: zip this folder, create a task with the images and upload the zip as annotations in the
  "Ultralytics YOLO Detection" format; fix the boxes; export in the same format.
- Label Studio: `label-studio-converter import yolo` turns a folder of images/, labels/ and
  classes.txt into tasks with these boxes as pre-annotations; export the result as YOLO.
Put the corrected .txt files back under labels/ with the same names, then fine-tune:

  gridgate detectors train --data {data_yaml} --model detectors/weights/street.pt --epochs 30

The train/val split is by event (and by frame otherwise) and stable across exports.
"""


def export_dataset(
    src: Path,
    out: Path,
    *,
    val_fraction: float = 0.2,
    classes: ClassChoice = "shipped",
    shipped: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Export every kept frame under `src` into a YOLO dataset at `out`; see the module docstring."""
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"--val-fraction {val_fraction}: give a fraction from 0 up to (not) 1, e.g. 0.2")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetError(f"{src}: no such folder (the edge box's feedback.dir, e.g. var/edge/feedback)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(
                f"{out} is not empty (corrected labels there would be lost): choose a new folder "
                "or pass --overwrite"
            )
        for sub in ("images", "labels"):
            shutil.rmtree(out / sub, ignore_errors=True)
    frames = list(read_frames(src))
    if not frames:
        raise DatasetError(f"{src}: no kept frames (*.json sidecars with their .jpg); is feedback.enabled?")
    if shipped is None:
        from detectors.synth import CLASSES

        shipped = CLASSES
    names = class_names([f for _, f in frames], classes, shipped)
    class_ids = {n: i for i, n in enumerate(names)}
    stems = [f"{f.camera_id}_{p.stem}" for p, f in frames]
    splits = assign_splits([group_of(f, s) for (_, f), s in zip(frames, stems, strict=True)], val_fraction)
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out / "data.yaml", names)
    rows = []
    for (path, frame), stem, split in zip(frames, stems, splits, strict=True):
        suffix = Path(frame.image).suffix or ".jpg"
        shutil.copyfile(path.parent / frame.image, out / "images" / split / f"{stem}{suffix}")
        lines = label_lines(frame, class_ids)
        (out / "labels" / split / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        kept = frame.labels()
        removed = len(frame.detections) - len(kept)
        borderline = sum(d.borderline for d in kept)
        summary.images[split] += 1
        summary.boxes += len(lines)
        summary.borderline_boxes += borderline
        summary.removed_boxes += removed
        summary.false_alarm_frames += frame.false_alarm
        rows.append(
            {
                "image": f"images/{split}/{stem}{suffix}",
                "sidecar": str(path),
                "camera_id": frame.camera_id,
                "taken_at": frame.taken_at.isoformat(),
                "reasons": " ".join(frame.reasons),
                "events": " ".join(frame.event_ids),
                "false_alarm": frame.false_alarm,
                "boxes": len(lines),
                "borderline_boxes": borderline,
                "removed_boxes": removed,
                "model_version": frame.model_version or "",
            }
        )
    with (out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    names_yaml = "\n".join(f"  {i}: {n}" for i, n in enumerate(names))
    summary.data_yaml.write_text(
        f"# gridgate feedback frames from {src.resolve()}: correct the labels before training (README.txt)\n"
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names_yaml}\n"
    )
    (out / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    (out / "README.txt").write_text(
        README.format(
            total=len(frames),
            borderline=summary.borderline_boxes,
            false_frames=summary.false_alarm_frames,
            removed=summary.removed_boxes,
            data_yaml=summary.data_yaml,
        )
    )
    log.info(
        "event=dataset_exported src=%s out=%s train=%d val=%d boxes=%d false_alarm_frames=%d "
        "removed_boxes=%d classes=%s",
        src,
        out,
        summary.images["train"],
        summary.images["val"],
        summary.boxes,
        summary.false_alarm_frames,
        summary.removed_boxes,
        ",".join(names),
    )
    return summary
