"""The hygiene desk: decides, for each event change, whether it is live or muted, and by what.

Pure logic: time is passed in, windows are asked through a callable. The decision is made once per
event, when it is first seen active, and sticks to every later change of that event (its updates
and its clear carry the same `suppressed_by`):
- muted, when a cause mutes it (`CauseIndex`) or a maintenance window covers it;
- live otherwise, for good: a cause raised later does not mute it (its ticket stays open).
A muted event still active when nothing mutes it any more (its cause cleared `recovery_s` ago, its
window closed) is released: `release` hands it back live, and the ticket desk opens its ticket then.
Causes are indexed before the symptoms of the same batch are judged, so the order of events within
one batch (a reading that raises `water_high` and `sensor_fault` at once) does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.hygiene.inhibit import CauseIndex
from gridgate.models import Event, EventState, utc

MAINTENANCE = "maintenance:"


class HygieneDesk:
    def __init__(self, causes: CauseIndex, window_for: Callable[[Event, float], str | None]) -> None:
        """`window_for(event, now)`: the id of a maintenance window open now that covers the event."""
        self.causes = causes
        self.window_for = window_for
        self._muted: dict[str, Event] = {}  # active muted events by id, as last handed out
        self._live: set[str] = set()  # ids of active events judged live
        self.muted_total = 0  # events muted at their first sight
        self.released_total = 0

    def rebuild(self, events: Iterable[Event]) -> None:
        """State from the event store after a restart: its active events (with their decisions) and
        the causes that cleared within the recovery time."""
        for ev in events:
            cleared_at = ev.ended_at.timestamp() if ev.ended_at is not None else 0.0
            self.causes.note(ev, cleared_at)
            if ev.state == EventState.active:
                if ev.suppressed_by is not None:
                    self._muted[ev.id] = ev
                else:
                    self._live.add(ev.id)

    def decide(self, changed: list[Event], now: float) -> list[Event]:
        """The batch with each event's decision (`suppressed_by`); events are copied, never changed."""
        for ev in changed:
            self.causes.note(ev, now)
        out = []
        for ev in changed:
            active = ev.state == EventState.active
            muted = self._muted.get(ev.id)
            if muted is not None:
                ev = ev.model_copy(update={"suppressed_by": muted.suppressed_by})
                if active:
                    self._muted[ev.id] = ev
                else:
                    del self._muted[ev.id]
            elif ev.id in self._live:
                if not active:
                    self._live.discard(ev.id)
            elif active:
                reason = self._reason(ev, now)
                if reason is None:
                    self._live.add(ev.id)
                else:
                    ev = ev.model_copy(update={"suppressed_by": reason})
                    self._muted[ev.id] = ev
                    self.muted_total += 1
            out.append(ev)
        return out

    def release(self, now: float) -> list[Event]:
        """Muted events whose reason is over: live now (or muted by the next reason), as changes."""
        out = []
        for ev in list(self._muted.values()):
            reason = self._reason(ev, now)
            if reason == ev.suppressed_by:
                continue
            ev = ev.model_copy(update={"suppressed_by": reason, "updated_at": utc(now)})
            if reason is None:
                del self._muted[ev.id]
                self._live.add(ev.id)
                self.released_total += 1
            else:
                self._muted[ev.id] = ev
            out.append(ev)
        self.causes.prune(now)
        return out

    def muted_now(self) -> list[Event]:
        return list(self._muted.values())

    def _reason(self, ev: Event, now: float) -> str | None:
        cause = self.causes.cause_of(ev, now)
        if cause is not None:
            return cause
        window = self.window_for(ev, now)
        return f"{MAINTENANCE}{window}" if window is not None else None
