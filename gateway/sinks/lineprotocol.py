r"""InfluxDB line protocol encoding of `Point`s, on the per-message hot path.

Escaping follows the InfluxDB reference: measurement escapes comma and space; tag keys, tag values
and field keys escape comma, equals and space; string field values escape double quote and
backslash. Backslashes in names and tags differ between servers, hence two dialects:

- `"v2"` (InfluxDB 2.x/3.x, VictoriaMetrics): `\\` reads as one backslash, so every backslash
  is doubled and any string round-trips exactly.
- `"v1"` (InfluxDB 1.x `/write`): `\\` mostly stays two characters, so backslashes are written
  as they are and round-trip, except next to `,`, `=` or space (padded so that the line always
  parses; 1.x cannot store them exactly) and at the end (dropped: 1.x refuses such a line).

Line breaks and tabs cannot appear in names or tags; they are written as the two characters
`\n` (`\r`, `\t`), as Telegraf and influxdb-client do. Things line protocol cannot carry are
left out rather than sent: None values, NaN/inf floats, empty tag keys or values. A point left
with no field (or with no measurement) encodes to None, which the caller rejects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Literal

from gridgate.models import Point

__all__ = [
    "Dialect",
    "encode",
    "encode_v1",
    "escape_measurement",
    "escape_string_field",
    "escape_tag",
    "format_field_value",
    "make_encoder",
]

Dialect = Literal["v1", "v2"]
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_CACHE_MAX = 100_000

_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TAG_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
_MEAS_TABLE = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL})
_TAG_SPECIAL = frozenset(",= \\\n\r\t")
_MEAS_SPECIAL = frozenset(", \\\n\r\t")
_TRAILING_BACKSLASHES = re.compile(r"\\+\Z")
_BACKSLASH = re.compile(r"\\")
_V1_BEFORE_SPECIAL = re.compile(r"\\+(?=[,= ])")


def _v1_even_run(m: re.Match[str]) -> str:
    run = m.group()
    return run + "\\" if len(run) % 2 else run


def _v1_backslashes(s: str) -> str:
    # 1.x skips the character after each backslash when it looks for delimiters, and unescapes
    # `\\` in some places only: plain backslashes are written as they are; a run right before an
    # escaped character is padded to an even length so the escape still counts, and a trailing
    # run (which would swallow the delimiter after it) is dropped
    return _V1_BEFORE_SPECIAL.sub(_v1_even_run, _TRAILING_BACKSLASHES.sub("", s))


def _v2_backslashes(s: str) -> str:
    return _BACKSLASH.sub(r"\\\\", s)


def _escaper(
    special: frozenset[str], table: dict[int, str], backslashes: Callable[[str], str]
) -> Callable[[str], str]:
    def escape(s: str) -> str:
        if special.isdisjoint(s):
            return s
        if "\\" in s:
            s = backslashes(s)
        return s.translate(table)

    return escape


_ESCAPERS = {
    "v1": (
        _escaper(_TAG_SPECIAL, _TAG_TABLE, _v1_backslashes),
        _escaper(_MEAS_SPECIAL, _MEAS_TABLE, _v1_backslashes),
    ),
    "v2": (
        _escaper(_TAG_SPECIAL, _TAG_TABLE, _v2_backslashes),
        _escaper(_MEAS_SPECIAL, _MEAS_TABLE, _v2_backslashes),
    ),
}


def escape_tag(s: str, dialect: Dialect = "v2") -> str:
    """Escape a tag key, tag value or field key."""
    return _ESCAPERS[dialect][0](s)


def escape_measurement(s: str, dialect: Dialect = "v2") -> str:
    """Escape a measurement name."""
    return _ESCAPERS[dialect][1](s)


def escape_string_field(s: str) -> str:
    """Quote a string field value: backslash and double quote are escaped."""
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if '"' in s:
        s = s.replace('"', '\\"')
    return f'"{s}"'


def format_field_value(v: object) -> str | None:
    """One field value in line protocol, or None when it cannot be written (None, NaN, inf)."""
    t = type(v)
    if t is float:
        return repr(v) if math.isfinite(v) else None  # type: ignore[arg-type]
    if t is int:
        return f"{v}i" if _INT64_MIN <= v <= _INT64_MAX else repr(float(v))  # type: ignore[operator]
    if t is str:
        return escape_string_field(v)  # type: ignore[arg-type]
    if t is bool:
        return "true" if v else "false"
    if v is None:
        return None
    # subclasses (IntEnum, numpy scalars...) take the slow path
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return format_field_value(int(v))
    if isinstance(v, float):
        return format_field_value(float(v))
    if isinstance(v, str):
        return escape_string_field(str(v))
    try:
        return format_field_value(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def make_encoder(dialect: Dialect = "v2") -> Callable[[Point], str | None]:
    """An `encode(point) -> line | None` for one dialect, with its own caches of escaped names."""
    esc_tag, esc_meas = _ESCAPERS[dialect]
    tag_cache: dict[str, str] = {}
    meas_cache: dict[str, str] = {}
    tag = tag_cache.get
    lo, hi = _INT64_MIN, _INT64_MAX

    def escaped_tag(s: str) -> str:
        out = esc_tag(s)
        if len(tag_cache) >= _CACHE_MAX:
            tag_cache.clear()
        tag_cache[s] = out
        return out

    def encode(p: Point) -> str | None:
        """One line of line protocol (no newline), or None when the point has no writable field."""
        m = meas_cache.get(p.measurement)
        if m is None:
            if not p.measurement:
                return None
            m = esc_meas(p.measurement)
            if not m:
                return None
            if len(meas_cache) >= 1000:
                meas_cache.clear()
            meas_cache[p.measurement] = m
        parts = [m]
        tags = p.tags
        if tags:
            for k in sorted(tags) if len(tags) > 1 else tags:
                v = tags[k]
                if not k or not v:
                    continue
                ek = tag(k) or escaped_tag(k)
                ev = tag(v) or escaped_tag(v)
                if not ek or not ev:  # only trailing backslashes (v1)
                    continue
                parts.append(f",{ek}={ev}")
        fields = []
        for k, v in p.fields.items():
            if not k:
                continue
            t = type(v)
            if t is float:
                if v - v != 0.0:  # NaN or inf
                    continue
                s = repr(v)
            elif t is int and lo <= v <= hi:  # type: ignore[operator]
                s = f"{v}i"
            else:
                s = format_field_value(v)
                if s is None:
                    continue
            ek = tag(k) or escaped_tag(k)
            if not ek:
                continue
            fields.append(f"{ek}={s}")
        if not fields:
            return None
        parts.append(" ")
        parts.append(",".join(fields))
        parts.append(f" {p.time_ns}")
        return "".join(parts)

    return encode


#: InfluxDB 2.x/3.x and VictoriaMetrics (`/api/v2/write`)
encode = make_encoder("v2")
#: InfluxDB 1.x (`/write`)
encode_v1 = make_encoder("v1")
