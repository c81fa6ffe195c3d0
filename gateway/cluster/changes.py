"""Which event changes the lead dispatcher has already handled: the feed delivers at least once.

An ingest replica publishes its outbox after its checkpoint, so a crash between the publish and
the row's removal publishes a change twice; a dispatcher killed before it acknowledged its feed
gets the changes again when the next one takes the lead. A change is the same change when its
event id and its time (end, else update, else start) are; an older one than the stored event's
latest is stale. Both are dropped here, before alert hygiene, alert topics and tickets see them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime

from gridgate.models import Event

FEED_SUBSCRIBED = "feed_subscribed"  # a saved mark: the lead dispatcher's feed session exists at the broker
REMEMBER = 100_000  # recent changes held in memory; older ones are checked against the event log


def change_time(ev: Event) -> datetime:
    return ev.ended_at or ev.updated_at or ev.started_at


def _at(t: datetime) -> float:
    return t.timestamp()


class ChangeLog:
    def __init__(self, remember: int = REMEMBER) -> None:
        self.remember = remember
        self._seen: OrderedDict[tuple[str, float], None] = OrderedDict()
        self.dropped = 0

    def fresh(
        self, events: Iterable[Event], stored: Callable[[list[str]], dict[str, datetime]]
    ) -> list[Event]:
        """The changes not seen before, in order; `stored(ids)`: each event's latest stored change."""
        batch = [(ev, (ev.id, _at(change_time(ev)))) for ev in events]
        unseen = [(ev, key) for ev, key in batch if key not in self._seen]
        self.dropped += len(batch) - len(unseen)
        known = stored([ev.id for ev, _ in unseen]) if unseen else {}
        out = []
        for ev, key in unseen:
            latest = known.get(ev.id)
            if key in self._seen or (latest is not None and _at(latest) >= key[1]):
                self.dropped += 1
                continue
            self._seen[key] = None
            out.append(ev)
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        return out
