"""Chinese licence plate grammar: what a plate may read, and the normalisation of an OCR string.

A blue (small car) or yellow (large vehicle) plate is a province character, the issuing
authority's letter and 5 of `[A-HJ-NP-Z0-9]` (I and O are never used). A green new-energy plate
has 6 after the letter: small cars `[DABCEFGHJK][A-HJ-NP-Z0-9][0-9]{4}`, large ones
`[0-9]{5}[DABCEFGHJK]` (the union of letters public validators accept since 2021). Whatever the
OCR returns is normalised (separators dropped, O->0 and I->1 where the grammar wants a digit or
forbids the letter) and validated; a string that does not fit is no plate, never a wrong plate.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

PlateColour = Literal["blue", "yellow", "green"]
PLATE_COLOURS: tuple[PlateColour, ...] = ("blue", "yellow", "green")
PLATE_PICTURE = "plate.jpg"  # the plate close-up in an event's evidence

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
AUTHORITY = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # A-Z without I and O
SERIAL = AUTHORITY + "0123456789"
NEV_LETTERS = "DABCEFGHJK"

_P = f"[{PROVINCES}]"
_A = f"[{AUTHORITY}]"
_S = "[A-HJ-NP-Z0-9]"
_N = f"[{NEV_LETTERS}]"
SEVEN = re.compile(f"^{_P}{_A}{_S}{{5}}$")
EIGHT = re.compile(f"^{_P}{_A}(?:{_N}{_S}[0-9]{{4}}|[0-9]{{5}}{_N})$")

SEPARATORS = re.compile(r"[\s·•.\-_:：，,。・|'\"`]+")
_UNUSED_LETTERS = str.maketrans({"O": "0", "I": "1"})  # plates never use I or O: they are 1 and 0


def normalise(raw: str) -> str | None:
    """The plate `raw` reads as under the grammar, or None when it is no plate.

    In the serial the letters plates never use (I, O) become the digits they look like; nothing
    else is guessed (a B is not turned into an 8), and the province character must be read as
    such."""
    s = SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).upper()
    if len(s) not in (7, 8) or s[0] not in PROVINCES:
        return None
    fixed = s[:2] + s[2:].translate(_UNUSED_LETTERS)
    return fixed if is_plate(fixed) else None


def is_plate(text: str) -> bool:
    """Whether `text` is a well-formed plate exactly as written (no normalisation)."""
    return bool(SEVEN.match(text) or EIGHT.match(text))
