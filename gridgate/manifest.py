"""`manifest.json` of a video event's evidence folder: every file's name, SHA-256, size and capture
time, with the camera, edge box, event id and kind. The edge box writes it last, once the event ended
and its clip is written; `verify_manifest` (the gateway, an officer's tool, `gridgate evidence
verify FOLDER`) names every file that is missing, changed or not listed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_NAME = "manifest.json"
CLIP_NAME = "clip.mp4"  # the event's video: pre- and post-roll around the moment it was raised
SAFE_NAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"  # one path segment: no `..`, no `/`


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SAFE_NAME, description="the file in the event's folder, e.g. `clip.mp4`")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex digest of the file's bytes")
    bytes: int = Field(ge=0)
    taken_at: datetime | None = Field(None, description="a picture's capture time")
    first_frame_at: datetime | None = Field(None, description="a clip's first frame time")
    last_frame_at: datetime | None = Field(None, description="a clip's last frame time")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    edge_id: str = Field(min_length=1, max_length=64)
    camera_id: str = Field(min_length=1, max_length=64)
    event_id: str = Field(min_length=1, max_length=64)
    kind: str = Field(min_length=1, max_length=64)
    zone: str = Field(max_length=64)
    started_at: datetime
    ended_at: datetime | None = None
    created_at: datetime = Field(description="when the manifest was written")
    files: list[ManifestFile] = Field(max_length=256)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(
    path: Path,
    taken_at: datetime | None = None,
    first_frame_at: datetime | None = None,
    last_frame_at: datetime | None = None,
) -> ManifestFile:
    data = path.read_bytes()
    return ManifestFile(
        name=path.name,
        sha256=sha256_of(data),
        bytes=len(data),
        taken_at=taken_at,
        first_frame_at=first_frame_at,
        last_frame_at=last_frame_at,
    )


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in `data`; raises ValueError naming the field that is wrong."""
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(document)"
        raise ValueError(f"{where}: {first['msg']}") from None


def verify_manifest(folder: Path) -> list[str]:
    """Problems of the evidence in `folder` against its manifest, one sentence each; [] when it holds."""
    path = folder / MANIFEST_NAME
    try:
        manifest = parse_manifest(path.read_bytes())
    except FileNotFoundError:
        return [f"{path}: no manifest; the event may still be open or the file was removed"]
    except ValueError as exc:
        return [f"{path}: not a valid manifest ({exc})"]
    problems = []
    listed = set()
    for f in manifest.files:
        listed.add(f.name)
        p = folder / f.name
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            problems.append(f"{f.name}: listed in the manifest but missing from {folder}")
            continue
        if len(data) != f.bytes:
            problems.append(f"{f.name}: {len(data)} bytes, the manifest says {f.bytes} (file changed)")
        elif sha256_of(data) != f.sha256:
            problems.append(f"{f.name}: SHA-256 differs from the manifest's (file changed)")
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != MANIFEST_NAME and p.name not in listed and not p.name.startswith("."):
            problems.append(f"{p.name}: in {folder} but not listed in the manifest")
    return problems
