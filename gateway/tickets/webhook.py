"""Webhooks: every matching ticket change POSTed, signed, to an external grid platform.

`notify()` (on the ticket worker thread) only writes the change to an outbox table in the ticket
database and wakes the endpoint's delivery thread, so a slow or dead platform never holds tickets
up and a restart loses nothing: undelivered rows are sent again when the gateway starts.

Each request carries
- `Idempotency-Key`: the change id (the same on every retry, so the receiver keeps one copy);
- `X-Gridgate-Timestamp`: unix seconds of this attempt;
- `X-Gridgate-Signature`: `sha256=` + hex HMAC-SHA256 over `"{timestamp}.{raw body}"` with the
  endpoint's secret (receivers recompute it and refuse stale timestamps: no replays).

Delivery is in order per endpoint: a failing change is retried with capped exponential backoff and
jitter before later ones go; after `max_attempts` (or at once on a 4xx that retrying cannot fix)
it is dead: kept in the outbox with its last error, counted in /metrics, and published on
`{p}/dead-letter` with reason `webhook_failed`.

The outbox and its delivery loop (`OutboxNotifier`) know nothing of the request's shape: a `Channel`
says which changes it wants, what body is stored, how one attempt is posted (URL, headers, signature
at send time) and whether the answer means delivered. `WebhookChannel` is the signed JSON webhook;
the group-chat robots (`gateway.tickets.robots`) are channels too, and may hold a change until quiet
hours end (status `held`: it neither blocks the line nor counts as pending until released).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from gateway.store import create_schema, make_engine
from gateway.tickets.models import TicketChange
from gridgate.clock import Clock, SystemClock
from gridgate.config import WebhookConfig

log = logging.getLogger("gridgate.tickets.webhook")

SIGNATURE_HEADER = "X-Gridgate-Signature"
TIMESTAMP_HEADER = "X-Gridgate-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
PENDING, DELIVERED, DEAD, HELD = "pending", "delivered", "dead", "held"
# 4xx answers that another attempt can fix (timeout, too early, rate limited); others are final
RETRYABLE_4XX = frozenset({408, 409, 423, 425, 429})
KEEP_DELIVERED_S = 7 * 86_400
DEAD_LETTER_HEAD_BYTES = 512

metadata = MetaData()

outbox_table = Table(
    "webhook_outbox",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(64), nullable=False),
    Column("origin", String(64), nullable=False),
    Column("change_id", String(32), nullable=False),
    Column("ticket_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("last_error", Text),
    UniqueConstraint("endpoint", "change_id", name="uq_webhook_outbox_change"),
    Index("ix_webhook_outbox_due", "endpoint", "origin", "status", "seq"),
)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: `sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = 300,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is fresh (no replays)."""
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def webhook_payload(change: TicketChange) -> dict[str, Any]:
    """The JSON body: the change (as on MQTT) plus the city's classification code at the top."""
    t = change.ticket
    return {"type": "ticket_change", "code": t.code, "service_code": t.code or t.category, **change.to_json()}


def redact_url(url: str) -> str:
    """The URL without credentials or query (tokens often hide there) for logs and dead letters."""
    u = httpx.URL(url)
    return str(u.copy_with(userinfo=b"", query=None, fragment=None))


@dataclass
class OutboxRow:
    seq: int
    change_id: str
    ticket_id: str
    kind: str
    body: bytes
    attempts: int
    next_attempt_at: float


