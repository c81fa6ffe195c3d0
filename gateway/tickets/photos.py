"""Photos people attach to a ticket (处置反馈: the fix, shown): checked, then kept as its evidence.

A photo is accepted only by what its bytes are (the magic numbers of JPEG, PNG or WebP), never by
the name or the type the client claims; size and count are limited per upload and per ticket.
`check_upload` is pure and refuses a whole upload on the first bad photo, so nothing is written
and the ticket stays as it was. The bytes live under `data_dir/photos/{ticket_id}/`, the list in
the ticket database (`ticket_photos`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field
from ulid import ULID

MAGIC: tuple[tuple[bytes, int, str, str], ...] = (
    # (signature, offset, content type, extension)
    (b"\xff\xd8\xff", 0, "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", "png"),
    (b"WEBP", 8, "image/webp", "webp"),
)
SAFE_NAME = re.compile(r"^[0-9A-Z]{26}\.(jpg|png|webp)$")


def sniff(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) of an image by its magic bytes, or None for anything else."""
    for signature, offset, ctype, ext in MAGIC:
        if data[offset : offset + len(signature)] == signature and (ext != "webp" or data[:4] == b"RIFF"):
            return ctype, ext
    return None


class PhotoRefused(Exception):
    """An upload that is refused as a whole; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class PhotoLimits:
    max_bytes: int
    per_upload: int
    per_ticket: int


@dataclass(frozen=True, slots=True)
class CheckedPhoto:
    filename: str
    content_type: str
    ext: str
    data: bytes


def check_upload(
    files: list[tuple[str, bytes]], already: int, limits: PhotoLimits, ticket_id: str
) -> list[CheckedPhoto]:
    """Every photo of an upload checked (count, size, type), or PhotoRefused naming the first problem."""
    if not files:
        raise PhotoRefused(422, "no photo in the upload: send one or more `photos` parts (multipart)")
    if len(files) > limits.per_upload:
        raise PhotoRefused(
            413, f"{len(files)} photos in one upload; at most {limits.per_upload} (max_photos_per_upload)"
        )
    if already + len(files) > limits.per_ticket:
        raise PhotoRefused(
            409,
            f"ticket {ticket_id} holds {already} photos; {len(files)} more would pass its limit of "
            f"{limits.per_ticket} (limits.max_photos_per_ticket)",
        )
    out = []
    for filename, data in files:
        if len(data) > limits.max_bytes:
            raise PhotoRefused(
                413,
                f"photo {filename!r} is {len(data)} bytes; at most {limits.max_bytes} "
                "(limits.max_photo_bytes): send a smaller or more compressed picture",
            )
        kind = sniff(data)
        if kind is None:
            raise PhotoRefused(
                415, f"photo {filename!r} is not a JPEG, PNG or WebP image (judged by its bytes, not name)"
            )
        out.append(CheckedPhoto(filename, kind[0], kind[1], data))
    return out


class TicketPhoto(BaseModel):
    """One photo of a ticket, as the API lists it."""

    ticket_id: str
    name: str = Field(description="the stored file's name (a ULID and the type's extension)")
    content_type: str
    bytes: int
    sha256: str
    at: float = Field(description="when it was attached (epoch seconds)")
    actor: str = Field(description="who attached it")
    filename: str = Field("", description="the name the phone gave it")
    url: str = Field(description="where the evidence API serves it (bearer token, same role checks)")


def photo_url(ticket_id: str, name: str) -> str:
    return f"/api/v1/tickets/{ticket_id}/photos/{name}"


class PhotoFiles:
    """The photos' bytes on disk, one folder per ticket; each written whole (a temp file renamed)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, ticket_id: str, photo: CheckedPhoto, actor: str, at: float) -> TicketPhoto:
        name = f"{ULID()}.{photo.ext}"
        folder = self.root / ticket_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.part"
        tmp.write_bytes(photo.data)
        tmp.replace(folder / name)
        return TicketPhoto(
            ticket_id=ticket_id,
            name=name,
            content_type=photo.content_type,
            bytes=len(photo.data),
            sha256=hashlib.sha256(photo.data).hexdigest(),
            at=at,
            actor=actor,
            filename=photo.filename[:200],
            url=photo_url(ticket_id, name),
        )

    def remove(self, photo: TicketPhoto) -> None:
        (self.root / photo.ticket_id / photo.name).unlink(missing_ok=True)

    def path(self, ticket_id: str, name: str) -> Path | None:
        if not SAFE_NAME.match(name) or not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", ticket_id):
            return None
        p = self.root / ticket_id / name
        return p if p.is_file() else None
