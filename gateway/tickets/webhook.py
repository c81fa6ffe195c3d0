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
from typing import Any

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

from gateway.store import make_engine
from gateway.tickets.models import TicketChange
from gridgate.config import WebhookConfig

log = logging.getLogger("gridgate.tickets.webhook")

SIGNATURE_HEADER = "X-Gridgate-Signature"
TIMESTAMP_HEADER = "X-Gridgate-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
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
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def add(self, endpoint: str, origin: str, change: TicketChange, body: bytes, now: float) -> bool:
        """Store one change for an endpoint; False if it is already there (the same change again)."""
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
                        status=PENDING,
                        attempts=0,
                        created_at=now,
                        next_attempt_at=now,
                    )
                )
        except IntegrityError:
            return False
        return True

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


class WebhookNotifier:
    """One endpoint: filters changes, persists them, and delivers them on its own thread."""

    def __init__(
        self,
        cfg: WebhookConfig,
        outbox: WebhookOutbox,
        *,
        origin: str,
        dead_letter: Callable[[bytes], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = f"webhook:{cfg.name}"
        self.outbox = outbox
        self.origin = origin
        self.dead_letter = dead_letter
        self.secret = cfg.secret_value()
        self.url_for_logs = redact_url(cfg.url)
        self.stats = WebhookStats()
        self._client = httpx.Client(timeout=cfg.timeout_s, transport=transport, follow_redirects=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._teams = set(cfg.teams)
        self._categories = set(cfg.categories)
        self._kinds = set(cfg.kinds)

    # ---- the ticket worker's side ----------------------------------------------------------------

    def wants(self, change: TicketChange) -> bool:
        t = change.ticket
        return (
            (not self._teams or (change.target.team or t.team) in self._teams)
            and (not self._categories or t.category in self._categories)
            and (not self._kinds or change.kind.value in self._kinds)
        )

    def notify(self, change: TicketChange) -> None:
        """Persist the change for this endpoint and wake the delivery thread; never sends here."""
        if not self.wants(change):
            return
        body = orjson.dumps(webhook_payload(change))
        if self.outbox.add(self.cfg.name, self.origin, change, body, time.time()):
            self.stats.queued += 1
            self.stats.pending += 1
            self._wake.set()

    # ---- delivery -------------------------------------------------------------------------------

    def start(self) -> WebhookNotifier:
        counts = self.outbox.counts(self.cfg.name)
        self.stats.dead = counts.get(DEAD, 0)
        self.stats.pending = counts.get(PENDING, 0)
        pruned = self.outbox.prune(time.time() - KEEP_DELIVERED_S)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"gridgate-webhook-{self.cfg.name}", daemon=True
            )
            self._thread.start()
        log.info(
            "event=webhook_started endpoint=%s url=%s signed=%s pending=%d dead=%d pruned=%d",
            self.cfg.name,
            self.url_for_logs,
            self.secret is not None,
            self.stats.pending,
            self.stats.dead,
            pruned,
        )
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the request in flight; what is left stays in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.cfg.timeout_s + 2 if timeout is None else timeout)
            self._thread = None
        self._client.close()
        log.info("event=webhook_stopped endpoint=%s stats=%s", self.cfg.name, self.stats)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait_s = self._deliver_due()
            except Exception:  # the database went away a moment: try again shortly
                log.exception("event=webhook_loop_failed endpoint=%s", self.cfg.name)
                wait_s = 1.0
            self._wake.wait(wait_s)
            self._wake.clear()

    def _deliver_due(self) -> float:
        """Send due rows in order; the seconds to wait before the next look."""
        while not self._stop.is_set():
            rows = self.outbox.pending(self.cfg.name, self.origin)
            if not rows:
                return 5.0
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
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "gridgate-webhook/1",
            IDEMPOTENCY_HEADER: row.change_id,
            TIMESTAMP_HEADER: ts,
            "X-Gridgate-Attempt": str(attempts),
            **self.cfg.headers,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, row.body)
        final = False
        try:
            resp = self._client.post(self.cfg.url, content=row.body, headers=headers)
            if 200 <= resp.status_code < 300:
                self.outbox.delivered(row.seq, attempts, time.time())
                self.stats.delivered += 1
                self.stats.pending = max(0, self.stats.pending - 1)
                log.info(
                    "event=webhook_delivered endpoint=%s change=%s ticket=%s kind=%s status=%d attempts=%d",
                    self.cfg.name,
                    row.change_id,
                    row.ticket_id,
                    row.kind,
                    resp.status_code,
                    attempts,
                )
                return True
            error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            final = 400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE_4XX
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.stats.failed_attempts += 1
        if final or attempts >= self.cfg.max_attempts:
            self._bury(row, attempts, error + (" (not retried)" if final else ""))
            return True  # off the head of the line: the next change may go
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: many gateways do not retry in lock-step
        self.outbox.retry(row.seq, attempts, time.time() + delay, error)
        log.warning(
            "event=webhook_retry endpoint=%s change=%s ticket=%s attempt=%d of=%d retry_in_s=%.2f error=%r",
            self.cfg.name,
            row.change_id,
            row.ticket_id,
            attempts,
            self.cfg.max_attempts,
            delay,
            error,
        )
        return False

    def _bury(self, row: OutboxRow, attempts: int, error: str) -> None:
        self.outbox.dead(row.seq, attempts, error)
        self.stats.dead += 1
        self.stats.pending = max(0, self.stats.pending - 1)
        log.error(
            "event=webhook_dead_letter endpoint=%s url=%s change=%s ticket=%s attempts=%d error=%r",
            self.cfg.name,
            self.url_for_logs,
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
                        "reason": "webhook_failed",
                        "detail": f"webhook {self.cfg.name}: {attempts} attempts; last: {error}",
                        "endpoint": self.cfg.name,
                        "url": self.url_for_logs,
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


def webhook_metrics(notifiers: Iterable[WebhookNotifier]) -> Callable[[], Iterable[Metric]]:
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
        for n in notifiers:
            delivered.add_metric([n.cfg.name], n.stats.delivered)
            failed.add_metric([n.cfg.name], n.stats.failed_attempts)
            dead.add_metric([n.cfg.name], n.stats.dead)
            pending.add_metric([n.cfg.name], n.stats.pending)
        yield from (delivered, failed, dead, pending)

    return collect
