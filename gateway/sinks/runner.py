"""The sink runner: the one place that batches, buffers, spools to disk and retries time-series writes.

Like Telegraf's running_output: producers call `add(point)` (cheap: encode, append under a lock);
one background thread writes batches of `batch_size` (or whatever is waiting once
`flush_interval_s` has passed). A retryable failure moves the batch and everything waiting to a
disk spool (SQLite) and retries with capped exponential backoff plus jitter; the spool is always
written before newer points, so order is kept, and a restarted gateway replays it first. The total
backlog (memory + spool) is capped at `buffer_max_points`: beyond it the oldest points are dropped
and counted. A batch the server refuses as bad data is logged and counted, never retried.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.sinks.base import Sink, SinkError, short
from gateway.sinks.influx import InfluxV1Sink, InfluxV2Sink
from gateway.sinks.sqlite import SQLiteSink
from gridgate.config import InfluxConfig, StorageConfig
from gridgate.models import Point

__all__ = ["DiskSpool", "SinkRunner", "backoff_delay", "build_sink"]

log = logging.getLogger("gridgate.sinks")

#: an unexpected exception (a bug, not a server answer) is retried this often before the batch is dropped
_MAX_UNEXPECTED = 3


def build_sink(influx: InfluxConfig, storage: StorageConfig) -> Sink:
    """The sink the configuration names: InfluxDB v1, v2, or the embedded SQLite store (`api: none`)."""
    if influx.api == "v1":
        return InfluxV1Sink(
            influx.url,
            influx.database,
            retention_policy=influx.retention_policy,
            username=influx.username,
            password=influx.password_secret(),
            timeout_s=influx.timeout_s,
        )
    if influx.api == "v2":
        token = influx.token_secret()
        if token is None and influx.username:  # InfluxDB 1.8+ compatibility API takes "user:password"
            token = f"{influx.username}:{influx.password_secret() or ''}"
        return InfluxV2Sink(
            influx.url, token=token, org=influx.org, bucket=influx.bucket, timeout_s=influx.timeout_s
        )
    return SQLiteSink(storage.timeseries_db)


def backoff_delay(
    attempt: int, base_s: float = 0.5, cap_s: float = 30.0, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (1-based): base*2^(n-1), capped, jittered to 50-100 %."""
    exp = min(max(attempt - 1, 0), 62)
    delay = min(cap_s, base_s * (2.0**exp))
    return delay * (0.5 + 0.5 * rand())


class DiskSpool:
    """A FIFO of encoded lines in SQLite (WAL), kept per sink format so a config change cannot mix them."""

    def __init__(self, path: str | Path, fmt: str) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, fmt TEXT NOT NULL,"
            " line TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS spool_fmt_id ON spool (fmt, id)")

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM spool WHERE fmt = ?", (self.fmt,)).fetchone()[0])

    def other_formats(self) -> dict[str, int]:
        """Lines spooled for another kind of sink (left alone, reported at start)."""
        rows = self._db.execute("SELECT fmt, COUNT(*) FROM spool WHERE fmt != ? GROUP BY fmt", (self.fmt,))
        return {fmt: int(n) for fmt, n in rows}

    def push(self, lines: Iterable[str]) -> None:
        fmt = self.fmt
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT INTO spool (fmt, line) VALUES (?, ?)", ((fmt, line) for line in lines)
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def peek(self, n: int) -> list[tuple[int, str]]:
        """The oldest `n` lines with their ids, still spooled."""
        return self._db.execute(
            "SELECT id, line FROM spool WHERE fmt = ? ORDER BY id LIMIT ?", (self.fmt, n)
        ).fetchall()

    def delete_through(self, last_id: int) -> None:
        self._db.execute("DELETE FROM spool WHERE fmt = ? AND id <= ?", (self.fmt, last_id))

    def drop_oldest(self, n: int) -> int:
        cur = self._db.execute(
            "DELETE FROM spool WHERE id IN (SELECT id FROM spool WHERE fmt = ? ORDER BY id LIMIT ?)",
            (self.fmt, n),
        )
        return cur.rowcount

    def close(self) -> None:
        self._db.close()


