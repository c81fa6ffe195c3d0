"""The sink runner: the one place that batches, buffers, spools to disk and retries time-series writes.

Like Telegraf's running_output: producers call `add(point)` (cheap: encode, append under a lock);
one background thread writes batches of `batch_size` (or whatever is waiting once
`flush_interval_s` has passed). A retryable failure moves the batch and everything waiting to a
disk spool (SQLite) and retries with capped exponential backoff plus jitter; the spool is always
written before newer points, so order is kept, and a restarted gateway replays it first.

The backlog (memory + spool) is capped at `buffer_max_points`; beyond it the oldest `telemetry`
and `edge_stats` points are dropped first, `events` and `tickets` points only when nothing else is
left; drops are counted. A batch the server refuses as bad data is split until every good point is
stored; each refused point is counted, logged and handed to `on_refused` (the gateway publishes it
on the dead-letter topic). `added`/`durable`/`persist` tell a caller which points are safe.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from gateway.metrics import GatewayMetrics
from gateway.sinks.base import Sink, SinkError, redact, short
from gateway.sinks.influx import InfluxV1Sink, InfluxV2Sink
from gateway.sinks.sqlite import SQLiteSink
from gridgate.config import InfluxConfig, StorageConfig
from gridgate.models import Point

__all__ = [
    "KEEP_MEASUREMENTS",
    "DiskSpool",
    "SinkRunner",
    "backoff_delay",
    "build_sink",
    "process_share",
    "refused_dead_letter",
]

log = logging.getLogger("gridgate.sinks")

#: measurements kept ahead of the others when the backlog is full: alarms and tickets are the record
KEEP_MEASUREMENTS = frozenset({"events", "tickets"})
#: an unexpected exception (a bug, not a server answer) is retried this often before the batch is dropped
_MAX_UNEXPECTED = 3
#: how long after dropping points the runner still reports it (health says `degraded` meanwhile)
DROPPED_RECENTLY_S = 300.0
#: at most one log line per this many seconds about points dropped from memory
_DROP_LOG_EVERY_S = 10.0

OnRefused = Callable[[str, str], None]


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


def process_share(buffer_max_points: int, processes: int) -> int:
    """Each of `processes` runners (gateway + workers) keeps `buffer_max_points // processes` points,
    so that together they never hold more than `buffer_max_points`."""
    return max(1, buffer_max_points // max(1, processes))


def refused_dead_letter(line: str, reason: str) -> bytes:
    """The dead-letter JSON for a point the database refused: its encoded line and the database's word."""
    return orjson.dumps(
        {
            "topic": None,
            "reason": "sink_refused",
            "detail": reason,
            "line": line,
            "received_at": time.time(),
        }
    )


