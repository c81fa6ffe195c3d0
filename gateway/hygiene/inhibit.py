"""Inhibition: the causes active now (and recently cleared), and which of them mutes a symptom.

Pure logic: time is passed in. A cause is indexed per rule under its scope key: its source
(`device:MH-1`, `camera:cam-3`) for `scope: source`, its id (`E1` of `edge:E1` or `device:E1`) for
`scope: behind`. A symptom looks itself up under its own source, or under the `behind:` of its
device. A cleared cause keeps muting `recovery_s` (measured from when the gateway learnt the clear).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gridgate.hygiene_config import InhibitRule
from gridgate.models import Event, EventState


@dataclass(slots=True)
class _Cause:
    id: str
    started: float  # epoch seconds, to pick the oldest cause deterministically
    cleared_at: float | None = None


class CauseIndex:
    """The inhibition rules and the causes they know of."""

    def __init__(
        self, rules: Iterable[InhibitRule], recovery_s: float, behind: Callable[[Event], str | None]
    ) -> None:
        """`behind`: the edge box or device id a symptom's device sits behind, or None."""
        self.rules = tuple(rules)
        self.recovery_s = recovery_s
        self.behind = behind
        self._causes: dict[tuple[int, str], dict[str, _Cause]] = {}
        self._cause_kinds = frozenset(k for r in self.rules for k in r.causes)
        self._by_symptom: dict[str, tuple[int, ...]] = {}
        for i, r in enumerate(self.rules):
            for kind in r.symptoms:
                self._by_symptom[kind] = (*self._by_symptom.get(kind, ()), i)

    def note(self, ev: Event, now: float) -> None:
        """Index a change of a cause kind (raised, updated or cleared); other kinds are ignored."""
        if ev.kind not in self._cause_kinds:
            return
        for i, rule in enumerate(self.rules):
            if ev.kind not in rule.causes:
                continue
            key = ev.source if rule.scope == "source" else ev.source_id
            held = self._causes.setdefault((i, key), {})
            if ev.state == EventState.active:
                held[ev.id] = _Cause(ev.id, ev.started_at.timestamp())
            elif ev.id in held:
                held[ev.id].cleared_at = now
            else:  # its raise came before a restart the index was not rebuilt from: recovery only
                held[ev.id] = _Cause(ev.id, ev.started_at.timestamp(), now)

    def cause_of(self, ev: Event, now: float) -> str | None:
        """The id of the oldest cause that mutes `ev` at `now`, or None."""
        found: _Cause | None = None
        for i in self._by_symptom.get(ev.kind, ()):
            key = ev.source if self.rules[i].scope == "source" else self.behind(ev)
            if key is None:
                continue
            for c in self._causes.get((i, key), {}).values():
                if c.id == ev.id or (c.cleared_at is not None and now >= c.cleared_at + self.recovery_s):
                    continue
                if found is None or (c.started, c.id) < (found.started, found.id):
                    found = c
        return found.id if found is not None else None

    def prune(self, now: float) -> None:
        """Forget causes whose recovery is over."""
        for key in list(self._causes):
            held = self._causes[key]
            for cid in [
                c.id
                for c in held.values()
                if c.cleared_at is not None and now >= c.cleared_at + self.recovery_s
            ]:
                del held[cid]
            if not held:
                del self._causes[key]

    def __len__(self) -> int:
        return sum(len(h) for h in self._causes.values())
