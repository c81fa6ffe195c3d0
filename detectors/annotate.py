"""What the detector sees, drawn on the frame: boxes with label, score, track id and model, and the
camera's zones with their names (OpenCV). Used by `gridgate detectors predict`, `gridgate edge probe
--detect` and the edge worker's live frame; no I/O beyond the optional JPEG encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from detectors.zones import DetectionLike, Zone

# BGR; labels the rules know get fixed colours, anything else one from the palette by name
LABEL_COLOURS: dict[str, tuple[int, int, int]] = {
    "vehicle": (255, 160, 0),
    "water": (255, 255, 0),
    "bin": (0, 200, 0),
    "garbage": (0, 0, 255),
    "bin_overflow": (255, 0, 255),
}
PALETTE = [(128, 128, 255), (0, 165, 255), (200, 200, 200), (255, 0, 128), (0, 128, 128)]
ZONE_COLOURS: dict[str, tuple[int, int, int]] = {
    "no_parking": (0, 0, 255),
    "ponding": (255, 128, 0),
    "bin_overflow": (0, 200, 255),
}


def colour_of(label: str) -> tuple[int, int, int]:
    if label in LABEL_COLOURS:
        return LABEL_COLOURS[label]
    return PALETTE[sum(label.encode()) % len(PALETTE)]


def caption(det: DetectionLike, track_id: int | None = None) -> str:
    """`vehicle 0.87 #12 (coco)`: label, score, track id and model when known."""
    text = f"{det.label} {det.score:.2f}"
    if track_id is None:
        track_id = getattr(det, "track_id", None)
    if track_id is not None:
        text += f" #{track_id}"
    model = getattr(det, "model", "")
    return text + (f" ({model})" if model else "")


def _text(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float) -> None:
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    y = max(th + base, y)
    x = max(0, min(x, img.shape[1] - tw - 2))
    cv2.rectangle(img, (x, y - th - base), (x + tw + 2, y), colour, -1)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thick, cv2.LINE_AA)


def annotate(
    image: np.ndarray,
    detections: Sequence[DetectionLike],
    zones: Sequence[Zone] = (),
    title: str | None = None,
    track_ids: Sequence[int | None] | None = None,
) -> np.ndarray:
    """A copy of the BGR `image` with the zones (outline and name) and each detection drawn;
    `track_ids[i]` is detection i's track (else its own `track_id`, if any)."""
    img = image.copy()
    h, w = img.shape[:2]
    scale = max(0.4, w / 1600)
    thick = max(1, w // 640)
    for z in zones:
        colour = ZONE_COLOURS.get(z.type, (0, 200, 255))
        pts = np.array([[x * w, y * h] for x, y in z.points], np.int32)
        cv2.polylines(img, [pts], True, colour, thick + 1, cv2.LINE_AA)
        # the name inside the lower left corner: box captions sit above boxes, so they rarely meet
        x0, y1 = int(pts[:, 0].min()), int(pts[:, 1].max())
        _text(img, f"{z.name} ({z.type})", x0 + 2, y1 - 2, colour, scale)
    for i, det in enumerate(detections):
        colour = colour_of(det.label)
        if det.polygon is not None and len(det.polygon) >= 3:
            poly = np.array([[x * w, y * h] for x, y in det.polygon], np.int32)
            cv2.polylines(img, [poly], True, colour, thick, cv2.LINE_AA)
        x1, y1, x2, y2 = (int(det.box[0] * w), int(det.box[1] * h), int(det.box[2] * w), int(det.box[3] * h))
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick + 1)
        _text(img, caption(det, track_ids[i] if track_ids is not None else None), x1, y1 - 2, colour, scale)
    if title:
        _text(img, title, 4, int(28 * scale) + 4, (0, 0, 0), scale)
    return img


def to_jpeg(image: np.ndarray, quality: int = 80, max_width: int | None = None) -> bytes:
    """Encode a BGR image as JPEG, scaled down to `max_width` first when wider."""
    if max_width is not None and image.shape[1] > max_width:
        h = round(image.shape[0] * max_width / image.shape[1])
        image = cv2.resize(image, (max_width, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