def backoff_delay(
    attempt: int, base_s: float = 0.5, cap_s: float = 30.0, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (1-based): base*2^(n-1), capped, jittered to 50-100 %."""
    exp = min(max(attempt - 1, 0), 62)
    delay = min(cap_s, base_s * (2.0**exp))
    return delay * (0.5 + 0.5 * rand())


class DiskSpool:
    """A FIFO of encoded lines in SQLite (WAL), kept per sink format so a config change cannot mix them.

    Each line has a `keep` flag (an `events` or `tickets` point): `push(..., drop=n)` drops the oldest
    lines without it first. Thread-safe: every method is one transaction under a lock.
    """

    def __init__(self, path: str | Path, fmt: str) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, fmt TEXT NOT NULL,"
            " line TEXT NOT NULL, keep INTEGER NOT NULL DEFAULT 0)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(spool)")}
        if "keep" not in columns:  # a spool written before the keep flag: its lines are plain
            self._db.execute("ALTER TABLE spool ADD COLUMN keep INTEGER NOT NULL DEFAULT 0")
        self._db.execute("CREATE INDEX IF NOT EXISTS spool_fmt_id ON spool (fmt, id)")
        self._db.execute("CREATE INDEX IF NOT EXISTS spool_fmt_keep_id ON spool (fmt, keep, id)")

    def count(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM spool WHERE fmt = ?", (self.fmt,)).fetchone()[0]
            )

    def other_formats(self) -> dict[str, int]:
        """Lines spooled for another kind of sink (left alone, reported at start)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT fmt, COUNT(*) FROM spool WHERE fmt != ? GROUP BY fmt", (self.fmt,)
            ).fetchall()
        return {fmt: int(n) for fmt, n in rows}

    def push(self, lines: Sequence[tuple[str, bool]], front: bool = False, drop: int = 0) -> tuple[int, int]:
        """Append `(line, keep)` rows behind what is spooled, or (`front`) ahead of all of it; then,
        in the same transaction, drop the `drop` oldest lines, plain ones first; returns the
        (plain, keep) counts dropped."""
        fmt = self.fmt
        with self._lock, self._transaction():
            if front:
                lowest = self._db.execute("SELECT MIN(id) FROM spool").fetchone()[0]
            if front and lowest is not None:
                first = int(lowest) - len(lines)
                self._db.executemany(
                    "INSERT INTO spool (id, fmt, line, keep) VALUES (?, ?, ?, ?)",
                    ((first + i, fmt, line, keep) for i, (line, keep) in enumerate(lines)),
                )
            else:
                self._db.executemany(
                    "INSERT INTO spool (fmt, line, keep) VALUES (?, ?, ?)",
                    ((fmt, line, keep) for line, keep in lines),
                )
            return self._drop(drop) if drop > 0 else (0, 0)

    def peek(self, n: int) -> list[tuple[int, str]]:
        """The oldest `n` lines with their ids, still spooled."""
        with self._lock:
            return self._db.execute(
                "SELECT id, line FROM spool WHERE fmt = ? ORDER BY id LIMIT ?", (self.fmt, n)
            ).fetchall()

    def delete_through(self, last_id: int) -> int:
        with self._lock:
            return self._db.execute(
                "DELETE FROM spool WHERE fmt = ? AND id <= ?", (self.fmt, last_id)
            ).rowcount

    def delete_ids(self, ids: Iterable[int]) -> int:
        with self._lock, self._transaction():
            return sum(self._db.execute("DELETE FROM spool WHERE id = ?", (i,)).rowcount for i in ids)

    def _drop(self, n: int) -> tuple[int, int]:
        """Delete the `n` oldest lines, plain ones first; returns (plain, keep) counts deleted."""
        sql = (
            "DELETE FROM spool WHERE id IN"
            " (SELECT id FROM spool WHERE fmt = ? AND keep = ? ORDER BY id LIMIT ?)"
        )
        plain = self._db.execute(sql, (self.fmt, 0, n)).rowcount
        kept = self._db.execute(sql, (self.fmt, 1, n - plain)).rowcount if plain < n else 0
        return plain, kept

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SinkRunner:
    """Batches points into a Sink from a background thread, with retry, disk spool and a bounded backlog.

    Every point added gets a sequence number (0, 1, 2...); `added` is the next one and `durable`
    the first one not yet durable (written, spooled, refused or dropped), so points
    `0..durable-1` survive a crash of this process.
    """

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
        on_refused: OnRefused | None = None,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.buffer_max_points = buffer_max_points
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.on_refused = on_refused
        self.points_dropped = 0  # backlog over buffer_max_points: oldest dropped
        self.points_rejected = 0  # not encodable, or refused by the server as bad data
        self.last_error: str | None = None

        self._encode = sink.encode
        # (sequence number, encoded line, keep): FIFO
        self._buf: deque[tuple[int, str, bool]] = deque()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)  # notified when `durable` moves on
        self._spill_lock = threading.Lock()  # one mover of memory into the spool at a time
        self._wake = threading.Event()
        self._added = 0
        self._inflight = 0  # lines taken from memory by the writer, not yet settled
        self._inflight_seq: int | None = None
        self._moving = 0  # lines on their way from memory to the spool
        self._moving_seq: int | None = None
        self._attempt = 0  # consecutive failed writes; 0 = healthy
        self._unexpected = 0
        self._last_drop: float | None = None
        self._drop_logged = 0.0
        self._kick = False
        self._force_upto = 0  # points with a lower seq are written now, not at the next flush interval
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
                    "event=sink_spool_found path=%s format=%s lines=%d other_formats=%r",
                    self._spool.path,
                    sink.format,
                    self._spooled,
                    others or "-",
                )
        self.metrics.gauge("buffer_depth", lambda: float(self.buffer_depth))
        self.metrics.gauge("points_dropped", lambda: float(self.points_dropped))
        self.metrics.gauge("points_rejected", lambda: float(self.points_rejected))
        self.metrics.gauge("points_spooled", lambda: float(self._spooled))
        self.metrics.gauge("sink_failed_attempts", lambda: float(self._attempt))
        self.metrics.gauge("sink_dropped_recently", lambda: float(self.dropped_recently))

    @classmethod
    def from_config(
        cls,
        influx: InfluxConfig,
        storage: StorageConfig,
        metrics: GatewayMetrics | None = None,
        sink: Sink | None = None,
        *,
        processes: int = 1,
        spool_path: Path | None = None,
        dead_letter: Callable[[bytes], None] | None = None,
    ) -> SinkRunner:
        """A runner over `build_sink(...)` with the configured batching, retry and spool.

        `processes`: how many runners share `buffer_max_points` (the gateway and its workers:
        `ingest.workers + 1`); each keeps its share. `spool_path`: defaults to `storage.spool_db`.
        `dead_letter`: publishes the JSON of each point the database refuses.
        """
        sink = sink if sink is not None else build_sink(influx, storage)
        # the embedded SQLite sink is a local file already: a second file would not help it
        spool = None if isinstance(sink, SQLiteSink) else (spool_path or storage.spool_db)
        on_refused = None
        if dead_letter is not None:
            publish = dead_letter

            def on_refused(line: str, reason: str) -> None:
                publish(refused_dead_letter(line, reason))

        return cls(
            sink,
            batch_size=influx.batch_size,
            flush_interval_s=influx.flush_interval_s,
            retry_max_s=influx.retry_max_s,
            buffer_max_points=process_share(influx.buffer_max_points, processes),
            spool_path=spool,
            metrics=metrics,
            on_refused=on_refused,
        )

    # -- producers (any thread) ---------------------------------------------------------------
    def add(self, point: Point) -> bool:
        """Queue one point; False when it cannot be stored (no writable field), which is counted."""
        line = self._encode(point)
        if line is None:
            with self._lock:
                self._added += 1
            self._reject(point)
            return False
        keep = point.measurement in KEEP_MEASUREMENTS
        buf = self._buf
        with self._lock:
            seq = self._added
            self._added = seq + 1
            buf.append((seq, line, keep))
            n = len(buf)
            dropped = self._drop_memory(n - self.buffer_max_points) if n > self.buffer_max_points else 0
        if dropped:
            self._log_memory_drop()
        if n % self.batch_size == 0:
            self._wake.set()
        return True

    def add_many(self, points: Iterable[Point]) -> int:
        """Queue several points under one lock; returns how many were accepted."""
        encode = self._encode
        keep_set = KEEP_MEASUREMENTS
        lines: list[tuple[str, bool]] = []
        bad: list[Point] = []
        for p in points:
            line = encode(p)
            if line is None:
                bad.append(p)
            else:
                lines.append((line, p.measurement in keep_set))
        buf = self._buf
        with self._lock:
            seq = self._added
            self._added = seq + len(lines) + len(bad)
            buf.extend((seq + i, line, keep) for i, (line, keep) in enumerate(lines))
            n = len(buf)
            dropped = self._drop_memory(n - self.buffer_max_points) if n > self.buffer_max_points else 0
        for p in bad:
            self._reject(p)
        if dropped:
            self._log_memory_drop()
        if n >= self.batch_size:
            self._wake.set()
        return len(lines)

    def _drop_memory(self, n: int) -> int:
        """With the lock held: drop the `n` oldest points in memory, plain ones before keep ones."""
        buf = self._buf
        for _ in range(n):
            if not buf[0][2]:
                buf.popleft()
                continue
            for i, item in enumerate(buf):
                if not item[2]:
                    del buf[i]
                    break
            else:
                buf.popleft()
        self.points_dropped += n
        self._last_drop = time.monotonic()
        self._progress.notify_all()
        return n

    def _log_memory_drop(self) -> None:
        now = time.monotonic()
        if now - self._drop_logged >= _DROP_LOG_EVERY_S:
            self._drop_logged = now
            log.warning(
                "event=sink_backlog_full url=%s where=memory dropped_total=%d max=%d fix=%r",
                self.sink.url,
                self.points_dropped,
                self.buffer_max_points,
                "bring the database back, or raise influx.buffer_max_points",
            )

    def _reject(self, point: Point) -> None:
        self.points_rejected += 1
        if self.points_rejected == 1 or self.points_rejected % 1000 == 0:
            log.warning(
                "event=sink_point_rejected measurement=%s reason=no_writable_field rejected_total=%d",
                point.measurement,
                self.points_rejected,
            )

    # -- state --------------------------------------------------------------------------------
    @property
    def added(self) -> int:
        """Points given to add()/add_many() so far, unencodable ones included (monotonic)."""
        return self._added

    @property
    def durable(self) -> int:
        """How many of the points added so far, counted from the first, are durable: written,
        spooled on disk, or refused/dropped and counted. Never more than `added`."""
        with self._lock:
            return self._durable()

    def _durable(self) -> int:
        """With the lock held: the sequence number of the oldest point not yet durable."""
        first = self._added
        if self._buf:
            first = min(first, self._buf[0][0])
        if self._inflight_seq is not None:
            first = min(first, self._inflight_seq)
        if self._moving_seq is not None:
            first = min(first, self._moving_seq)
        return first

    @property
    def buffer_depth(self) -> int:
        """Points not yet confirmed by the sink: in memory, in flight and spooled."""
        return len(self._buf) + self._inflight + self._moving + self._spooled

    @property
    def spooled(self) -> int:
        return self._spooled

    @property
    def healthy(self) -> bool:
        """False while writes are failing (the runner is backing off)."""
        return self._attempt == 0

    @property
    def dropped_recently(self) -> bool:
        """Whether points were dropped (backlog full) within the last DROPPED_RECENTLY_S seconds."""
        last = self._last_drop
        return last is not None and time.monotonic() - last < DROPPED_RECENTLY_S

    def status(self) -> dict[str, Any]:
        """For health endpoints: no URLs with credentials, no tokens."""
        return {
            "sink": self.sink.url,
            "state": "healthy" if self.healthy else "backing_off",
            "failed_attempts": self._attempt,
            "last_error": self.last_error,
            "buffer_depth": self.buffer_depth,
            "spooled": self._spooled,
            "points_dropped": self.points_dropped,
            "dropped_recently": self.dropped_recently,
            "points_rejected": self.points_rejected,
            "points_refused": self.metrics.points_refused,
        }

    # -- durability ---------------------------------------------------------------------------
    def persist(self, timeout_s: float) -> bool:
        """Make every point added so far durable now; True once it is, False after `timeout_s`.

        A healthy writer is asked to write what waits in memory at once; if it does not within
        `flush_interval_s` (or is backing off), the memory is moved to the disk spool, behind what
        is there (one SQLite transaction), and the writer replays it in order. Without a spool (the
        embedded SQLite sink) the writer is asked to write it, retrying at once if backing off.
        Thread-safe; cheap when nothing is pending.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            target = self._added
            if self._durable() >= target:
                return True
        writer = self._thread is not None and self._thread.is_alive() and not self._stopping
        if writer and self._attempt == 0:
            self._force(target)
            prompt = min(deadline, time.monotonic() + self.flush_interval_s)
            if self._await(target, prompt, while_healthy=True):
                return True
        if self._spool is not None:
            self._spill()
        elif writer:
            self._kick = True
            self._force(target)
        else:
            return self.durable >= target
        return self._await(target, deadline)

    def _force(self, target: int) -> None:
        """Have the writer write every point below seq `target` now (only those: later points wait
        for a full batch or the flush interval, so a checkpoint does not shrink every batch)."""
        self._force_upto = max(self._force_upto, target)
        self._wake.set()

    def _forced(self) -> bool:
        """The oldest point in memory is one a caller is waiting for (under `_lock`)."""
        return bool(self._buf) and self._buf[0][0] < self._force_upto

    def _await(self, target: int, deadline: float, while_healthy: bool = False) -> bool:
        """Wait until `durable >= target`; False at the deadline (or, `while_healthy`, on a failure)."""
        with self._progress:
            while self._durable() < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (while_healthy and self._attempt):
                    return False
                self._progress.wait(remaining)
            return True

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> SinkRunner:
        """Start the writer thread; what is spooled from an earlier run is written first."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gridgate-sink", daemon=True)
            self._thread.start()
            log.info(
                "event=sink_started url=%s batch_size=%d flush_interval_s=%s buffer_max_points=%d spooled=%d",
                self.sink.url,
                self.batch_size,
                self.flush_interval_s,
                self.buffer_max_points,
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
            self._force(self._added)
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
                    "event=sink_close_timeout url=%s in_memory=%d in_flight=%d timeout_s=%s",
                    self.sink.url,
                    len(self._buf),
                    self._inflight,
                    timeout,
                )
                return
        else:
            self._finish()
        log.info(
            "event=sink_stopped url=%s written=%d spooled=%d dropped=%d rejected=%d refused=%d",
            self.sink.url,
            self.metrics.points_written,
            self._spooled,
            self.points_dropped,
            self.points_rejected,
            self.metrics.points_refused,
        )

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            with self._lock:
                waiting = len(self._buf)
                forced = self._forced()
            if self._spooled or waiting >= self.batch_size or forced:
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
                log.exception("event=sink_runner_error url=%s error=%s", self.sink.url, type(exc).__name__)
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
                    "event=sink_points_lost url=%s lines=%d reason=no_spool_and_sink_failing",
                    self.sink.url,
                    len(self._buf),
                )
        except Exception as exc:
            log.exception("event=sink_close_error url=%s error=%s", self.sink.url, type(exc).__name__)
        finally:
            if self._spool is not None:
                self._spool.close()
            try:
                self.sink.close()
            except Exception as exc:
                log.warning("event=sink_close_error url=%s error=%s", self.sink.url, type(exc).__name__)

    def _drain(self, final: bool) -> None:
        """Write the spool, then memory, in batches, until empty, a failure, or (not final) a stop."""
        deadline = self._shutdown_deadline if final else None
        spool = self._spool
        while True:
            if self._stopping and not final:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            # deciding and taking under the spill lock: no newer line can reach the spool meanwhile
            with self._spill_lock, self._lock:
                from_spool = spool is not None and self._spooled > 0
                if not from_spool:
                    n = len(self._buf)
                    force = (
                        final
                        or self._forced()
                        or time.monotonic() - self._last_flush >= self.flush_interval_s
                    )
                    if n == 0 or (n < self.batch_size and not force):
                        return
                    take = min(n, self.batch_size)
                    popleft = self._buf.popleft
                    items = [popleft() for _ in range(take)]
                    self._inflight = take
                    self._inflight_seq = items[0][0]
            if from_spool:
                assert spool is not None
                if self._replay(spool):
                    continue
            elif self._write_memory(items):
                continue
            if final:
                return
            self._spill()
            self._backoff()

    def _replay(self, spool: DiskSpool) -> bool:
        """Write the oldest spooled batch; False when some of it must wait for a retry."""
        rows = spool.peek(self.batch_size)
        if not rows:
            with self._lock:
                self._spooled = spool.count()
            return True
        undone = self._deliver([line for _, line in rows], source="spool")
        if len(undone) < len(rows):
            if undone:
                waiting = set(undone)
                deleted = spool.delete_ids(row[0] for i, row in enumerate(rows) if i not in waiting)
            else:
                deleted = spool.delete_through(rows[-1][0])
            with self._lock:
                self._spooled = max(0, self._spooled - deleted)
            self._last_flush = time.monotonic()
        return not undone

    def _write_memory(self, items: list[tuple[int, str, bool]]) -> bool:
        """Write a batch taken from memory; what must wait goes to the head of the spool (it is the
        oldest pending data), or back to the head of memory without a spool. False: retry later."""
        undone = self._deliver([line for _, line, _ in items], source="memory")
        left = [items[i] for i in undone]
        spooled = False
        if left and self._spool is not None:
            try:
                self._spool.push([(line, keep) for _, line, keep in left], front=True)
                spooled = True
            except sqlite3.Error as exc:
                log.error(
                    "event=sink_spool_failed path=%s lines=%d error=%r", self._spool.path, len(left), str(exc)
                )
        with self._progress:
            if spooled:
                self._spooled += len(left)
            elif left:
                self._buf.extendleft(reversed(left))
            self._inflight = 0
            self._inflight_seq = None
            self._progress.notify_all()
        if not left:
            self._last_flush = time.monotonic()
        return not left

    def _deliver(self, lines: list[str], source: str) -> list[int]:
        """One write attempt; returns the indices of the lines to retry later (none: all settled,
        stored or refused). A refused batch is split until each refused line is found."""
        try:
            self.sink.write(lines)
        except SinkError as exc:
            self.metrics.write_errors += 1
            self.last_error = redact(str(exc))
            if not exc.retryable:
                self._recovered()  # the server answered: it is up
                return self._isolate(lines, exc, source)
            self._attempt += 1
            log.warning(
                "event=sink_write_failed url=%s status=%s lines=%d source=%s attempt=%d backlog=%d error=%r",
                exc.url or self.sink.url,
                exc.status or "-",
                len(lines),
                source,
                self._attempt,
                self.buffer_depth,
                short(self.last_error, 300),
            )
            return list(range(len(lines)))
        except Exception as exc:
            self.metrics.write_errors += 1
            self.last_error = redact(f"{type(exc).__name__}: {exc}")
            self._unexpected += 1
            if self._unexpected < _MAX_UNEXPECTED:
                self._attempt += 1
                log.exception(
                    "event=sink_write_error url=%s lines=%d attempt=%d error=%s",
                    self.sink.url,
                    len(lines),
                    self._attempt,
                    type(exc).__name__,
                )
                return list(range(len(lines)))
            self._unexpected = 0
            log.error(
                "event=sink_batch_dropped url=%s lines=%d reason=unexpected_error error=%r",
                self.sink.url,
                len(lines),
                short(self.last_error, 300),
            )
            for line in lines:
                self._refuse(line, f"{self.sink.url}: unexpected error: {short(self.last_error, 300)}", None)
            return []
        self.metrics.points_written += len(lines)
        self._recovered()
        return []

    def _isolate(self, lines: list[str], exc: SinkError, source: str) -> list[int]:
        """A refused batch: settle the lines the server named, write the others again (split in
        halves while the server names none), so that one bad point never takes others with it."""
        n = len(lines)
        named = {i: reason for i, reason in exc.refused.items() if 0 <= i < n}
        if n == 1 and not named:
            named = {0: str(exc)}
        resend = sorted(i for i in set(exc.resend or ()) if 0 <= i < n and i not in named)
        # the server said what it stored (a resend of every line would make no progress: split)
        if exc.resend is not None and (named or len(resend) < n):
            self.metrics.points_written += n - len(named) - len(resend)  # the server stored these
            groups, then = [resend], "resend"
        else:
            rest = [i for i in range(n) if i not in named]
            if named:
                groups, then = [rest], "write_rest"
            else:
                groups, then = [rest[: len(rest) // 2], rest[len(rest) // 2 :]], "split"
        log.info(
            "event=sink_batch_refused url=%s status=%s lines=%d source=%s named=%d then=%s error=%r",
            exc.url or self.sink.url,
            exc.status or "-",
            n,
            source,
            len(named),
            then,
            short(redact(str(exc)), 300),
        )
        for i in sorted(named):
            self._refuse(lines[i], redact(named[i]), exc.status)
        undone: list[int] = []
        for group in groups:
            if not group:
                continue
            if undone:  # a retryable failure on the way: the rest waits for the retry too
                undone += group
                continue
            undone += [group[j] for j in self._deliver([lines[i] for i in group], source)]
        return undone

    def _refuse(self, line: str, reason: str, status: int | None) -> None:
        """One point the database will not take: counted, logged, dead-lettered."""
        self.points_rejected += 1
        self.metrics.points_refused += 1
        log.error(
            "event=sink_point_refused url=%s status=%s reason=%r line=%r refused_total=%d",
            self.sink.url,
            status or "-",
            short(reason, 500),
            short(line, 300),
            self.metrics.points_refused,
        )
        if self.on_refused is not None:
            try:
                self.on_refused(line, reason)
            except Exception as exc:  # a broken callback must not stop the writer
                log.exception(
                    "event=sink_dead_letter_failed url=%s error=%s", self.sink.url, type(exc).__name__
                )

    def _recovered(self) -> None:
        self._unexpected = 0
        if self._attempt:
            log.info(
                "event=sink_recovered url=%s failed_attempts=%d backlog=%d",
                self.sink.url,
                self._attempt,
                self.buffer_depth,
            )
            self._attempt = 0

    def _spill(self) -> None:
        """Move what waits in memory to the spool (behind what is there) and, in the same
        transaction, drop the oldest lines beyond the backlog cap: the disk never holds more."""
        spool = self._spool
        if spool is None:
            return
        with self._spill_lock:
            with self._lock:
                items = list(self._buf)
                if items:
                    self._buf.clear()
                    self._moving = len(items)
                    self._moving_seq = items[0][0]
                over = self._inflight + self._moving + self._spooled - self.buffer_max_points
            if not items and over <= 0:
                return
            try:
                plain, kept = spool.push([(line, keep) for _, line, keep in items], drop=max(over, 0))
            except sqlite3.Error as exc:
                with self._progress:
                    self._buf.extendleft(reversed(items))
                    self._moving = 0
                    self._moving_seq = None
                log.error(
                    "event=sink_spool_failed path=%s lines=%d error=%r fix=%r",
                    spool.path,
                    len(items),
                    str(exc),
                    "check the disk under storage.data_dir",
                )
                return
            with self._progress:
                self._spooled = max(0, self._spooled + len(items) - plain - kept)
                self._moving = 0
                self._moving_seq = None
                if plain or kept:
                    self.points_dropped += plain + kept
                    self._last_drop = time.monotonic()
                self._progress.notify_all()
        if plain or kept:
            log.warning(
                "event=sink_backlog_full url=%s where=spool dropped_oldest=%d dropped_events_tickets=%d "
                "dropped_total=%d max=%d fix=%r",
                self.sink.url,
                plain,
                kept,
                self.points_dropped,
                self.buffer_max_points,
                "bring the database back, or raise influx.buffer_max_points",
            )

    def _backoff(self) -> None:
        """Wait before the next retry, spilling new points to disk meanwhile; `flush`/`close` cut it short."""
        delay = backoff_delay(self._attempt, self.retry_base_s, self.retry_max_s)
        log.info(
            "event=sink_retry_scheduled url=%s attempt=%d retry_in_s=%.2f",
            self.sink.url,
            self._attempt,
            delay,
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
