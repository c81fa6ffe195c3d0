"""The push routes' work, apart from HTTP: secrets, rate limits, signatures, dedup, journal, answers.

What is answered when (docs/platforms.md):
- 401 wrong path secret, 403 bad OneNET signature (both counted, never dead-lettered);
- 429 a source over its rate limit; 413 a body over `platforms.max_body_bytes`;
- 503 the journal cannot be written (the platform retries: nothing was accepted);
- 200 everything else: journaled (durable) before the answer, a retry of an accepted push
  (a duplicate, counted), or a permanently bad body, dead-lettered with its reason. Any other code
  makes CTWing retry and, past 10 % failures in 10 s, drop a minute of pushes.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from devices.codecs.errors import RejectReason, describe_exception
from devices.registry import DeviceRegistry
from gateway.pipeline import LogThrottle
from gateway.platforms.ctwing import parse_ctwing
from gateway.platforms.dedup import PushDedup
from gateway.platforms.metrics import PushMetrics
from gateway.platforms.native import NativeMessage, ParsedPush, PushProblem
from gateway.platforms.onenet import SignatureError, aes_key_bytes, check_signature, parse_onenet
from gateway.platforms.ratelimit import SourceBuckets
from gridgate.clock import Clock
from gridgate.config import ConfigError, PlatformsConfig, PushSourceConfig
from gridgate.models import Rejection
from gridgate.topics import Topics

log = logging.getLogger("gridgate.platforms")

Platform = Literal["ctwing", "onenet"]
MIN_SECRET_CHARS = 16


class PushAnswer(BaseModel):
    """The 200 body: what became of the push (the platforms read only the status code)."""

    accepted: int = Field(description="native messages journaled for the pipeline")
    duplicate: bool = Field(False, description="a retry of a push already accepted: nothing new stored")
    dead_lettered: int = Field(
        0, description="parts refused for good, on `{prefix}/dead-letter` with the reason"
    )
    noted: list[str] = Field(default_factory=list, description="logged only: command replies, event types")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: PushAnswer | None = None  # 200
    detail: str | None = None  # an error
    text: str | None = None  # OneNET's URL check: the echoed msg
    retry_after_s: int | None = None


class JournalUnavailable(Exception):
    """The journal could not be written: nothing was accepted (503, the platform retries)."""


class PushReceiver:
    """One per gateway; its methods are called by the HTTP threads."""

    def __init__(
        self,
        cfg: PlatformsConfig,
        *,
        registry: DeviceRegistry,
        topics: Topics,
        data_dir: Path,
        clock: Clock,
        journal: Callable[[list[NativeMessage]], None],
        reject: Callable[[Rejection, float], None],
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.topics = topics
        self.clock = clock
        self._journal = journal
        self._reject = reject
        self.metrics = PushMetrics()
        self._throttle = LogThrottle()
        self._accepting = threading.Lock()  # a retry racing its original is seen as a duplicate
        problems: list[str] = []
        self._secrets: dict[str, bytes] = {}
        self._buckets: dict[str, SourceBuckets] = {}
        sources: dict[str, PushSourceConfig] = {"ctwing": cfg.ctwing, "onenet": cfg.onenet}
        for name, source in sources.items():
            if not source.enabled:
                continue
            secret = _read(source.path_secret, f"platforms.{name}.secret", problems)
            if secret is None or len(secret) < MIN_SECRET_CHARS:
                problems.append(
                    f"platforms.{name}.secret: missing or shorter than {MIN_SECRET_CHARS} characters "
                    "(is its environment variable or file set?)"
                )
            self._secrets[name] = (secret or "").encode()
            self._buckets[name] = SourceBuckets(source.rate_limit_per_s, source.rate_burst)
        self.onenet_token = _read(cfg.onenet.token_value, "platforms.onenet.token", problems)
        key = _read(cfg.onenet.aes_key_value, "platforms.onenet.aes_key", problems)
        self.onenet_aes_key: bytes | None = None
        if key is not None:
            try:
                self.onenet_aes_key = aes_key_bytes(key)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("gateway config", problems)
        self.dedup = PushDedup(
            data_dir / "push_dedup.sqlite", cfg.dedup_ttl_s, cfg.dedup_max_keys, clock.now()
        )

    @property
    def platforms(self) -> list[str]:
        """The platforms whose routes are served."""
        return list(self._secrets)

    def close(self) -> None:
        self.dedup.close()

    # the routes ---------------------------------------------------------------------------
    def admit(self, platform: Platform, secret: str, source: str | None) -> Answer | None:
        """401 for a wrong path secret, 429 over the source's rate; None: read the body."""
        if not hmac.compare_digest(secret.encode(), self._secrets[platform]):
            return self._refuse(
                platform,
                "secret",
                401,
                "wrong path secret: use the URL with platforms."
                f"{platform}.secret as registered in the {platform} console",
            )
        if not self._buckets[platform].allow(source or "-", time.monotonic()):
            self._note_once(
                f"{platform}:rate", "event=push_rate_limited platform=%s source=%s", platform, source
            )
            return Answer(
                429,
                detail=f"more than {self._buckets[platform].rate_per_s:g} pushes/s from {source}: slow down",
                retry_after_s=1,
            )
        return None

    def verify_onenet(self, msg: str | None, nonce: str | None, signature: str | None) -> Answer:
        """OneNET's URL check: `msg` echoed once its signature holds (when a token is configured)."""
        started = time.perf_counter()
        if msg is None:
            answer = Answer(
                400,
                detail="query parameter msg is missing: OneNET's URL check sends msg, nonce and signature",
            )
        elif self.onenet_token is not None:
            try:
                check_signature(self.onenet_token, nonce, msg, signature)
                answer = Answer(200, text=msg)
            except SignatureError as exc:
                answer = self._refuse("onenet", "signature", 403, f"URL check refused: {exc}")
        else:
            answer = Answer(200, text=msg)
        if answer.status == 200:
            log.info("event=onenet_url_verified signed=%s", self.onenet_token is not None)
        self.metrics.answered("onenet", answer.status, time.perf_counter() - started)
        return answer

    def receive(self, platform: Platform, body: bytes) -> Answer:
        """A push body admitted by `admit`: parsed, deduplicated, journaled, answered."""
        started = time.perf_counter()
        try:
            answer = self._receive(platform, body)
        except SignatureError as exc:
            answer = self._refuse(platform, "signature", 403, f"push refused: {exc}")
        self.metrics.answered(platform, answer.status, time.perf_counter() - started)
        return answer

    def _receive(self, platform: Platform, body: bytes) -> Answer:
        try:
            if platform == "ctwing":
                parsed = parse_ctwing(body, self.registry, self.topics)
            else:
                parsed = parse_onenet(
                    body, self.registry, self.topics, self.onenet_token, self.onenet_aes_key
                )
        except SignatureError:
            raise
        except Exception as exc:  # a bug or an input nobody foresaw: this push only, dead-lettered
            log.debug("event=push_parse_error platform=%s", platform, exc_info=True)
            problem = PushProblem(RejectReason.handler_error, f"{platform} push: {describe_exception(exc)}")
            parsed = ParsedPush(problems=[problem])
        with self._accepting:
            return self._accept(platform, parsed, body)

    def _accept(self, platform: Platform, parsed: ParsedPush, body: bytes) -> Answer:
        now = self.clock.now()
        if parsed.key is not None and self.dedup.seen(parsed.key, now):
            self.metrics.duplicates[platform] += 1
            return Answer(200, PushAnswer(accepted=0, duplicate=True))
        if parsed.messages:
            try:
                self._journal(parsed.messages)
            except OSError as exc:
                self._note_once(
                    "journal",
                    "event=push_journal_failed platform=%s error=%r fix='free disk space "
                    "under storage.data_dir'",
                    platform,
                    exc,
                )
                return Answer(
                    503, detail=f"the gateway cannot write its journal ({exc.strerror}); retry later"
                )
            self.metrics.messages[platform] += len(parsed.messages)
        if parsed.key is not None:
            try:
                self.dedup.add(parsed.key, now)
            except sqlite3.Error as exc:  # journaled already: a retry may be stored twice, never lost
                self._note_once("dedup", "event=push_dedup_write_failed error=%r", exc)
        self._dead_letter(platform, parsed, body, now)
        for note in parsed.noted:
            self.metrics.noted[(platform, note.what)] += 1
            self._note_once(
                f"{platform}:{note.what}",
                "event=push_noted platform=%s what=%s %s",
                platform,
                note.what,
                note.detail,
                level=logging.INFO,
            )
        return Answer(
            200,
            PushAnswer(
                accepted=len(parsed.messages),
                dead_lettered=len(parsed.problems),
                noted=[n.what for n in parsed.noted],
            ),
        )

    def _dead_letter(self, platform: str, parsed: ParsedPush, body: bytes, now: float) -> None:
        for problem in parsed.problems:
            self._reject(
                Rejection(f"push/{platform}", str(problem.reason), problem.detail, body, problem.device_id),
                now,
            )

    def _refuse(self, platform: str, reason: str, status: int, detail: str) -> Answer:
        self.metrics.auth_failures[(platform, reason)] += 1
        self._note_once(
            f"{platform}:{reason}",
            "event=push_refused platform=%s reason=%s status=%d",
            platform,
            reason,
            status,
        )
        return Answer(status, detail=detail)

    def _note_once(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """One line per key every 10 s at most, with the count held back (a flood logs little)."""
        more = self._throttle.due(key)
        if more is not None:
            log.log(level, message + " suppressed_since_last=%d", *args, more)


def _read(get: Callable[[], str | None], where: str, problems: list[str]) -> str | None:
    try:
        return get()
    except OSError as exc:
        problems.append(f"{where}: cannot read its file ({exc.strerror})")
        return None
