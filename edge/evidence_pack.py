"""An event's evidence pack: its pictures, its clip and, once it ended, its manifest.

`EvidencePacks` holds, per event with a clip coming, what the encoder thread and the analysis loop
share: whether the clip is written and the `end` that waits for it. `manifest_for` lists the files.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.events import Draft, OpenEvent
from gridgate.manifest import CLIP_NAME, Manifest, ManifestFile, file_entry
from gridgate.models import utc

log = logging.getLogger("gridgate.edge.evidence")


@dataclass(frozen=True, slots=True)
class PendingClip:
    """A clip whose post-roll is still coming: frames from `start` to `end` (frame time)."""

    event_id: str
    start: float
    end: float


@dataclass(slots=True)
class Pack:
    event: OpenEvent
    clip_pending: bool = True
    clip_span: tuple[float, float] | None = None  # first and last frame time of the clip written
    deferred_end: Any = None  # the `_send` arguments of an `end` that waits for the clip


class EvidencePacks:
    """Thread-safe: the analysis loop starts packs and ends events, the encoder thread writes clips."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packs: dict[str, Pack] = {}

    def clip_started(self, event: OpenEvent) -> None:
        with self._lock:
            self._packs[event.event_id] = Pack(event)

    def event(self, event_id: str) -> OpenEvent | None:
        with self._lock:
            pack = self._packs.get(event_id)
            return pack.event if pack is not None else None

    def defer_end(self, event_id: str, args: Any) -> bool:
        """Keep the `end` until the clip is written (True), or False when no clip is coming."""
        with self._lock:
            pack = self._packs.get(event_id)
            if pack is None or not pack.clip_pending:
                return False
            pack.deferred_end = args
            return True

    def clip_written(self, event_id: str, span: tuple[float, float]) -> None:
        with self._lock:
            pack = self._packs.get(event_id)
            if pack is not None:
                pack.clip_span = span

    def clip_finished(self, event_id: str) -> Any:
        """The clip is written (or failed): the `end` that waited for it, if any."""
        with self._lock:
            pack = self._packs.get(event_id)
            if pack is None:
                return None
            pack.clip_pending = False
            return pack.deferred_end

    def finish(self, event_id: str) -> tuple[float, float] | None:
        """The event ended: forget its pack; the span of its clip, if one was written."""
        with self._lock:
            pack = self._packs.pop(event_id, None)
            return pack.clip_span if pack is not None else None

    def __len__(self) -> int:
        return len(self._packs)


def manifest_for(
    edge_id: str,
    camera_id: str,
    draft: Draft,
    folder: Path,
    clip_span: tuple[float, float] | None,
    now: float,
) -> Manifest:
    """The manifest of an ended event: every evidence file it references that is still on disk."""
    ev, s = draft.event, draft.signal
    files: list[ManifestFile] = []
    for ref in ev.evidence:
        span = clip_span if ref.name == CLIP_NAME else None
        try:
            entry = file_entry(
                folder / ref.name,
                taken_at=None if span else ref.taken_at,
                first_frame_at=utc(span[0]) if span else None,
                last_frame_at=utc(span[1]) if span else None,
            )
        except FileNotFoundError:  # deleted over quota while the event was open
            log.warning(
                "event=manifest_file_missing camera=%s event_id=%s name=%s", camera_id, ev.event_id, ref.name
            )
            continue
        files.append(entry)
    return Manifest(
        edge_id=edge_id,
        camera_id=camera_id,
        event_id=ev.event_id,
        kind=ev.kind,
        zone=ev.zone,
        started_at=utc(ev.started_at),
        ended_at=utc(s.at),
        created_at=utc(now),
        files=files,
    )