class WebhookOutbox:
    """The persisted outbox (one table in the ticket database, SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        create_schema(self.engine, metadata)

    def close(self) -> None:
        self.engine.dispose()

    def add(
        self,
        endpoint: str,
        origin: str,
        change: TicketChange,
        body: bytes,
        now: float,
        *,
        hold_until: float | None = None,
    ) -> bool:
        """Store one change for an endpoint; False if it is already there (the same change again).

        With `hold_until` (the gateway clock's time) the row is `held` until `release()` at or after it.
        """
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    outbox_table.insert().values(
                        endpoint=endpoint,
                        origin=origin,
                        change_id=change.id,
                        ticket_id=change.ticket.id,
                        kind=change.kind.value,
                        body=body.decode(),
                        status=PENDING if hold_until is None else HELD,
                        attempts=0,
                        created_at=now,
                        next_attempt_at=now if hold_until is None else hold_until,
                    )
                )
        except IntegrityError:
            return False
        return True

    def release(self, endpoint: str, origin: str, clock_now: float, now: float) -> int:
        """Held rows whose hold ended by `clock_now` become pending (due at `now`); how many."""
        c = outbox_table.c
        with self.engine.begin() as conn:
            res = conn.execute(
                update(outbox_table)
                .where(
                    and_(
                        c.endpoint == endpoint,
                        c.origin == origin,
                        c.status == HELD,
                        c.next_attempt_at <= clock_now,
                    )
                )
                .values(status=PENDING, next_attempt_at=now)
            )
        return int(res.rowcount or 0)

    def pending(self, endpoint: str, origin: str, limit: int = 50) -> list[OutboxRow]:
        """Undelivered rows of this endpoint written by this gateway, oldest first."""
        c = outbox_table.c
        q = (
            select(c.seq, c.change_id, c.ticket_id, c.kind, c.body, c.attempts, c.next_attempt_at)
            .where(and_(c.endpoint == endpoint, c.origin == origin, c.status == PENDING))
            .order_by(c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                OutboxRow(
                    r.seq, r.change_id, r.ticket_id, r.kind, r.body.encode(), r.attempts, r.next_attempt_at
                )
                for r in conn.execute(q)
            ]

    def _set(self, seq: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(outbox_table).where(outbox_table.c.seq == seq).values(**values))

    def delivered(self, seq: int, attempts: int, now: float) -> None:
        self._set(seq, status=DELIVERED, attempts=attempts, delivered_at=now, last_error=None)

    def retry(self, seq: int, attempts: int, next_at: float, error: str) -> None:
        self._set(seq, attempts=attempts, next_attempt_at=next_at, last_error=error)

    def dead(self, seq: int, attempts: int, error: str) -> None:
        self._set(seq, status=DEAD, attempts=attempts, last_error=error)

    def counts(self, endpoint: str) -> dict[str, int]:
        c = outbox_table.c
        q = select(c.status, func.count()).where(c.endpoint == endpoint).group_by(c.status)
        with self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(q)}

    def rows(self, endpoint: str, status: str | None = None) -> list[dict[str, Any]]:
        """Every row of an endpoint (for operators and tests), oldest first."""
        q = select(outbox_table).where(outbox_table.c.endpoint == endpoint).order_by(outbox_table.c.seq)
        if status is not None:
            q = q.where(outbox_table.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def prune(self, older_than: float) -> int:
        c = outbox_table.c
        with self.engine.begin() as conn:
            res = conn.execute(
                outbox_table.delete().where(and_(c.status == DELIVERED, c.delivered_at < older_than))
            )
        return int(res.rowcount or 0)


@dataclass
class WebhookStats:
    queued: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0
    pending: int = 0
    held: int = 0


@dataclass(frozen=True)
class Post:
    """One attempt's request, built at send time (timestamps and signatures are per attempt)."""

    url: str
    headers: dict[str, str]
    content: bytes


@dataclass(frozen=True)
class Verdict:
    """What an answer means: delivered (`error` None), or failed and whether retrying can help."""

    error: str | None = None
    final: bool = False


DELIVERED_OK = Verdict()


def http_verdict(resp: httpx.Response) -> Verdict:
    """2xx: delivered; a 4xx that retrying cannot fix: final; anything else: retry."""
    if 200 <= resp.status_code < 300:
        return DELIVERED_OK
    final = 400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE_4XX
    return Verdict(f"HTTP {resp.status_code}: {resp.text[:200]}", final)


class Channel(Protocol):
    """The shape of one outbox endpoint's requests; the delivery loop is `OutboxNotifier`'s."""

    name: str  # the notifier's name in logs (webhook:city, robot:drainage-wecom)
    endpoint: str  # its key in the outbox and its label in /metrics
    url_for_logs: str  # never a credential
    dead_letter_reason: str

    def wants(self, change: TicketChange) -> bool: ...

    def body(self, change: TicketChange) -> bytes:
        """What the outbox keeps for this change (unsigned)."""
        ...

    def hold_until(self, change: TicketChange) -> float | None:
        """When (gateway clock) a change may go, if not now (quiet hours); None: at once."""
        ...

    def post(self, row: OutboxRow, attempt: int, now: float) -> Post: ...

    def verdict(self, resp: httpx.Response) -> Verdict: ...

    def redact(self, text: str) -> str:
        """`text` (an error) without the channel's credentials."""
        ...


class RetryPolicy(Protocol):
    timeout_s: float
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float


@dataclass(frozen=True)
class ChangeFilter:
    """A channel's routing: teams, categories, change kinds, grids or micro-grids (empty: all)."""

    teams: frozenset[str]
    categories: frozenset[str]
    kinds: frozenset[str]
    grids: frozenset[str]

    @classmethod
    def of(
        cls, teams: Iterable[str], categories: Iterable[str], kinds: Iterable[str], grids: Iterable[str] = ()
    ) -> ChangeFilter:
        return cls(frozenset(teams), frozenset(categories), frozenset(kinds), frozenset(grids))

    def matches(self, change: TicketChange) -> bool:
        t = change.ticket
        return (
            (not self.teams or (change.target.team or t.team) in self.teams)
            and (not self.categories or t.category in self.categories)
            and (not self.kinds or change.kind.value in self.kinds)
            and (not self.grids or t.grid_id in self.grids or t.micro_grid_id in self.grids)
        )


class WebhookChannel:
    """A signed JSON webhook (`tickets.webhooks`): the change as on MQTT, HMAC in a header."""

    dead_letter_reason = "webhook_failed"

    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        self.name = f"webhook:{cfg.name}"
        self.endpoint = cfg.name
        self.secret = cfg.secret_value()
        self.url_for_logs = redact_url(cfg.url)
        self.filter = ChangeFilter.of(cfg.teams, cfg.categories, cfg.kinds, cfg.grids)

    def wants(self, change: TicketChange) -> bool:
        return self.filter.matches(change)

    def body(self, change: TicketChange) -> bytes:
        return orjson.dumps(webhook_payload(change))

    def hold_until(self, change: TicketChange) -> float | None:
        return None  # a platform integration, not a page: never held

    def post(self, row: OutboxRow, attempt: int, now: float) -> Post:
        ts = str(int(now))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "gridgate-webhook/1",
            IDEMPOTENCY_HEADER: row.change_id,
            TIMESTAMP_HEADER: ts,
            "X-Gridgate-Attempt": str(attempt),
            **self.cfg.headers,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, row.body)
        return Post(self.cfg.url, headers, row.body)

    def verdict(self, resp: httpx.Response) -> Verdict:
        return http_verdict(resp)

    def redact(self, text: str) -> str:
        return text if self.secret is None else text.replace(self.secret, "***")


