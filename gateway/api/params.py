"""Query parameter types shared by the routers, so the OpenAPI schema says what is accepted.

- `Timestamp`: an ISO 8601 / RFC 3339 date-time string only (`2026-11-22T08:30:00Z`; a bare
  date is its midnight; no offset means UTC). Numbers such as `0.5` or `1700000000` are refused:
  pydantic would otherwise read them as epoch seconds.
- `Limit` and `Offset`: bounded, so no value can overflow the database's 64-bit integers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, BeforeValidator

MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000_000
EXAMPLE = "2026-11-22T08:30:00Z"
ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?)?"
)


def _iso_string(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not ISO_DATETIME.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not an ISO 8601 date-time (e.g. {EXAMPLE})")
    return value.strip()


def _in_utc(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return aware.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{value.isoformat()} is out of range once moved to UTC") from None


Timestamp = Annotated[datetime, BeforeValidator(_iso_string), AfterValidator(_in_utc)]


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"at most this many (1-{MAX_LIMIT})")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"skip this many (0-{MAX_OFFSET})")]
