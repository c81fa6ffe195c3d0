"""Helpers every codec shares: JSON parsing with stable reject codes, value checks, timestamps."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from devices.codecs.errors import DecodeError, RejectReason
from devices.types import KNOWN_READINGS, NUMERIC_READINGS
from gridgate.models import ReadingValue

_INF = math.inf
_NON_FINITE = re.compile(rb'"([^"\\]{0,64})"\s*:\s*(-?Infinity|NaN)|(-?Infinity|NaN)')
EPOCH_MS_ABOVE = 1e11  # epoch numbers above this are milliseconds (1e11 s is the year 5138)


def _snippet(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
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


def loads_json(payload: bytes) -> Any:
    """orjson.loads, mapping its errors to `not_finite` (NaN, Infinity, 1e999) or `not_json`."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        # orjson refuses NaN/Infinity tokens as syntax errors; they are numbers a sensor sent badly
        m = _NON_FINITE.search(payload) if (b"NaN" in payload or b"Infinity" in payload) else None
        if m is not None:
            where = (
                f"field {m.group(1).decode('utf-8', 'replace')!r}" if m.group(1) is not None else "a value"
            )
            token = (m.group(2) or m.group(3)).decode()
            raise DecodeError(
                RejectReason.not_finite, f"{where} is {token}; expected a finite number"
            ) from None
        if "infinity" in msg:
            raise DecodeError(RejectReason.not_finite, f"a number overflows to infinity ({msg})") from None
        raise DecodeError(RejectReason.not_json, f"not valid JSON: {msg}") from None


def clean_values(raw: dict[str, Any], where: str = "") -> dict[str, ReadingValue]:
    """Keep numbers and booleans; a non-number for a known reading is `wrong_type`.

    Strings, nulls, arrays and objects under names that are not readings (firmware version, GPS
    blocks...) are dropped: real devices send them and they are not telemetry. A null under a known
    name means "no measurement this time" and is dropped too.
    """
    out: dict[str, ReadingValue] = {}
    for name, value in raw.items():
        t = type(value)
        if t is float:
            if value != value or value == _INF or value == -_INF:
                raise DecodeError(RejectReason.not_finite, f"{where}{name}: {value} is not a finite number")
            out[name] = value
        elif t is int:
            out[name] = value
        elif t is bool:
            if name in NUMERIC_READINGS:
                raise DecodeError(
                    RejectReason.wrong_type, f"{where}{name}: expected a number, got boolean {value}"
                )
            out[name] = value
        elif value is None:
            continue
        elif name in KNOWN_READINGS:
            raise DecodeError(
                RejectReason.wrong_type,
                f"{where}{name}: expected a number or boolean, got {type_name(value)} {_snippet(value)}",
            )
    return out


def check_values(values: dict[str, Any], where: str = "") -> None:
    """Raise unless every value is a finite number or a boolean (for codecs that do not clean)."""
    for name, value in values.items():
        t = type(value)
        if t is float:
            if value != value or value == _INF or value == -_INF:
                raise DecodeError(RejectReason.not_finite, f"{where}{name}: {value} is not a finite number")
        elif t is bool:
            if name in NUMERIC_READINGS:
                raise DecodeError(
                    RejectReason.wrong_type, f"{where}{name}: expected a number, got boolean {value}"
                )
        elif t is not int:
            raise DecodeError(
                RejectReason.wrong_type,
                f"{where}{name}: expected a number or boolean, got {type_name(value)} {_snippet(value)}",
            )


def parse_ts(value: Any, now: float, where: str = "ts") -> float:
    """`ts` as epoch seconds, epoch milliseconds (> 1e11) or ISO 8601; absent means `now`."""
    if value is None:
        return now
    t = type(value)
    if t is int or t is float:
        return value / 1000.0 if value > EPOCH_MS_ABOVE else float(value)
    if t is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(
                RejectReason.bad_payload, f"{where}: {_snippet(value)} is not ISO 8601 or epoch seconds"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # devices without a zone speak UTC
        try:
            return dt.timestamp()
        except (OverflowError, ValueError, OSError):
            raise DecodeError(
                RejectReason.bad_payload, f"{where}: {_snippet(value)} is out of range"
            ) from None
    raise DecodeError(
        RejectReason.wrong_type,
        f"{where}: expected ISO 8601 string or epoch number, got {type_name(value)} {_snippet(value)}",
    )
