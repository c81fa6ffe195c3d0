"""The ticket desk: applies events, people's actions and the passing of time to tickets.

It joins the pure parts (dedup, routing, state machine, SLA, storm control) to the store, and
returns the changes to notify; it never notifies, publishes or reads a clock itself (`now` is
passed in). One lock serialises the event worker, the SLA tick and API actions in a process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.grids import GridIndex, GridMatch, GridProperties
from gateway.tickets.dedup import (
    OFFLINE_KIND,
    CorrelationIndex,
    DedupPolicy,
    EventKey,
    Match,
    MatchReason,
    find_match,
    parent_key,
)
from gateway.tickets.models import (
    AuditAction,
    AuditEntry,
    ChangeKind,
    Target,
    Ticket,
    TicketChange,
    TicketEvent,
)
from gateway.tickets.routing import Route, RoutingConfig, people
from gateway.tickets.sla import deadlines, due_breaches, next_level
from gateway.tickets.states import (
    ENDED,
    NOT_ACCEPTED,
    OPEN,
    Resolution,
    TicketError,
    TicketStatus,
    check_resolution,
    transition,
)
from gateway.tickets.store import TicketNotFound, TicketStore
from gateway.tickets.storm import StormControl
from gridgate.config import TicketsConfig
from gridgate.models import Event, EventClass, EventState

log = logging.getLogger("gridgate.tickets")

S = TicketStatus
SYSTEM = "system"
SLA_ACTOR = "sla"
SEVERITY_RANK = {"info": 0, "minor": 1, "major": 2, "critical": 3}


class Action(StrEnum):
    """What a person may do to a ticket (the API's actions)."""

    accept = "accept"
    arrive = "arrive"
    resolve = "resolve"
    close = "close"  # verify: the fix is confirmed
    reopen = "reopen"
    cancel = "cancel"
    reassign = "reassign"
    comment = "comment"


ACTION_TARGET: dict[Action, TicketStatus] = {
    Action.accept: S.accepted,
    Action.arrive: S.on_site,
    Action.resolve: S.resolved,
    Action.close: S.closed,
    Action.reopen: S.reopened,
    Action.cancel: S.cancelled,
}


@dataclass
class Outcome:
    """What one call changed: changes to notify, and tickets that only gained events (coalesced)."""

    changes: list[TicketChange] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)

    def extend(self, other: Outcome) -> None:
        self.changes.extend(other.changes)
        self.touched |= other.touched


@dataclass
class _Pending:
    kind: ChangeKind
    ticket_id: str
    at: float
    reason: str
    target: Target | None = None
    from_status: TicketStatus | None = None
    to_status: TicketStatus | None = None
    transitions: list[AuditEntry] = field(default_factory=list)
    resolution: Resolution | None = None
    event_ids: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    """One unit of work: committed to the store at once, then turned into changes."""

    created: dict[str, Ticket] = field(default_factory=dict)
    updated: dict[str, Ticket] = field(default_factory=dict)
    before: dict[str, Ticket] = field(default_factory=dict)
    events: list[TicketEvent] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)

    def touch(self, t: Ticket) -> None:
        if t.id not in self.created and t.id not in self.updated:
            self.before[t.id] = t.clone()
            self.updated[t.id] = t


