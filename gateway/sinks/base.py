"""The sink contract: something that durably stores a batch of encoded points, or says why not."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from gridgate.models import Point

__all__ = ["Sink", "SinkError", "safe_url"]


class SinkError(Exception):
    """A failed write. `retryable` says whether the same batch may succeed later.

    `written` counts lines the server stored anyway (an InfluxDB partial write); the rest of the
    batch was rejected by the server and must not be retried.
    """

    def __init__(
        self, message: str, *, retryable: bool, url: str = "", status: int | None = None, written: int = 0
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.url = url
        self.status = status
        self.written = written


@runtime_checkable
class Sink(Protocol):
    """A time-series store. `write` is all-or-error; the runner owns batching and retries."""

    #: what `encode` produces; spooled lines are only replayed into a sink of the same format
    format: str
    #: where the points go, without credentials (for logs and error messages)
    url: str

    def encode(self, point: Point) -> str | None:
        """Encode one point for `write` (None: the point cannot be stored)."""
        ...

    def write(self, lines: list[str]) -> None:
        """Store a batch; raise SinkError on failure."""
        ...

    def close(self) -> None: ...


_USERINFO = re.compile(r"^[^@/]*@")


def safe_url(url: str) -> str:
    """The URL without user:password and query string, fit for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = _USERINFO.sub("", parts.netloc)
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def short(text: str, limit: int = 500) -> str:
    """A server's answer, on one line and bounded."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


_DROPPED = re.compile(r"dropped=(\d+)")
_LINE_ERR = re.compile(r"(?:unable to parse|^line \d+:)", re.MULTILINE)


def rejected_in_partial_write(body: str, n_lines: int) -> int | None:
    """How many lines an InfluxDB 'partial write' answer rejected, or None if it is not one."""
    low = body.lower()
    if "partial write" not in low:
        return None
    dropped = sum(int(m) for m in _DROPPED.findall(body))
    if not dropped:
        dropped = len(_LINE_ERR.findall(body.replace("\\n", "\n")))
    return min(n_lines, max(dropped, 1))