class SinkRunner:
    """Batches points into a Sink from a background thread, with retry, disk spool and a bounded backlog."""

    def __init__(
        self,
        sink: Sink,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
        buffer_max_points: int = 2_000_000,
        spool_path: str | Path | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.buffer_max_points = buffer_max_points
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.points_dropped = 0  # backlog over buffer_max_points: oldest dropped
        self.points_rejected = 0  # not encodable, or refused by the server as bad data
        self.last_error: str | None = None

        self._encode = sink.encode
        self._buf: deque[str] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._inflight = 0
        self._attempt = 0  # consecutive failed writes; 0 = healthy
        self._unexpected = 0
        self._kick = False
        self._force = False
        self._stopping = False
        self._closed = False
        self._last_flush = time.monotonic()
        self._thread: threading.Thread | None = None
        self._shutdown_deadline: float | None = None

        self._spool = DiskSpool(spool_path, sink.format) if spool_path is not None else None
        self._spooled = self._spool.count() if self._spool else 0
        if self._spool:
            others = self._spool.other_formats()
            if others or self._spooled:
                log.info(
                    "sink_spool_found path=%s format=%s lines=%d other_formats=%s",
                    self._spool.path,
                    sink.format,
                    self._spooled,
                    others or "-",
                )
        self.metrics.gauge("buffer_depth", lambda: float(self.buffer_depth))
        self.metrics.gauge("points_dropped", lambda: float(self.points_dropped))
        self.metrics.gauge("points_rejected", lambda: float(self.points_rejected))

    @classmethod
    def from_config(
        cls,
        influx: InfluxConfig,
        storage: StorageConfig,
        metrics: GatewayMetrics | None = None,
        sink: Sink | None = None,
    ) -> SinkRunner:
        """A runner over `build_sink(...)` with the configured batching, retry and spool."""
        sink = sink if sink is not None else build_sink(influx, storage)
        # the embedded SQLite sink is a local file already: a second file would not help it
        spool = None if isinstance(sink, SQLiteSink) else storage.spool_db
        return cls(
            sink,
            batch_size=influx.batch_size,
            flush_interval_s=influx.flush_interval_s,
            retry_max_s=influx.retry_max_s,
            buffer_max_points=influx.buffer_max_points,
            spool_path=spool,
            metrics=metrics,
        )

    # -- producers (any thread) ---------------------------------------------------------------
    def add(self, point: Point) -> bool:
        """Queue one point; False when it cannot be stored (no writable field), which is counted."""
        line = self._encode(point)
        if line is None:
            self._reject(point)
            return False
        buf = self._buf
        with self._lock:
            if len(buf) >= self.buffer_max_points:
                buf.popleft()
                self.points_dropped += 1
            buf.append(line)
            n = len(buf)
        if n % self.batch_size == 0:
            self._wake.set()
        return True

    def add_many(self, points: Iterable[Point]) -> int:
        """Queue several points under one lock; returns how many were accepted."""
        encode = self._encode
        lines = []
        for p in points:
            line = encode(p)
            if line is None:
                self._reject(p)
            else:
                lines.append(line)
        if not lines:
            return 0
        buf = self._buf
        with self._lock:
            buf.extend(lines)
            over = len(buf) - self.buffer_max_points
            for _ in range(max(over, 0)):
                buf.popleft()
            if over > 0:
                self.points_dropped += over
            n = len(buf)
        if n >= self.batch_size:
            self._wake.set()
        return len(lines)

    def _reject(self, point: Point) -> None:
        self.points_rejected += 1
        if self.points_rejected == 1 or self.points_rejected % 1000 == 0:
            log.warning(
                "sink_point_rejected measurement=%s reason=no_writable_field rejected_total=%d",
                point.measurement,
                self.points_rejected,
            )

    # -- state --------------------------------------------------------------------------------
    @property
    def buffer_depth(self) -> int:
        """Points not yet confirmed by the sink: in memory, in flight and spooled."""
        return len(self._buf) + self._inflight + self._spooled

    @property
    def spooled(self) -> int:
        return self._spooled

    @property
    def healthy(self) -> bool:
        """False while writes are failing (the runner is backing off)."""
        return self._attempt == 0

    def status(self) -> dict[str, Any]:
        """For health endpoints: no URLs with credentials, no tokens."""
        return {
            "sink": self.sink.url,
            "healthy": self.healthy,
            "failed_attempts": self._attempt,
            "last_error": self.last_error,
            "buffer_depth": self.buffer_depth,
            "spooled": self._spooled,
            "points_dropped": self.points_dropped,
            "points_rejected": self.points_rejected,
        }

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> SinkRunner:
        """Start the writer thread; what is spooled from an earlier run is written first."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gridgate-sink", daemon=True)
            self._thread.start()
            log.info(
                "sink_started url=%s batch_size=%d flush_interval_s=%s spooled=%d",
                self.sink.url,
                self.batch_size,
                self.flush_interval_s,
                self._spooled,
            )
            if self._spooled:
                self._wake.set()
        return self

    def __enter__(self) -> SinkRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything pending now (retrying at once if backing off); True if it all got stored."""
        deadline = time.monotonic() + timeout
        self._kick = True  # once: a failing server still gets the backoff between later tries
        while True:
            if self.buffer_depth == 0:
                return True
            if self._thread is None or not self._thread.is_alive() or time.monotonic() >= deadline:
                return False
            self._force = True
            self._wake.set()
            time.sleep(0.01)

    def close(self, timeout: float = 30.0) -> None:
        """Stop: write what is pending if the sink is healthy, spool the rest; nothing queued is lost."""
        if self._closed:
            return
        self._closed = True
        self._shutdown_deadline = time.monotonic() + timeout * 0.8
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error(
                    "sink_close_timeout url=%s in_memory=%d in_flight=%d",
                    self.sink.url,
                    len(self._buf),
                    self._inflight,
                )
                return
        else:
            self._finish()
        log.info(
            "sink_stopped url=%s written=%d spooled=%d dropped=%d rejected=%d",
            self.sink.url,
            self.metrics.points_written,
            self._spooled,
            self.points_dropped,
            self.points_rejected,
        )

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            with self._lock:
                waiting = len(self._buf)
            if self._spooled or waiting >= self.batch_size:
                timeout = 0.0
            elif waiting:
                timeout = max(0.0, self._last_flush + self.flush_interval_s - time.monotonic())
            else:
                timeout = self.flush_interval_s
            if timeout > 0:
                self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping:
                break
            try:
                self._drain(final=False)
            except Exception as exc:  # a bug must not stop the writer: log, back off, go on
                log.exception("sink_runner_error url=%s error=%s", self.sink.url, type(exc).__name__)
                self._attempt += 1
                self._backoff()
        self._finish()

    def _finish(self) -> None:
        try:
            if self._attempt == 0:
                self._drain(final=True)
            self._spill()
            if self._buf:
                log.error(
                    "sink_points_lost url=%s lines=%d reason=no_spool_and_sink_failing",
                    self.sink.url,
                    len(self._buf),
                )
        except Exception as exc:
            log.exception("sink_close_error url=%s error=%s", self.sink.url, type(exc).__name__)
        finally:
            if self._spool is not None:
                self._spool.close()
            try:
                self.sink.close()
            except Exception as exc:
                log.warning("sink_close_error url=%s error=%s", self.sink.url, type(exc).__name__)

    def _drain(self, final: bool) -> None:
        """Write the spool, then memory, in batches, until empty, a failure, or (not final) a stop."""
        deadline = self._shutdown_deadline if final else None
        while True:
            if self._stopping and not final:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if self._spooled and self._spool is not None:
                rows = self._spool.peek(self.batch_size)
                if not rows:
                    self._spooled = self._spool.count()
                    continue
                if self._write([line for _, line in rows], source="spool"):
                    self._spool.delete_through(rows[-1][0])
                    self._spooled = max(0, self._spooled - len(rows))
                    self._last_flush = time.monotonic()
                    continue
                if final:
                    return
                self._spill()
                self._backoff()
                continue
            force = final or self._force or time.monotonic() - self._last_flush >= self.flush_interval_s
            with self._lock:
                n = len(self._buf)
                if n == 0 or (n < self.batch_size and not force):
                    if n == 0:
                        self._force = False
                    return
                take = min(n, self.batch_size)
                popleft = self._buf.popleft
                batch = [popleft() for _ in range(take)]
                self._inflight = take
            ok = self._write(batch, source="memory")
            if ok:
                self._inflight = 0
                self._last_flush = time.monotonic()
                continue
            # retryable: the batch is the oldest pending data; keep it ahead of everything newer
            if self._spool is not None:
                self._spool.push(batch)
                self._spooled += len(batch)
                self._inflight = 0
            else:
                with self._lock:
                    self._buf.extendleft(reversed(batch))
                    self._inflight = 0
            if final:
                return
            self._spill()
            self._backoff()

    def _write(self, lines: list[str], source: str) -> bool:
        """One write attempt. True: done with the batch (stored or refused); False: retry later."""
        try:
            self.sink.write(lines)
        except SinkError as exc:
            self.metrics.write_errors += 1
            self.last_error = str(exc)
            if exc.retryable:
                self._attempt += 1
                log.warning(
                    "sink_write_failed url=%s status=%s lines=%d source=%s attempt=%d backlog=%d error=%s",
                    exc.url or self.sink.url,
                    exc.status or "-",
                    len(lines),
                    source,
                    self._attempt,
                    self.buffer_depth,
                    short(str(exc), 300),
                )
                return False
            rejected = len(lines) - exc.written
            self.metrics.points_written += exc.written
            self.points_rejected += rejected
            self._recovered()
            log.error(
                "sink_batch_rejected url=%s status=%s lines=%d written=%d rejected=%d error=%s",
                exc.url or self.sink.url,
                exc.status or "-",
                len(lines),
                exc.written,
                rejected,
                short(str(exc), 1000),
            )
            return True
        except Exception as exc:
            self.metrics.write_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._unexpected += 1
            if self._unexpected < _MAX_UNEXPECTED:
                self._attempt += 1
                log.exception(
                    "sink_write_error url=%s lines=%d attempt=%d error=%s",
                    self.sink.url,
                    len(lines),
                    self._attempt,
                    type(exc).__name__,
                )
                return False
            self.points_rejected += len(lines)
            self._unexpected = 0
            log.error(
                "sink_batch_dropped url=%s lines=%d reason=unexpected_error error=%s",
                self.sink.url,
                len(lines),
                short(self.last_error, 300),
            )
            return True
        self.metrics.points_written += len(lines)
        self._recovered()
        return True

    def _recovered(self) -> None:
        self._unexpected = 0
        if self._attempt:
            log.info(
                "sink_recovered url=%s failed_attempts=%d backlog=%d",
                self.sink.url,
                self._attempt,
                self.buffer_depth,
            )
            self._attempt = 0

    def _spill(self) -> None:
        """Move what waits in memory to the spool (behind what is there), then enforce the backlog cap."""
        if self._spool is None:
            return
        with self._lock:
            if not self._buf:
                lines: list[str] = []
            else:
                lines = list(self._buf)
                self._inflight += len(lines)  # counted while moving, so buffer_depth never dips
                self._buf.clear()
        if lines:
            try:
                self._spool.push(lines)
            except sqlite3.Error as exc:
                with self._lock:
                    self._buf.extendleft(reversed(lines))
                    self._inflight -= len(lines)
                log.error("sink_spool_failed path=%s lines=%d error=%s", self._spool.path, len(lines), exc)
                return
            self._spooled += len(lines)
            with self._lock:
                self._inflight -= len(lines)
        over = self.buffer_depth - self.buffer_max_points
        if over > 0:
            dropped = self._spool.drop_oldest(over)
            self._spooled -= dropped
            self.points_dropped += dropped
            log.warning(
                "sink_backlog_full url=%s dropped_oldest=%d dropped_total=%d max=%d",
                self.sink.url,
                dropped,
                self.points_dropped,
                self.buffer_max_points,
            )

    def _backoff(self) -> None:
        """Wait before the next retry, spilling new points to disk meanwhile; `flush`/`close` cut it short."""
        delay = backoff_delay(self._attempt, self.retry_base_s, self.retry_max_s)
        log.info(
            "sink_retry_scheduled url=%s attempt=%d retry_in_s=%.2f", self.sink.url, self._attempt, delay
        )
        deadline = time.monotonic() + delay
        self._kick = False
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(min(remaining, self.flush_interval_s))
            self._wake.clear()
            self._spill()
            if self._kick:
                self._kick = False
                return
