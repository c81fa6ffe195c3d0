"""Helpers every codec shares: JSON parsing with stable reject codes, timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.fields import json_type, snippet

_NON_FINITE = re.compile(rb'"([^"\\]{0,64})"\s*:\s*(-?Infinity|NaN)|(-?Infinity|NaN)')
EPOCH_MS_ABOVE = 1e11  # epoch numbers above this are milliseconds (1e11 s is the year 5138)
MAX_JSON_DEPTH = 16  # readings are flat, a SenML pack is 2 deep: 16 leaves room for vendor metadata
_BOM = b"\xef\xbb\xbf"


def strip_bom(payload: bytes) -> bytes:
    """Without a leading UTF-8 byte order mark, which RFC 8259 lets a parser ignore."""
    return payload[3:] if payload[:3] == _BOM else payload


def loads_json(payload: bytes) -> Any:
    """orjson.loads after a BOM, mapping errors to `not_finite` (NaN, Infinity, 1e999), `too_deep`
    (over MAX_JSON_DEPTH levels) or `not_json`."""
    payload = strip_bom(payload)
    try:
        doc = orjson.loads(payload)
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
        if "depth limit" in msg:
            raise DecodeError(RejectReason.too_deep, _too_deep_detail("over 1024")) from None
        raise DecodeError(RejectReason.not_json, f"not valid JSON: {msg}") from None
    # only a payload with more brackets than the limit can nest deeper: two C scans on the hot path
    if payload.count(b"[") + payload.count(b"{") > MAX_JSON_DEPTH:
        depth = json_depth(doc, MAX_JSON_DEPTH)
        if depth > MAX_JSON_DEPTH:
            raise DecodeError(RejectReason.too_deep, _too_deep_detail(f"at least {depth}"))
    return doc


def _too_deep_detail(depth: str) -> str:
    return f"payload: JSON nested {depth} levels deep, the limit is {MAX_JSON_DEPTH}; send flat readings"


def json_depth(doc: Any, stop_above: int) -> int:
    """How deep arrays and objects nest in `doc` (a scalar is 0), without recursion; it stops
    counting once past `stop_above`."""
    deepest = 0
    stack = [(doc, 1)] if type(doc) in (list, dict) else []
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > stop_above:
            break
        for child in node.values() if type(node) is dict else node:
            if type(child) in (list, dict):
                stack.append((child, depth + 1))
    return deepest


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
                RejectReason.bad_payload, f"{where}: {snippet(value)} is not ISO 8601 or epoch seconds"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # devices without a zone speak UTC
        try:
            return dt.timestamp()
        except (OverflowError, ValueError, OSError):
            raise DecodeError(
                RejectReason.bad_payload, f"{where}: {snippet(value)} is out of range"
            ) from None
    raise DecodeError(
        RejectReason.wrong_type,
        f"{where}: expected ISO 8601 string or epoch number, got {json_type(value)} {snippet(value)}",
    )
