"""Journaled push messages on their way to the pipeline, on a thread of their own.

The HTTP answer leaves once a push is in the journal; decoding and rules run here, so a platform
that ranks receivers by response time (CTWing) never waits for them. The queue holds journal
sequence numbers not yet handed over: a checkpoint never claims them (see `oldest`), so a crash
replays them from the journal.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger("gridgate.platforms")

BATCH = 16  # messages handed over per hold of the ingest lock: a push's journal write waits ~2 ms at most

Dispatch = Callable[[int, float, str, bytes], None]


class PushQueue:
    """`put` and `oldest` are called with the gateway's ingest lock held; the thread takes it per batch."""

    def __init__(
        self, lock: threading.Lock, dispatch: Dispatch, after_batch: Callable[[], None] | None
    ) -> None:
        self._lock = lock
        self._dispatch = dispatch
        self._after_batch = after_batch
        self._items: deque[tuple[int, float, str, bytes]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handed_over = 0

    def put(self, seq: int, received_at: float, topic: str, payload: bytes) -> None:
        self._items.append((seq, received_at, topic, payload))
        self._wake.set()

    def oldest(self) -> int | None:
        """The journal seq of the oldest message not handed over yet."""
        return self._items[0][0] if self._items else None

    def __len__(self) -> int:
        return len(self._items)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gridgate-push", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Hand over what is queued, then stop; a push queued after this waits in the journal for
        the next start's replay."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            while True:  # until the queue is empty, also when stopping: no push waits for a replay
                with self._lock:
                    if not self._items:
                        self._wake.clear()  # under the lock: a `put` after this sets it again
                        break
                    for _ in range(min(BATCH, len(self._items))):
                        seq, received_at, topic, payload = self._items[0]
                        try:
                            self._dispatch(seq, received_at, topic, payload)
                        except Exception:  # the pipeline never raises; a bug here must not stop the thread
                            log.exception("event=push_dispatch_failed seq=%d topic=%s", seq, topic)
                        self._items.popleft()
                        self.handed_over += 1
                    if self._after_batch is not None:
                        self._after_batch()
