"""Rule signals -> `EdgeEventMessage`s: `new` on raise, `end` on clear, and `update` while active
on a significant change (at most every `update_min_s`) or as a heartbeat (at least every
`update_max_s`). Pure: frame time decides, so tests need no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from detectors.rules import Signal
from gridgate.models import EdgeEventMessage, EdgePhase, EvidenceRef, Location, Severity, new_event_id, utc


@dataclass(slots=True)
class OpenEvent:
    event_id: str
    kind: str
    zone: str
    started_at: float
    last_sent: float
    severity: Severity
    evidence: list[EvidenceRef] = field(default_factory=list)
    pending_significant: bool = False


@dataclass(frozen=True, slots=True)
class Draft:
    """A message without its `seq` (the disk queue numbers it when it is stored)."""

    phase: EdgePhase
    event: OpenEvent
    signal: Signal

    def build(self, seq: int, edge_id: str, camera_id: str, location: Location) -> EdgeEventMessage:
        s = self.signal
        return EdgeEventMessage(
            edge_id=edge_id,
            camera_id=camera_id,
            seq=seq,
            phase=self.phase,
            event_id=self.event.event_id,
            kind=s.kind,
            zone=s.zone,
            location=location,
            severity=s.severity,
            confidence=max(0.0, min(1.0, s.confidence)),
            started_at=utc(self.event.started_at),
            ended_at=utc(s.at) if self.phase == EdgePhase.end else None,
            at=utc(s.at),
            measurements=dict(s.measurements),
            evidence=list(self.event.evidence),
        )


class EventEmitter:
    """One camera's open events, keyed by the rules' occurrence key."""

    def __init__(
        self, update_min_s: float = 5.0, update_max_s: float = 60.0, new_id: Callable[[], str] = new_event_id
    ) -> None:
        self.update_min_s = update_min_s
        self.update_max_s = update_max_s
        self.new_id = new_id
        self.open: dict[str, OpenEvent] = {}

    def event_id_for(self, key: str) -> str | None:
        ev = self.open.get(key)
        return ev.event_id if ev else None

    def on_signal(self, s: Signal) -> Draft | None:
        """The message this signal calls for, if any (attach evidence to `draft.event.evidence`)."""
        ev = self.open.get(s.key)
        if s.action == "raise":
            if ev is not None:  # already open (should not happen): treat as a significant hold
                s = replace(s, action="hold", significant=True)
            else:
                ev = OpenEvent(self.new_id(), s.kind, s.zone, s.started_at, s.at, s.severity)
                self.open[s.key] = ev
                return Draft(EdgePhase.new, ev, s)
        if ev is None:
            return None  # a hold or clear for something never raised (e.g. after a restart)
        if s.action == "clear":
            del self.open[s.key]
            return Draft(EdgePhase.end, ev, s)
        if s.significant or s.severity != ev.severity:
            ev.pending_significant = True
        since = s.at - ev.last_sent
        if (ev.pending_significant and since >= self.update_min_s) or since >= self.update_max_s:
            ev.last_sent = s.at
            ev.severity = s.severity
            ev.pending_significant = False
            return Draft(EdgePhase.update, ev, s)
        return None