class OutboxNotifier:
    """One endpoint: filters changes, persists them, and delivers them on its own thread.

    `clock` (the gateway's) only decides when held changes are released; retries run on real time.
    """

    def __init__(
        self,
        channel: Channel,
        policy: RetryPolicy,
        outbox: WebhookOutbox,
        *,
        origin: str,
        clock: Clock | None = None,
        dead_letter: Callable[[bytes], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.channel = channel
        self.policy = policy
        self.name = channel.name
        self.endpoint = channel.endpoint
        self.outbox = outbox
        self.origin = origin
        self.clock = clock or SystemClock()
        self.dead_letter = dead_letter
        self.stats = WebhookStats()
        self._client = httpx.Client(timeout=policy.timeout_s, transport=transport, follow_redirects=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the ticket worker's side ----------------------------------------------------------------

    def notify(self, change: TicketChange) -> None:
        """Persist the change for this endpoint and wake the delivery thread; never sends here."""
        if not self.channel.wants(change):
            return
        hold = self.channel.hold_until(change)
        body = self.channel.body(change)
        if not self.outbox.add(self.endpoint, self.origin, change, body, time.time(), hold_until=hold):
            return
        self.stats.queued += 1
        if hold is None:
            self.stats.pending += 1
            self._wake.set()
            return
        self.stats.held += 1
        log.info(
            "event=notification_held endpoint=%s change=%s ticket=%s kind=%s category=%s until=%.0f",
            self.endpoint,
            change.id,
            change.ticket.id,
            change.kind,
            change.ticket.category,
            hold,
        )

    def wake(self) -> None:
        """Look at the outbox now (e.g. after the clock moved past a hold)."""
        self._wake.set()

    # ---- delivery -------------------------------------------------------------------------------

    def start(self) -> OutboxNotifier:
        counts = self.outbox.counts(self.endpoint)
        self.stats.dead = counts.get(DEAD, 0)
        self.stats.pending = counts.get(PENDING, 0)
        self.stats.held = counts.get(HELD, 0)
        pruned = self.outbox.prune(time.time() - KEEP_DELIVERED_S)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"gridgate-outbox-{self.endpoint}", daemon=True
            )
            self._thread.start()
        log.info(
            "event=webhook_started endpoint=%s url=%s pending=%d held=%d dead=%d pruned=%d",
            self.endpoint,
            self.channel.url_for_logs,
            self.stats.pending,
            self.stats.held,
            self.stats.dead,
            pruned,
        )
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the request in flight; what is left stays in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.policy.timeout_s + 2 if timeout is None else timeout)
            self._thread = None
        self._client.close()
        log.info("event=webhook_stopped endpoint=%s stats=%s", self.endpoint, self.stats)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait_s = self._deliver_due()
            except Exception:  # the database went away a moment: try again shortly
                log.exception("event=webhook_loop_failed endpoint=%s", self.endpoint)
                wait_s = 1.0
            self._wake.wait(wait_s)
            self._wake.clear()

    def _release_held(self) -> None:
        if not self.stats.held:
            return
        released = self.outbox.release(self.endpoint, self.origin, self.clock.now(), time.time())
        if released:
            self.stats.held = max(0, self.stats.held - released)
            self.stats.pending += released
            log.info("event=notifications_released endpoint=%s count=%d", self.endpoint, released)

    def _deliver_due(self) -> float:
        """Send due rows in order; the seconds to wait before the next look."""
        self._release_held()
        while not self._stop.is_set():
            rows = self.outbox.pending(self.endpoint, self.origin)
            if not rows:
                return 1.0 if self.stats.held else 5.0  # held rows: watch the clock for their release
            for row in rows:
                if self._stop.is_set():
                    return 0.0
                wait_s = row.next_attempt_at - time.time()
                if wait_s > 0:
                    return min(wait_s, 5.0)  # head of the line is backing off: later ones wait
                if not self._attempt(row):
                    break  # failed: keep order, look again after its backoff
        return 0.0

    def _attempt(self, row: OutboxRow) -> bool:
        attempts = row.attempts + 1
        final = False
        try:
            req = self.channel.post(row, attempts, time.time())
            resp = self._client.post(req.url, content=req.content, headers=req.headers)
            verdict = self.channel.verdict(resp)
            if verdict.error is None:
                self.outbox.delivered(row.seq, attempts, time.time())
                self.stats.delivered += 1
                self.stats.pending = max(0, self.stats.pending - 1)
                log.info(
                    "event=webhook_delivered endpoint=%s change=%s ticket=%s kind=%s status=%d attempts=%d",
                    self.endpoint,
                    row.change_id,
                    row.ticket_id,
                    row.kind,
                    resp.status_code,
                    attempts,
                )
                return True
            error, final = verdict.error, verdict.final
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        error = self.channel.redact(error)
        self.stats.failed_attempts += 1
        if final or attempts >= self.policy.max_attempts:
            self._bury(row, attempts, error + (" (not retried)" if final else ""))
            return True  # off the head of the line: the next change may go
        delay = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: many gateways do not retry in lock-step
        self.outbox.retry(row.seq, attempts, time.time() + delay, error)
        log.warning(
            "event=webhook_retry endpoint=%s change=%s ticket=%s attempt=%d of=%d retry_in_s=%.2f error=%r",
            self.endpoint,
            row.change_id,
            row.ticket_id,
            attempts,
            self.policy.max_attempts,
            delay,
            error,
        )
        return False

    def _bury(self, row: OutboxRow, attempts: int, error: str) -> None:
        self.outbox.dead(row.seq, attempts, error)
        self.stats.dead += 1
        self.stats.pending = max(0, self.stats.pending - 1)
        url = self.channel.url_for_logs
        log.error(
            "event=webhook_dead_letter endpoint=%s url=%s change=%s ticket=%s attempts=%d error=%r",
            self.endpoint,
            url,
            row.change_id,
            row.ticket_id,
            attempts,
            error,
        )
        if self.dead_letter is not None:
            self.dead_letter(
                orjson.dumps(
                    {
                        "topic": None,
                        "reason": self.channel.dead_letter_reason,
                        "detail": f"{self.name}: {attempts} attempts; last: {error}",
                        "endpoint": self.endpoint,
                        "url": url,
                        "change_id": row.change_id,
                        "ticket_id": row.ticket_id,
                        "kind": row.kind,
                        "attempts": attempts,
                        "failed_at": time.time(),
                        "payload_size": len(row.body),
                        "payload_head": row.body[:DEAD_LETTER_HEAD_BYTES].decode(errors="replace"),
                        "payload_head_encoding": "utf-8",
                    }
                )
            )


def webhook_metrics(notifiers: Iterable[OutboxNotifier]) -> Callable[[], Iterable[Metric]]:
    """A /metrics collector: deliveries, failed attempts, dead letters and outbox depth per endpoint."""
    notifiers = list(notifiers)

    def collect() -> Iterable[Metric]:
        delivered = CounterMetricFamily(
            "gridgate_webhook_delivered", "ticket changes a webhook accepted", labels=["endpoint"]
        )
        failed = CounterMetricFamily(
            "gridgate_webhook_failed_attempts", "webhook attempts that failed (retried)", labels=["endpoint"]
        )
        dead = GaugeMetricFamily(
            "gridgate_webhook_dead_letters", "changes given up on, kept in the outbox", labels=["endpoint"]
        )
        pending = GaugeMetricFamily(
            "gridgate_webhook_pending", "changes waiting in the outbox", labels=["endpoint"]
        )
        held = GaugeMetricFamily(
            "gridgate_webhook_held", "changes held until quiet hours end", labels=["endpoint"]
        )
        for n in notifiers:
            delivered.add_metric([n.endpoint], n.stats.delivered)
            failed.add_metric([n.endpoint], n.stats.failed_attempts)
            dead.add_metric([n.endpoint], n.stats.dead)
            pending.add_metric([n.endpoint], n.stats.pending)
            held.add_metric([n.endpoint], n.stats.held)
        yield from (delivered, failed, dead, pending, held)

    return collect
