"""The one gate every decoded value passes: declared fields only, each coerced to its declared type.

Every codec's readings go through `conform` (in `devices.codecs.decode`), so no payload in any
codec can store a field under two types or under a name no device type declares.

Coercion table (anything else is `bad_field_type`, naming the field, the value and the type):

| declared | accepted | stored |
| --- | --- | --- |
| `bool` | `true`/`false`; the numbers `0` and `1`; the strings `"true"`/`"false"` (any case) | boolean |
| `float` | a finite number (an integer becomes a float) | float |
| `int` | an integer, or a float with no fractional part, within 64 bits | integer |
| `string` | a string of at most 256 printable characters | string |

`null` is "no measurement this time" and is dropped for any field. A boolean is never a number
here, although Python's `True` is an `int`.

Names: a field the device type does not declare is dropped and reported in `dropped`; a name that
cannot be a field at all (empty, longer than 64 characters, white space, control characters, or one
of `, = " ' \\`) is `bad_field_name`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from devices.codecs.errors import DecodeError, RejectReason
from devices.types import FieldType
from gridgate.models import ReadingValue

MAX_NAME_CHARS = 64
MAX_STRING_CHARS = 256
_INT64 = (-(2**63), 2**63 - 1)
_BOOL_STRINGS = {"true": True, "false": False}
_FLOAT, _BOOL = FieldType.float, FieldType.bool
# what line protocol would have to escape, white space anywhere, control and zero-width characters
_BAD_NAME_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f,=\"'\\\u200b-\u200f\u2028-\u202e\u2060\ufeff]")
_NOT_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_ACCEPTS: dict[FieldType, str] = {
    FieldType.bool: 'true/false, 0/1 or "true"/"false"',
    FieldType.float: "a finite number",
    FieldType.int: "an integer within 64 bits",
    FieldType.string: f"a string of at most {MAX_STRING_CHARS} printable characters",
}


def json_type(value: Any) -> str:
    """JSON's name for a Python value, for error details."""
    if value is None:
        return "null"
    return {
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def snippet(value: Any, limit: int = 40) -> str:
    """A short repr for error details; containers are not walked (they may nest without end)."""
    if isinstance(value, list | dict | tuple | set):
        return f"<{json_type(value)} of {len(value)}>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be a field name, or None when it can."""
    if type(name) is not str:
        return f"is a {json_type(name)}, not a string"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters long (at most {MAX_NAME_CHARS})"
    bad = _BAD_NAME_CHAR.search(name)
    if bad is not None:
        return f"contains {bad.group()!r} at {bad.start()} (no white space, control characters, , = \" ' \\)"
    return None


def _bad(where: str, name: str, value: Any, expected: FieldType, why: str = "") -> DecodeError:
    return DecodeError(
        RejectReason.bad_field_type,
        f"{where}{name}: {json_type(value)} {snippet(value)} is not a {expected.value}{why}; "
        f"{name} is declared {expected.value}: send {_ACCEPTS[expected]}",
    )


def coerce(name: str, value: Any, expected: FieldType, where: str = "") -> ReadingValue | str:
    """`value` as the declared type, by the table above; DecodeError otherwise."""
    t = type(value)
    if expected is FieldType.float:
        if t is float:
            if math.isfinite(value):
                return value
            raise DecodeError(RejectReason.not_finite, f"{where}{name}: {value} is not a finite number")
        if t is int:
            try:
                return float(value)
            except OverflowError:
                raise DecodeError(
                    RejectReason.not_finite, f"{where}{name}: {snippet(value)} overflows a float"
                ) from None
    elif expected is FieldType.bool:
        if t is bool:
            return value
        if (t is int or t is float) and (value == 0 or value == 1):
            return value == 1
        if t is str and value.lower() in _BOOL_STRINGS:
            return _BOOL_STRINGS[value.lower()]
    elif expected is FieldType.int:
        if t is float:
            if not math.isfinite(value):
                raise DecodeError(RejectReason.not_finite, f"{where}{name}: {value} is not a finite number")
            if not value.is_integer():
                raise _bad(where, name, value, expected, " (it has a fractional part)")
            value, t = int(value), int
        if t is int:
            if _INT64[0] <= value <= _INT64[1]:
                return value
            raise _bad(where, name, value, expected, " (out of the 64-bit range)")
    elif expected is FieldType.string and t is str:
        if len(value) > MAX_STRING_CHARS:
            raise _bad(where, name, value, expected, f" ({len(value)} characters)")
        if _NOT_PRINTABLE.search(value):
            raise _bad(where, name, value, expected, " (it has control characters)")
        return value
    raise _bad(where, name, value, expected)


def conform(
    raw: Mapping[Any, Any], declared: Mapping[str, FieldType], where: str = ""
) -> tuple[dict[str, ReadingValue | str], list[str]]:
    """The declared fields of `raw`, coerced; and the names of the undeclared ones, dropped."""
    values: dict[str, ReadingValue | str] = {}
    dropped: list[str] = []
    for name, value in raw.items():
        expected = declared.get(name)
        if expected is None:
            problem = name_problem(name)
            if problem is not None:
                raise DecodeError(
                    RejectReason.bad_field_name,
                    f"{where}field name {snippet(name)} {problem}; "
                    "use a declared name (README, payload formats)",
                )
            dropped.append(name)
        elif value is not None:
            t = type(value)
            # the usual case inline (this runs for every field of every message); `x - x` is 0.0
            # only for a finite float
            if (expected is _FLOAT and t is float and value - value == 0.0) or (
                expected is _BOOL and t is bool
            ):
                values[name] = value
            else:
                values[name] = coerce(name, value, expected, where)
    return values, dropped
