"""Photo uploads: typed by their bytes, limited in size and count, refused as a whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.tickets.photos import PhotoFiles, PhotoLimits, PhotoRefused, check_upload, sniff

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 64
LIMITS = PhotoLimits(max_bytes=1000, per_upload=2, per_ticket=3)


def test_sniff_trusts_the_bytes_not_the_name() -> None:
    assert sniff(JPEG) == ("image/jpeg", "jpg")
    assert sniff(PNG) == ("image/png", "png")
    assert sniff(WEBP) == ("image/webp", "webp")
    for other in (
        b"GIF89a" + b"\x00" * 10,
        b"<svg xmlns=...>",
        b"%PDF-1.7",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"",
    ):
        assert sniff(other) is None


def test_a_good_upload_passes_in_order() -> None:
    out = check_upload([("a.jpg", JPEG), ("b.png", PNG)], already=1, limits=LIMITS, ticket_id="T1")
    assert [(p.filename, p.content_type, p.ext) for p in out] == [
        ("a.jpg", "image/jpeg", "jpg"),
        ("b.png", "image/png", "png"),
    ]


@pytest.mark.parametrize(
    ("files", "already", "status", "says"),
    [
        ([], 0, 422, "no photo"),
        ([("a.jpg", JPEG)] * 3, 0, 413, "3 photos in one upload; at most 2"),
        ([("a.jpg", JPEG)] * 2, 2, 409, "holds 2 photos; 2 more would pass its limit of 3"),
        ([("big.jpg", JPEG + b"\x00" * 1000)], 0, 413, "at most 1000"),
        ([("ok.jpg", JPEG), ("fake.jpg", b"GIF89a....")], 0, 415, "'fake.jpg' is not a JPEG, PNG or WebP"),
    ],
)
def test_a_bad_upload_is_refused_whole(
    files: list[tuple[str, bytes]], already: int, status: int, says: str
) -> None:
    with pytest.raises(PhotoRefused) as exc:
        check_upload(files, already, LIMITS, "T1")
    assert exc.value.status == status and says in str(exc.value)


def test_files_are_written_whole_and_looked_up_safely(tmp_path: Path) -> None:
    files = PhotoFiles(tmp_path)
    [checked] = check_upload([("fix.png", PNG)], 0, LIMITS, "T1")
    photo = files.write("T1", checked, "worker-1", 100.0)
    assert photo.url == f"/api/v1/tickets/T1/photos/{photo.name}" and photo.bytes == len(PNG)
    assert files.path("T1", photo.name) == tmp_path / "T1" / photo.name
    assert not list((tmp_path / "T1").glob(".*.part"))
    for ticket_id, name in (("T1", "../../etc/passwd"), ("..", photo.name), ("T1", "x.jpg")):
        assert files.path(ticket_id, name) is None
    files.remove(photo)
    assert files.path("T1", photo.name) is None