class TicketDesk:
    """Tickets in memory (the live ones) over the store; see the module docstring."""

    def __init__(
        self,
        store: TicketStore,
        routing: RoutingConfig,
        grids: GridIndex,
        cfg: TicketsConfig,
        *,
        now: float,
        parent_of: Callable[[str], str | None] | None = None,
        team_hint: Callable[[Event], str | None] | None = None,
        device_teams: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.device_teams = device_teams  # devices.yaml maintenance teams: faults go there too
        self.routing = routing
        self.grids = grids
        self.cfg = cfg
        self.policy = DedupPolicy(cfg.dedup_radius_m, cfg.correlation_window_s, cfg.reopen_window_s)
        self.parent_of = parent_of or (lambda _source: None)
        self.team_hint = team_hint or (lambda _ev: None)
        self.storm: StormControl[Event] = StormControl(
            cfg.offline_grace_s, cfg.offline_settle_s, cfg.rate_limit_per_grid_per_min
        )
        self.lock = threading.RLock()
        self.tickets: dict[str, Ticket] = {}
        self.index = CorrelationIndex(cfg.dedup_radius_m)
        self._event_ids: dict[str, set[str]] = {}
        self._event_rows: dict[str, int] = {}
        self.load(now)

    def known_teams(self) -> set[str]:
        """Teams a ticket may go to: routing.yaml's, the grids' overrides, the devices' own."""
        overrides = {team for props in self.grids.grids.values() for team in props.teams.values()}
        return self.routing.known_teams() | overrides | self.device_teams

    def load(self, now: float) -> None:
        """(Re)build the live tickets and their index from the store, e.g. after a restart."""
        with self.lock:
            self.tickets = {t.id: t for t in self.store.live(now, self.cfg.reopen_window_s)}
            self.index = CorrelationIndex(self.cfg.dedup_radius_m)
            self._event_ids = {}
            for t in self.tickets.values():
                self.index.add(t)
                for key in t.active_keys:
                    self.index.add_key(t.id, key)
            for t in self.tickets.values():
                rows = self.store.events(t.id)
                self._event_ids[t.id] = {r.event_id for r in rows}
                self._event_rows[t.id] = len(rows)
                for r in rows:
                    if r.dedup_key not in t.active_keys:
                        self.index.add_key(t.id, r.dedup_key)
            log.info("event=ticket_desk_loaded live_tickets=%d", len(self.tickets))

    def refresh(self, ticket_id: str) -> None:
        """Read one ticket again when another process (an API replica, the lead dispatcher) changed it."""
        with self.lock:
            mine = self.tickets.get(ticket_id)
            stored = self.store.get(ticket_id)
            if stored is None or (mine is not None and mine.version == stored.version):
                return
            if mine is None and stored.status not in OPEN:
                return
            self.index.remove(ticket_id)
            self.tickets[ticket_id] = stored
            self.index.add(stored)
            for key in stored.active_keys:
                self.index.add_key(ticket_id, key)

    # ---- reads ------------------------------------------------------------------------------------

    def snapshot(self, ticket_id: str) -> Ticket:
        """A copy of the ticket as it is now (memory for live tickets, else the store)."""
        with self.lock:
            t = self.tickets.get(ticket_id)
            if t is not None:
                return t.clone()
        return self.store.require(ticket_id)

    # ---- events -----------------------------------------------------------------------------------

    def ingest(self, events: Sequence[Event], now: float) -> Outcome:
        """Apply a batch of event state changes: open, join, reopen or clear tickets."""
        with self.lock:
            b = _Batch()
            for ev in events:
                try:
                    self._on_event(ev, now, b)
                except Exception:
                    log.exception(
                        "event=ticket_event_failed kind=%s source=%s id=%s", ev.kind, ev.source, ev.id
                    )
            return self._commit(b, now)

    def _on_event(self, ev: Event, now: float, b: _Batch, *, force: bool = False) -> None:
        key = ev.dedup_key
        if ev.state == EventState.cleared:  # == also takes a plain string (model_copy skips validation)
            if self.storm.drop_held(key):
                log.info("event=offline_suppressed key=%s reason=back_within_grace", key)
                return
            if self.storm.is_queued(key) and not force:
                self.storm.enqueue(ev.grid_id or self.grids.fallback_grid, key, ev)
                return
            self._clear(ev, now, b)
            return
        is_fault = ev.event_class == EventClass.fault
        parent = self.parent_of(ev.source) if is_fault else None
        if not force and (
            ev.kind == OFFLINE_KIND or (parent is not None and self.storm.is_held(parent_key(parent)))
        ):
            # offline waits out the grace and the settle time; a child's fault waits with its parent
            self.storm.hold_offline(key, ev, now)
            return
        if self.storm.is_queued(key) and not force:
            self.storm.enqueue(ev.grid_id or self.grids.fallback_grid, key, ev)
            return
        match_grid = self._grid(ev)
        group = self.routing.group_of(ev.kind)
        lat = ev.location.lat if ev.location is not None else None
        lon = ev.location.lon if ev.location is not None else None
        match = find_match(
            EventKey(key, group, lat, lon, is_fault, parent), self.index, self.tickets, now, self.policy
        )
        if match is not None:
            self._join(self.tickets[match.ticket_id], ev, match, now, b)
            return
        if not force and not self.storm.allow_new(match_grid.grid_id, now):
            log.info(
                "event=ticket_rate_limited grid=%s key=%s queued=%d",
                match_grid.grid_id,
                key,
                self.storm.queued + 1,
            )
            self.storm.enqueue(match_grid.grid_id, key, ev)
            return
        self._create(ev, match_grid, group, is_fault, now, b)

    def _grid(self, ev: Event) -> GridMatch:
        """The event's grid: the pipeline's answer, else a lookup, else the flagged fallback."""
        if ev.grid_id is not None:
            return GridMatch(ev.grid_id, ev.micro_grid_id, bool(ev.measurements.get("grid_fallback")))
        if ev.location is not None:
            m = self.grids.locate(ev.location.lat, ev.location.lon)
        else:
            m = GridMatch(self.grids.fallback_grid, None, True)
        ev.grid_id, ev.micro_grid_id = m.grid_id, m.micro_grid_id
        return m

    def _props(
        self, grid_id: str, micro_id: str | None
    ) -> tuple[GridProperties | None, GridProperties | None]:
        return self.grids.grids.get(grid_id), self.grids.grids.get(micro_id) if micro_id else None

    def _route(
        self, category: str, is_fault: bool, grid_id: str, micro_id: str | None, hint: str | None
    ) -> Route:
        grid, micro = self._props(grid_id, micro_id)
        return self.routing.route(category, is_fault=is_fault, grid=grid, micro_grid=micro, team_hint=hint)

    def _evidence(self, t: Ticket, ev: Event, now: float, b: _Batch) -> bool:
        """Record the event on the ticket; False if it was already there (an update of it)."""
        ids = self._event_ids.setdefault(t.id, set())
        known = ev.id in ids
        if not known and self._event_rows.get(t.id, 0) >= self.cfg.max_events_per_ticket:
            return True  # counted, not kept: the evidence cap protects the database
        if not known:
            ids.add(ev.id)
            self._event_rows[t.id] = self._event_rows.get(t.id, 0) + 1
        b.events.append(
            TicketEvent(
                ticket_id=t.id,
                event_id=ev.id,
                kind=ev.kind,
                source=ev.source,
                dedup_key=ev.dedup_key,
                state=str(ev.state),
                severity=str(ev.severity),
                lat=ev.location.lat if ev.location else None,
                lon=ev.location.lon if ev.location else None,
                first_seen=now,
                last_seen=now,
                value=ev.value,
                message=ev.message,
                evidence=ev.evidence,
            )
        )
        return not known

    def _create(self, ev: Event, m: GridMatch, group: str, is_fault: bool, now: float, b: _Batch) -> None:
        route = self._route(ev.kind, is_fault, m.grid_id, m.micro_grid_id, self.team_hint(ev))
        grid, micro = self._props(m.grid_id, m.micro_grid_id)
        who = people(route.chain, grid, micro)
        accept_by, on_site_by, resolve_by = deadlines(now, route.sla)
        t = Ticket(
            category=ev.kind,
            group=group,
            title=ev.message or ev.kind,
            is_fault=is_fault,
            severity=str(ev.severity),
            code=route.code,
            lat=ev.location.lat if ev.location else None,
            lon=ev.location.lon if ev.location else None,
            grid_id=m.grid_id,
            micro_grid_id=m.micro_grid_id,
            grid_fallback=m.fallback,
            team=route.team,
            assignee=who[0] if who else None,
            escalation_chain=[r.value for r in route.chain],
            escalation_people=who,
            dedup_key=ev.dedup_key,
            parent_source=ev.source if ev.kind == OFFLINE_KIND else None,
            sources=[ev.source],
            active_keys=[ev.dedup_key],
            first_seen=now,
            last_seen=now,
            created_at=now,
            updated_at=now,
            cycle_started_at=now,
            accept_by=accept_by,
            on_site_by=on_site_by,
            resolve_by=resolve_by,
        )
        self.tickets[t.id] = t
        b.created[t.id] = t
        self.index.add(t)
        self._evidence(t, ev, now, b)
        opened = self._audit(
            b,
            t,
            now,
            SYSTEM,
            AuditAction.transition,
            None,
            S.new,
            f"opened by {ev.kind} from {ev.source}",
            {"event_id": ev.id},
        )
        dispatched = self._move(t, S.dispatched, SYSTEM, now, f"dispatched to team {t.team}", b)
        b.pending.append(
            _Pending(
                ChangeKind.created,
                t.id,
                now,
                "event_raised",
                self._target(t),
                None,
                S.dispatched,
                [opened, dispatched],
            )
        )
        log.info(
            "event=ticket_created ticket=%s category=%s grid=%s micro_grid=%s team=%s assignee=%s "
            "fallback=%s",
            t.id,
            t.category,
            t.grid_id,
            t.micro_grid_id,
            t.team,
            t.assignee,
            t.grid_fallback,
        )

    def _join(self, t: Ticket, ev: Event, match: Match, now: float, b: _Batch) -> None:
        b.touch(t)
        new_event = self._evidence(t, ev, now, b)
        if new_event:
            t.count += 1
        t.last_seen = max(t.last_seen, now)
        t.updated_at = now
        if ev.dedup_key not in t.active_keys:
            t.active_keys.append(ev.dedup_key)
        if ev.source not in t.sources:
            t.sources.append(ev.source)
        if SEVERITY_RANK.get(str(ev.severity), 0) > SEVERITY_RANK.get(t.severity, 0):
            t.severity = str(ev.severity)
        t.all_clear_since = None
        self.index.add_key(t.id, ev.dedup_key)
        b.touched.add(t.id)
        if match.reason is MatchReason.parent and new_event:
            self._audit(
                b,
                t,
                now,
                SYSTEM,
                AuditAction.group,
                None,
                None,
                f"{ev.kind} of {ev.source} grouped under offline parent {t.parent_source}",
                {"event_id": ev.id},
            )
        if match.reopen:
            self._reopen(
                t, now, SYSTEM, f"{ev.kind} from {ev.source} recurred ({match.reason})", "recurred", b
            )

    def _clear(self, ev: Event, now: float, b: _Batch) -> None:
        tid = self.index.by_key(ev.dedup_key)
        t = self.tickets.get(tid) if tid else None
        if t is None or ev.dedup_key not in t.active_keys:
            log.debug("event=ticket_clear_unmatched key=%s id=%s", ev.dedup_key, ev.id)
            return
        b.touch(t)
        if ev.id in self._event_ids.get(t.id, ()):
            self._evidence(t, ev, now, b)
        t.active_keys.remove(ev.dedup_key)
        t.last_seen = max(t.last_seen, now)
        t.updated_at = now
        if not t.active_keys:
            t.all_clear_since = now  # resolved by the tick once it stays clear for clear_hold_s
        b.touched.add(t.id)

    # ---- transitions ------------------------------------------------------------------------------

    def _audit(
        self,
        b: _Batch,
        t: Ticket,
        now: float,
        actor: str,
        action: AuditAction,
        frm: TicketStatus | None,
        to: TicketStatus | None,
        note: str = "",
        detail: dict[str, object] | None = None,
    ) -> AuditEntry:
        entry = AuditEntry(
            ticket_id=t.id,
            at=now,
            actor=actor,
            action=action,
            from_status=frm,
            to_status=to,
            note=note,
            detail=detail or {},
        )
        b.audit.append(entry)
        return entry

    def _move(self, t: Ticket, to: TicketStatus, actor: str, now: float, note: str, b: _Batch) -> AuditEntry:
        """Change status through the state machine (IllegalTransition if not allowed), with audit."""
        frm = t.status
        transition(t.id, frm, to)
        b.touch(t)
        t.status = to
        t.updated_at = now
        if to is S.accepted:
            t.accepted_at = now
        elif to is S.on_site:
            t.on_site_at = now
        elif to is S.resolved:
            t.resolved_at = now
        elif to is S.closed:
            t.closed_at = now
        if to in ENDED:
            t.ended_at = now
        return self._audit(b, t, now, actor, AuditAction.transition, frm, to, note)

    def _reopen(self, t: Ticket, now: float, actor: str, note: str, reason: str, b: _Batch) -> None:
        frm = t.status
        entry = self._move(t, S.reopened, actor, now, note, b)
        route = self._route(t.category, t.is_fault, t.grid_id, t.micro_grid_id, None)
        # a new cycle: fresh SLA timers from now, back to the bottom of the escalation chain
        t.cycle_started_at = now
        t.accept_by, t.on_site_by, t.resolve_by = deadlines(now, route.sla)
        t.breached = []
        t.escalation_level = 0
        t.ended_at = None
        t.accepted_at = t.on_site_at = t.resolved_at = None
        t.reopen_count += 1
        b.pending.append(
            _Pending(ChangeKind.updated, t.id, now, reason, self._target(t), frm, S.reopened, [entry])
        )
        log.info("event=ticket_reopened ticket=%s from=%s reason=%s", t.id, frm, reason)

    @staticmethod
    def _target(t: Ticket) -> Target:
        return target_of(t)

    # ---- time -------------------------------------------------------------------------------------

    def tick(self, now: float) -> Outcome:
        """Release held and queued events, auto-resolve cleared tickets, escalate breached SLAs."""
        with self.lock:
            b = _Batch()
            released = self.storm.release_offline(now)
            if released:
                # parents first, so their children's faults group under them
                parents = {p for ev in released if (p := self.parent_of(ev.source))}
                released.sort(key=lambda ev: ev.source not in parents)
                for ev in released:
                    self._on_event(ev, now, b, force=True)
            for ev in self.storm.release_queued(now):
                self._on_event(ev, now, b, force=True)
            for t in list(self.tickets.values()):
                if t.status in OPEN:
                    self._auto_end(t, now, b)
                if t.status in OPEN and now >= min(t.accept_by, t.on_site_by, t.resolve_by):
                    self._escalate(t, now, b)
            self._prune(now)
            return self._commit(b, now)

    def _auto_end(self, t: Ticket, now: float, b: _Batch) -> None:
        if t.all_clear_since is None or now < t.all_clear_since + self.cfg.clear_hold_s or t.active_keys:
            return
        frm = t.status
        route = self._route(t.category, t.is_fault, t.grid_id, t.micro_grid_id, None)
        if route.auto_cancel and frm in NOT_ACCEPTED and frm is not S.reopened:
            entry = self._move(t, S.cancelled, SYSTEM, now, "every event cleared before anyone accepted", b)
            reason = "cleared_before_accept"
        else:
            entry = self._move(t, S.resolved, SYSTEM, now, "every event cleared: awaiting verification", b)
            reason = "events_cleared"
        t.all_clear_since = None
        b.pending.append(
            _Pending(ChangeKind.updated, t.id, now, reason, self._target(t), frm, t.status, [entry])
        )
        log.info("event=ticket_auto_ended ticket=%s from=%s to=%s", t.id, frm, t.status)

    def _escalate(self, t: Ticket, now: float, b: _Batch) -> None:
        for timer in due_breaches(t, now):
            b.touch(t)
            t.breached.append(timer)
            t.updated_at = now
            level = next_level(t.escalation_level, len(t.escalation_chain))
            if level is None:
                self._audit(
                    b,
                    t,
                    now,
                    SLA_ACTOR,
                    AuditAction.breach,
                    None,
                    None,
                    f"{timer} SLA breached at the top of the chain ({t.escalation_role}): already escalated",
                    {"timer": timer.value},
                )
                log.warning("event=ticket_sla_breached ticket=%s timer=%s level=top", t.id, timer)
                continue
            t.escalation_level = level
            self._audit(
                b,
                t,
                now,
                SLA_ACTOR,
                AuditAction.escalate,
                None,
                None,
                f"{timer} SLA breached: escalated to {t.escalation_role} "
                f"{t.escalation_person or '(nobody named)'}",
                {
                    "timer": timer.value,
                    "level": level,
                    "role": t.escalation_role,
                    "person": t.escalation_person,
                },
            )
            b.pending.append(
                _Pending(ChangeKind.escalated, t.id, now, f"sla_{timer}", self._target(t), transitions=[])
            )
            log.warning(
                "event=ticket_escalated ticket=%s timer=%s level=%d role=%s person=%s",
                t.id,
                timer,
                level,
                t.escalation_role,
                t.escalation_person,
            )

    def _prune(self, now: float) -> None:
        horizon = now - self.cfg.reopen_window_s
        for t in [t for t in self.tickets.values() if t.status in ENDED and (t.ended_at or now) < horizon]:
            self.tickets.pop(t.id, None)
            self.index.remove(t.id)
            self._event_ids.pop(t.id, None)
            self._event_rows.pop(t.id, None)

    # ---- people's actions -------------------------------------------------------------------------

    def act(
        self,
        ticket_id: str,
        action: Action | str,
        *,
        actor: str,
        now: float,
        note: str = "",
        assignee: str | None = None,
        team: str | None = None,
        resolution: Resolution | str | None = None,
        detail: dict[str, object] | None = None,
    ) -> tuple[Ticket, Outcome]:
        """Do an action for a person; raises IllegalTransition, TicketNotFound or TicketError.

        `resolution` (resolve, close, cancel only) says why it ended; `false_alarm` sends the
        ticket's event ids with the change, so the edge boxes mark those frames as negatives.
        `detail` goes into the audit entry as it is (the phone's position, the photos' names).
        """
        action = Action(action)
        resolution = Resolution(resolution) if resolution is not None else None
        with self.lock:
            t = self.tickets.get(ticket_id)
            if t is None:
                t = self.store.get(ticket_id)
                if t is None:
                    raise TicketNotFound(ticket_id)
                self.tickets[t.id] = t
                self.index.add(t)
            b = _Batch()
            b.touch(t)
            check_resolution(t.id, ACTION_TARGET.get(action), resolution)
            if action in ACTION_TARGET:
                frm = t.status
                to = ACTION_TARGET[action]
                if to is S.reopened:
                    transition(t.id, frm, to)
                    self._reopen(t, now, actor, note or "reopened by hand", "reopen", b)
                else:
                    entry = self._move(t, to, actor, now, note, b)
                    entry.detail.update(detail or {})
                    pending = _Pending(
                        ChangeKind.updated, t.id, now, action.value, self._target(t), frm, to, [entry]
                    )
                    if resolution is not None:
                        entry.detail["resolution"] = resolution.value
                        pending.resolution = resolution
                        pending.event_ids = [e.event_id for e in self.store.events(t.id)]
                    b.pending.append(pending)
            elif action is Action.reassign:
                if assignee is None and team is None:
                    raise TicketError(f"ticket {t.id}: reassign needs an assignee, a team or both")
                known = self.known_teams()
                if team is not None and team not in known:
                    raise TicketError(
                        f"ticket {t.id}: unknown team {team!r}; "
                        f"reassign to one of {', '.join(sorted(known))} "
                        "(teams come from routing.yaml, the `teams` overrides of grids.geojson and the "
                        "maintenance teams of devices.yaml)"
                    )
                detail = {
                    "from_team": t.team,
                    "from_assignee": t.assignee,
                    "to_team": team or t.team,
                    "to_assignee": assignee if assignee is not None else t.assignee,
                }
                t.team = team or t.team
                if assignee is not None:
                    t.assignee = assignee
                    if t.escalation_people:
                        t.escalation_people[0] = assignee
                t.updated_at = now
                self._audit(b, t, now, actor, AuditAction.reassign, None, None, note, detail)
                b.pending.append(_Pending(ChangeKind.updated, t.id, now, "reassign", self._target(t)))
            else:
                if not note.strip():
                    raise TicketError(f"ticket {t.id}: a comment needs a note")
                t.updated_at = now
                self._audit(b, t, now, actor, AuditAction.comment, None, None, note, detail)
                b.pending.append(_Pending(ChangeKind.updated, t.id, now, "comment", self._target(t)))
            out = self._commit(b, now)
            return t.clone(), out

    # ---- commit -----------------------------------------------------------------------------------

    def _commit(self, b: _Batch, now: float) -> Outcome:
        if not (b.created or b.updated or b.events or b.audit):
            return Outcome()
        try:
            self.store.commit(
                created=list(b.created.values()),
                updated=list(b.updated.values()),
                events=b.events,
                audit=b.audit,
            )
        except Exception:
            # memory must not run ahead of the database: undo this batch, keep the last good state
            for tid in b.created:
                self.tickets.pop(tid, None)
                self.index.remove(tid)
                self._event_ids.pop(tid, None)
                self._event_rows.pop(tid, None)
            for tid, old in b.before.items():
                self.tickets[tid] = old
            log.exception(
                "event=ticket_commit_failed created=%d updated=%d url=%s",
                len(b.created),
                len(b.updated),
                self.store.engine.url.render_as_string(hide_password=True),
            )
            raise
        snaps: dict[str, Ticket] = {}

        def snap(tid: str) -> Ticket:
            if tid not in snaps:
                snaps[tid] = self.tickets[tid].clone()
            return snaps[tid]

        changes = [
            TicketChange(
                kind=p.kind,
                at=p.at,
                ticket=snap(p.ticket_id),
                target=p.target or self._target(self.tickets[p.ticket_id]),
                from_status=p.from_status,
                to_status=p.to_status,
                reason=p.reason,
                transitions=p.transitions,
                resolution=p.resolution,
                event_ids=p.event_ids,
            )
            for p in b.pending
        ]
        return Outcome(changes, set(b.touched))


def target_of(t: Ticket) -> Target:
    """Whom a ticket's changes are for now: its team and the person at its escalation level."""
    return Target(team=t.team, role=t.escalation_role, person=t.escalation_person)
