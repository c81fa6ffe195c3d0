"""Count-only updates are coalesced: at most one `updated` per ticket every `interval_s`.

Pure logic: `now` is passed in. State changes are never held back; they reset the interval.
"""

from __future__ import annotations


class UpdateCoalescer:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last_sent: dict[str, float] = {}
        self._pending: dict[str, float] = {}  # ticket id -> when it may be sent

    def sent(self, ticket_id: str, now: float) -> None:
        """A notification for this ticket went out (any kind): the interval restarts."""
        self._last_sent[ticket_id] = now
        self._pending.pop(ticket_id, None)

    def offer(self, ticket_id: str, now: float) -> bool:
        """A count-only update: True means send it now; False means it is held until `due()`."""
        if ticket_id in self._pending:
            return False
        last = self._last_sent.get(ticket_id)
        if last is None or now - last >= self.interval_s:
            self.sent(ticket_id, now)
            return True
        self._pending[ticket_id] = last + self.interval_s
        return False

    def due(self, now: float) -> list[str]:
        """Held tickets whose interval has passed: send their latest state now."""
        ready = [tid for tid, at in self._pending.items() if at <= now]
        for tid in ready:
            self.sent(tid, now)
        return ready

    @property
    def pending(self) -> int:
        return len(self._pending)

    def forget(self, ticket_id: str) -> None:
        self._last_sent.pop(ticket_id, None)
        self._pending.pop(ticket_id, None)
