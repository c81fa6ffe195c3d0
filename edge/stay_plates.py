"""The plates of one camera's parking stays: read at the two moments that matter, never per frame.

A plate is read when a vehicle becomes an illegal-parking candidate (the `stopped` picture: it
has come to rest in a no_parking zone; again if it crept on and rested anew while no plate was
read yet) and when its dwell is exceeded (the `exceeded` picture), on the frame of that picture
and the vehicle's box. The better of the reads at or above
`min_confidence` is the stay's plate: it goes into the event's measurements (`plate`,
`plate_confidence`, `plate_colour`) and its close-up becomes the evidence picture `plate.jpg`.
A plate read on a new stay that an earlier stay of the zone already carries folds the new stay
into the earlier one (the tracker switched ids): the same stay, no second event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from detectors.rules import CameraRules, Measurement, SnapshotRequest
from detectors.zones import NoParkingZone, Zone
from edge.config import PlatesConfig
from edge.evidence import Picture
from edge.plates import PlateRead, PlateReading
from gridgate.plates import PLATE_PICTURE

log = logging.getLogger("gridgate.edge.plates")

READ_AT = ("stopped", "exceeded")  # candidate start and dwell exceeded
CROP_MARGIN = 0.06  # of the vehicle box, each side: the plate may sit on the box's edge
CLOSE_UP_H = 96  # pixels of the plate picture's height


def vehicle_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The vehicle's relative box on the frame, a little larger, in pixels."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
    a, b = max(0, int((x1 - mx) * w)), max(0, int((y1 - my) * h))
    c, d = min(w, int(np.ceil((x2 + mx) * w))), min(h, int(np.ceil((y2 + my) * h)))
    return image[b:d, a:c]


def reportable(read: PlateRead | None, cfg: PlatesConfig) -> bool:
    """Sure enough and large enough on the frame to put on an event."""
    return (
        read is not None and read.confidence >= cfg.min_confidence and read.width_px >= cfg.min_plate_width_px
    )


class StayPlates:
    """One camera's plate reads, keyed by the rules' stay key."""

    def __init__(
        self,
        camera_id: str,
        reader: PlateReading,
        cfg: PlatesConfig,
        zones: Sequence[Zone],
        jpeg_quality: int,
    ) -> None:
        self.camera_id = camera_id
        self.reader = reader
        self.cfg = cfg
        self.zones = {z.name for z in zones if isinstance(z, NoParkingZone) and z.read_plates}
        self.jpeg_quality = jpeg_quality
        self.best: dict[str, tuple[float, PlateRead]] = {}  # key -> (frame time, read)

    def observe(
        self,
        snapshots: Sequence[SnapshotRequest],
        image_at: Callable[[float], tuple[float, np.ndarray] | None],
        rules: CameraRules,
    ) -> set[str]:
        """Read the plates these pictures call for; returns the stay keys folded into earlier stays."""
        folded: set[str] = set()
        for snap in snapshots:
            if snap.name not in READ_AT or snap.zone not in self.zones or not snap.highlights:
                continue
            if snap.name == "stopped" and snap.key in self.best:
                continue  # came to rest again after creeping forward: the plate is already known
            found = image_at(snap.at)
            if found is None:
                continue
            ts, image = found
            crop = vehicle_crop(image, snap.highlights[0].box)
            if crop.shape[1] < self.cfg.min_plate_width_px or crop.shape[0] < 8:
                continue
            t0 = time.perf_counter()
            try:
                read = self.reader.read(crop)
            except Exception:  # a plate must never cost the camera its analysis
                log.exception(
                    "event=plate_read_failed camera=%s zone=%s key=%s", self.camera_id, snap.zone, snap.key
                )
                continue
            log.info(
                "event=plate_read camera=%s zone=%s key=%s moment=%s plate=%s confidence=%s ms=%.0f",
                self.camera_id,
                snap.zone,
                snap.key,
                snap.name,
                read.text if read else "-",
                read.confidence if read else "-",
                (time.perf_counter() - t0) * 1000.0,
            )
            if not reportable(read, self.cfg):
                continue
            key = rules.plate_read(snap.zone, snap.key, read.text)
            if key != snap.key:
                folded.add(snap.key)
                log.info(
                    "event=plate_same_stay camera=%s zone=%s plate=%s key=%s into=%s",
                    self.camera_id,
                    snap.zone,
                    read.text,
                    snap.key,
                    key,
                )
                self.best.pop(snap.key, None)
            held = self.best.get(key)
            if held is None or read.confidence > held[1].confidence:
                self.best[key] = (ts, read)
        return folded

    def measurements(self, key: str) -> dict[str, Measurement]:
        held = self.best.get(key)
        if held is None:
            return {}
        read = held[1]
        return {"plate": read.text, "plate_confidence": read.confidence, "plate_colour": read.colour}

    def picture(self, key: str) -> Picture | None:
        """The plate close-up of the stay, as the evidence picture `plate.jpg`."""
        held = self.best.get(key)
        if held is None:
            return None
        ts, read = held
        strip = read.crop
        scale = CLOSE_UP_H / strip.shape[0]
        big = cv2.resize(strip, (round(strip.shape[1] * scale), CLOSE_UP_H), interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        return Picture(PLATE_PICTURE, ts, buf.tobytes()) if ok else None

    def forget(self, key: str) -> None:
        self.best.pop(key, None)
