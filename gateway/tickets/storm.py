"""Storm control: hold device_offline around broker outages, and rate-limit new tickets per grid.

Pure logic: `now` is passed in; events are opaque items keyed by their dedup key.
- While the broker link is down, and for `offline_grace_s` after it comes back, a device_offline
  opens no ticket: it is held, and dropped if the device reports again (its clear) in the meantime.
  Every offline also waits `offline_settle_s`, so a parent going offline a moment after its
  children still groups them.
- At most `per_min` new tickets per grid per minute; the excess waits in a per-grid queue (events
  of one key stay together, in order) and is released as the window frees up: never dropped.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

E = TypeVar("E")

WINDOW_S = 60.0


@dataclass
class _Held(Generic[E]):
    item: E
    since: float


@dataclass
class StormControl(Generic[E]):
    offline_grace_s: float = 120.0
    offline_settle_s: float = 30.0
    per_min: int = 30
    link_up: bool = True
    link_up_at: float | None = None  # None: connected from the start, no grace
    _held: dict[str, _Held[E]] = field(default_factory=dict)
    _created: dict[str, deque[float]] = field(default_factory=dict)
    _queues: dict[str, OrderedDict[str, list[E]]] = field(default_factory=dict)
    _queued_grid: dict[str, str] = field(default_factory=dict)
    suppressed: int = 0

    # ---- the broker link ------------------------------------------------------------------------

    def set_link(self, up: bool, now: float) -> None:
        """Tell the storm control the broker link state (call on every change, or poll)."""
        if up and not self.link_up:
            self.link_up_at = now
        self.link_up = up

    def in_grace(self, now: float) -> bool:
        if not self.link_up:
            return True
        return self.link_up_at is not None and now < self.link_up_at + self.offline_grace_s

    # ---- device_offline holds ---------------------------------------------------------------------

    def hold_offline(self, key: str, item: E, now: float) -> None:
        self._held[key] = _Held(item, now)

    def is_held(self, key: str) -> bool:
        return key in self._held

    def drop_held(self, key: str) -> bool:
        """The held offline cleared (the device is back): no ticket. True if one was held."""
        if self._held.pop(key, None) is None:
            return False
        self.suppressed += 1
        return True

    def release_offline(self, now: float) -> list[E]:
        """Held offlines that outlived the settle time and the grace: they open tickets now."""
        if self.in_grace(now):
            return []
        ready = [k for k, h in self._held.items() if now >= h.since + self.offline_settle_s]
        return [self._held.pop(k).item for k in ready]

    @property
    def held(self) -> int:
        return len(self._held)

    # ---- per-grid rate limit ----------------------------------------------------------------------

    def _window(self, grid: str, now: float) -> deque[float]:
        times = self._created.setdefault(grid, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        return times

    def allow_new(self, grid: str, now: float) -> bool:
        """May a new ticket open in this grid now? True records it against the limit."""
        if self._queues.get(grid):
            return False  # earlier excess goes first
        times = self._window(grid, now)
        if len(times) >= self.per_min:
            return False
        times.append(now)
        return True

    def is_queued(self, key: str) -> bool:
        return key in self._queued_grid

    def enqueue(self, grid: str, key: str, item: E) -> None:
        """Queue an event that would open a ticket over the limit, or one whose key is queued."""
        grid = self._queued_grid.get(key, grid)
        self._queues.setdefault(grid, OrderedDict()).setdefault(key, []).append(item)
        self._queued_grid[key] = grid

    def release_queued(self, now: float) -> list[E]:
        """Queued events, key by key, as far as each grid's window allows; each key counts once."""
        out: list[E] = []
        for grid, queue in list(self._queues.items()):
            times = self._window(grid, now)
            while queue and len(times) < self.per_min:
                key, items = queue.popitem(last=False)
                del self._queued_grid[key]
                times.append(now)
                out.extend(items)
            if not queue:
                del self._queues[grid]
        return out

    @property
    def queued(self) -> int:
        return sum(len(items) for q in self._queues.values() for items in q.values())
