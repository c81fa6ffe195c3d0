"""The sink contract: something that durably stores a batch of encoded points, or says why not."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from gridgate.models import Point

__all__ = ["Sink", "SinkError", "influx_refusal", "redact", "safe_url"]


class SinkError(Exception):
    """A failed write. `retryable` says whether the same batch may succeed later.

    A refusal (`retryable` False: the server rejected the data itself) may say which lines it was:
    `refused` maps a line's index in the batch to the server's reason for it, and `resend` lists
    the indices the server neither stored nor refused (to be written again). `resend` None means
    the server did not say which lines it stored: the runner splits the batch to find out.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        url: str = "",
        status: int | None = None,
        refused: dict[int, str] | None = None,
        resend: list[int] | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.url = url
        self.status = status
        self.refused = refused or {}
        self.resend = resend


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


_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_PARAM = re.compile(r"(?i)\b(p|u|password|username|token|authorization)=([^&\s\"']+)")


def redact(text: str) -> str:
    """An error text without credentials: no `user:password@` in URLs, no `p=`/`token=` values."""
    return _SECRET_PARAM.sub(r"\1=***", _URL_USERINFO.sub("", text))


def short(text: str, limit: int = 500) -> str:
    """A server's answer, on one line and bounded."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


_DROPPED = re.compile(r"dropped=(\d+)")
_UNABLE = "unable to parse '"
_TOO_LONG = re.compile(r"too long line: more than (\d+) bytes")


def influx_refusal(message: str, lines: list[str]) -> tuple[dict[int, str], list[int] | None]:
    """What an InfluxDB-protocol server's refusal says about each line: (`refused`, `resend`).

    - InfluxDB 1.x/2.x name a line they cannot parse (`unable to parse '<line>': <why>`) and, in a
      `partial write`, store every other line; `dropped=N` counts the other refused points
      (type conflicts, beyond retention) without naming them.
    - VictoriaMetrics stores lines in order up to one longer than its `-influx.maxLineSize`
      (`too long line: more than N bytes`) and nothing after it.
    Anything else names no line: the caller has to split the batch.
    """
    n = len(lines)
    m = _TOO_LONG.search(message)
    if m:
        limit = int(m.group(1))
        too_long = [i for i, line in enumerate(lines) if len(line.encode()) > limit]
        if too_long:
            reason = short(message[m.start() :], 200)
            bad = set(too_long)
            rest = [i for i in range(too_long[0] + 1, n) if i not in bad]
            return dict.fromkeys(too_long, reason), rest
    refused, all_named = _unparsable(message, lines)
    if "partial write" in message.lower():
        dropped = sum(int(d) for d in _DROPPED.findall(message))
        if dropped == 0 and refused and all_named:
            return refused, []  # only the named lines were refused; the server stored the rest
        if dropped + len(refused) >= n:  # every line refused: no need to look for good ones
            whole = short(message, 500)
            return {i: refused.get(i, whole) for i in range(n)}, []
    elif all_named and len(refused) == n:
        return refused, []
    return refused, None


def _unparsable(message: str, lines: list[str]) -> tuple[dict[int, str], bool]:
    """The lines quoted in `unable to parse '<line>': <why>` parts, with that part as the reason;
    and whether every such part named a line of the batch."""
    parts = message.split(_UNABLE)[1:]
    if not parts:
        return {}, False
    index: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        index.setdefault(line, []).append(i)
    refused: dict[int, str] = {}
    named = 0
    for part in parts:
        end = part.find("': ")
        while end != -1:  # a line may itself contain "': ": try each end until one is a line
            quoted = part[:end]
            if quoted in index:
                why = _DROPPED.sub("", part[end + 3 :].split("\n", 1)[0]).strip()
                reason = short(f"{_UNABLE}{quoted}': {why}", 500)
                for i in index[quoted]:
                    refused[i] = reason
                named += 1
                break
            end = part.find("': ", end + 1)
    return refused, named == len(parts)
