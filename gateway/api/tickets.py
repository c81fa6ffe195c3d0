"""Tickets: list with filters, one with its history and events, and people's actions.

Actions answer 404 for an unknown ticket, 409 with the state machine's message for a transition it
refuses, 403 when the caller's role or scope does not cover the ticket.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from gateway.api.auth import Principal, Reader, Writer
from gateway.api.errors import responses
from gateway.api.params import Limit, Offset, Timestamp
from gateway.tickets.desk import Action
from gateway.tickets.models import AuditEntry, CitizenContact, Ticket, TicketEvent
from gateway.tickets.photos import PhotoFiles, PhotoLimits, PhotoRefused, TicketPhoto, check_upload
from gateway.tickets.service import TicketService
from gateway.tickets.states import IllegalTransition, Resolution, TicketError, TicketStatus
from gateway.tickets.store import StaleTicket, TicketNotFound
from gridgate.topics import TopicLevel

if TYPE_CHECKING:
    from gateway.api import GatewayView

log = logging.getLogger("gridgate.api.tickets")


# ---- request and response models -----------------------------------------------------------------


class Position(BaseModel):
    """Where the person was (a phone's GPS, WGS-84), kept in the audit trail."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(None, ge=0, le=100_000, description="the fix's radius, metres")


class ActionRequest(BaseModel):
    note: str = Field("", max_length=4000, description="recorded in the audit trail")
    by: str | None = Field(
        None,
        max_length=128,
        description="the person acting, when a shared team token is used; audited as `by@token-name`",
    )
    resolution: Resolution | None = Field(
        None,
        description="why the ticket ended, with resolve, close or cancel only: `false_alarm` (nothing "
        "was there) tells the edge boxes to keep the event's frames as negatives for retraining",
    )
    position: Position | None = Field(
        None, description="where the person is (arrive from the grid worker's phone): `detail.position`"
    )


class CommentRequest(ActionRequest):
    note: str = Field(min_length=1, max_length=4000, description="the comment")


class ReassignRequest(ActionRequest):
    assignee: str | None = Field(None, max_length=128, description="the new assignee (a grid worker)")
    team: TopicLevel | None = Field(
        None, description="the new team: one routing.yaml (or a grid's `teams` override) names"
    )


class PhotoUpload(BaseModel):
    ticket: Ticket = Field(description="the ticket after the upload (resolved, with `resolve=true`)")
    photos: list[TicketPhoto] = Field(description="the photos this upload stored")


class TicketDetail(BaseModel):
    ticket: Ticket
    history: list[AuditEntry] = Field(description="every transition, escalation and comment, oldest first")
    events: list[TicketEvent] = Field(description="the events the ticket carries, as evidence")
    photos: list[TicketPhoto] = Field(
        default_factory=list, description="photos people attached (the fix, shown), oldest first"
    )
    reporters: list[CitizenContact] | None = Field(
        None,
        description="who filed its Open311 reports (personal data): only for admin and command_centre "
        "tokens; null for every other role",
    )


# ---- helpers --------------------------------------------------------------------------------------


def service_of(view: GatewayView) -> TicketService:
    if view.tickets is None:
        raise HTTPException(503, "tickets are disabled on this gateway (tickets.enabled: false)")
    return view.tickets


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def parse_states(values: list[str] | None) -> list[TicketStatus] | None:
    """`state=new,dispatched` or `state=new&state=dispatched`; 422 naming the allowed values."""
    if not values:
        return None
    out = []
    for raw in values:
        for part in raw.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(TicketStatus(part))
            except ValueError:
                allowed = ", ".join(s.value for s in TicketStatus)
                raise HTTPException(422, f"unknown state {part!r} (use one of {allowed})") from None
    return out or None


def actor_of(who: Principal, body: ActionRequest) -> str:
    return f"{body.by}@{who.name}" if body.by else who.name


def _check_permitted(svc: TicketService, who: Principal, ticket_id: str, action: Action) -> None:
    """Refuse unless the ticket exists (404) and `who` may take `action` on it (403)."""
    try:
        ticket = svc.get(ticket_id)
    except TicketNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    refusal = who.refuse_action(ticket, action)
    if refusal is not None:
        raise HTTPException(403, refusal)


def act(
    svc: TicketService,
    who: Principal,
    ticket_id: str,
    action: Action,
    body: ActionRequest,
    detail: dict[str, object] | None = None,
    **kw: str | None,
) -> Ticket:
    """Check scope, then act; errors become 403/404/409/422 with the desk's own message."""
    _check_permitted(svc, who, ticket_id, action)
    try:
        detail = (detail or {}) | ({"position": body.position.model_dump()} if body.position else {})
        return svc.act(
            ticket_id, action, actor_of(who, body), body.note, resolution=body.resolution, detail=detail, **kw
        )
    except TicketNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except (IllegalTransition, StaleTicket) as exc:
        raise HTTPException(409, str(exc)) from exc
    except TicketError as exc:
        raise HTTPException(422, str(exc)) from exc


# ---- the router -----------------------------------------------------------------------------------


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix="/api/v1/tickets", tags=["tickets"], responses=responses(401, 422, 503))

    total = {
        "X-Total-Count": {
            "description": "tickets matching without limit/offset",
            "schema": {"type": "integer"},
        }
    }

    @r.get("", response_model=list[Ticket], responses={200: {"headers": total}})
    def list_tickets(
        response: Response,
        _who: Reader,
        state: Annotated[
            list[str] | None, Query(description="one or more states, comma-separated or repeated")
        ] = None,
        grid_id: Annotated[str | None, Query(description="the ticket's grid")] = None,
        micro_grid_id: Annotated[str | None, Query()] = None,
        team: Annotated[str | None, Query()] = None,
        category: Annotated[str | None, Query(description="illegal_parking, ponding, ...")] = None,
        assignee: Annotated[str | None, Query()] = None,
        breached: Annotated[bool | None, Query(description="with (or without) a breached SLA timer")] = None,
        since: Annotated[Timestamp | None, Query(description="created at or after (ISO 8601)")] = None,
        until: Annotated[Timestamp | None, Query(description="created before (ISO 8601)")] = None,
        updated_since: Annotated[Timestamp | None, Query(description="changed at or after")] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> list[Ticket]:
        """Tickets, newest first; `X-Total-Count` says how many match without limit/offset."""
        svc = service_of(view)
        filters = {
            "status": parse_states(state),
            "grid_id": grid_id,
            "micro_grid_id": micro_grid_id,
            "team": team,
            "category": category,
            "assignee": assignee,
            "breached": breached,
            "since": epoch(since),
            "until": epoch(until),
            "updated_since": epoch(updated_since),
        }
        response.headers["X-Total-Count"] = str(svc.store.count_tickets(**filters))
        return svc.store.list_tickets(**filters, limit=limit, offset=offset)

    @r.get("/{ticket_id}", response_model=TicketDetail, responses=responses(404))
    def get_ticket(ticket_id: str, who: Reader) -> TicketDetail:
        """The ticket, its history and events; its reporters' contacts for admin and command centre."""
        svc = service_of(view)
        try:
            ticket = svc.get(ticket_id)
        except TicketNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        return TicketDetail(
            ticket=ticket,
            history=svc.history(ticket_id),
            events=svc.events(ticket_id),
            photos=svc.store.photos([ticket_id]).get(ticket_id, []),
            reporters=svc.store.contacts(ticket_id) if who.sees_personal_data else None,
        )

    def simple(action: Action, doc: str) -> None:
        def endpoint(ticket_id: str, who: Writer, body: ActionRequest | None = None) -> Ticket:
            return act(service_of(view), who, ticket_id, action, body or ActionRequest())

        endpoint.__doc__ = doc
        r.add_api_route(
            f"/{{ticket_id}}/{action.value}",
            endpoint,
            methods=["POST"],
            response_model=Ticket,
            name=f"ticket_{action.value}",
            summary=f"{action.value.capitalize()} a ticket",
            responses=responses(400, 403, 404, 409, 413),
        )

    simple(Action.accept, "Take the order: dispatched (or reopened) -> accepted.")
    simple(Action.arrive, "On site: accepted (or dispatched) -> on_site.")
    simple(Action.resolve, "The problem is fixed: -> resolved, awaiting verification.")
    simple(
        Action.close,
        "Verify a resolved ticket: resolved -> closed (command centre); `resolution: false_alarm` "
        "when there was nothing to fix.",
    )
    simple(Action.reopen, "The problem is back: resolved, closed or cancelled -> reopened.")
    simple(
        Action.cancel, "Call a ticket off (command centre); `resolution: false_alarm` if nothing was there."
    )

    @r.post("/{ticket_id}/reassign", response_model=Ticket, responses=responses(400, 403, 404, 409, 413))
    def reassign(ticket_id: str, who: Writer, body: ReassignRequest) -> Ticket:
        """Give the ticket to another assignee and/or team (422 for a team nobody configured)."""
        return act(
            service_of(view), who, ticket_id, Action.reassign, body, assignee=body.assignee, team=body.team
        )

    @r.post("/{ticket_id}/comment", response_model=Ticket, responses=responses(400, 403, 404, 409, 413))
    def comment(ticket_id: str, who: Writer, body: CommentRequest) -> Ticket:
        """Add a note to the audit trail (notifies the channels)."""
        return act(service_of(view), who, ticket_id, Action.comment, body)

    files = PhotoFiles(view.cfg.storage.data_dir / "photos")
    lim = view.cfg.limits
    limits = PhotoLimits(lim.max_photo_bytes, lim.max_photos_per_upload, lim.max_photos_per_ticket)

    @r.post(
        "/{ticket_id}/photos",
        response_model=PhotoUpload,
        status_code=201,
        responses=responses(400, 403, 404, 409, 413, 415),
    )
    def add_photos(
        ticket_id: str,
        who: Writer,
        photos: Annotated[
            list[UploadFile] | None, File(description="one or more JPEG, PNG or WebP photos")
        ] = None,
        note: Annotated[str, Form(max_length=4000, description="recorded in the audit trail")] = "",
        by: Annotated[str | None, Form(max_length=128, description="the person, on a shared token")] = None,
        resolve: Annotated[
            bool, Form(description="resolve the ticket with these photos (else they are a comment)")
        ] = False,
    ) -> PhotoUpload:
        """Attach photos as the ticket's evidence, and with `resolve=true` resolve it in one step.

        The whole upload is checked first (count, size, type by the bytes' magic numbers); a refused
        upload (413, 415, 409 at the ticket's limit, 403, or a refused transition) leaves the
        ticket and its photos as they were."""
        svc = service_of(view)
        action = Action.resolve if resolve else Action.comment
        _check_permitted(svc, who, ticket_id, action)
        already = len(svc.store.photos([ticket_id]).get(ticket_id, []))
        parts = [(f.filename or "photo", f.file.read(limits.max_bytes + 1)) for f in photos or []]
        try:
            checked = check_upload(parts, already, limits, ticket_id)
        except PhotoRefused as exc:
            log.info("event=photos_refused ticket=%s by=%s status=%d", ticket_id, who.name, exc.status)
            raise HTTPException(exc.status, str(exc)) from exc
        body = ActionRequest(note=note or f"{len(checked)} photo(s) attached", by=by)
        actor = actor_of(who, body)
        now = view.clock.now()
        stored = [files.write(ticket_id, p, actor, now) for p in checked]
        svc.store.add_photos(stored)  # before the change goes out, so its readers see the photos
        try:
            updated = act(svc, who, ticket_id, action, body, {"photos": [p.name for p in stored]})
        except HTTPException:
            svc.store.remove_photos(ticket_id, [p.name for p in stored])
            for p in stored:
                files.remove(p)
            raise
        log.info(
            "event=photos_attached ticket=%s by=%s count=%d bytes=%d resolve=%s",
            ticket_id,
            actor,
            len(stored),
            sum(p.bytes for p in stored),
            resolve,
        )
        return PhotoUpload(ticket=updated, photos=stored)

    @r.get("/{ticket_id}/photos", response_model=list[TicketPhoto], responses=responses(404))
    def list_photos(ticket_id: str, _who: Reader) -> list[TicketPhoto]:
        """The ticket's photos, oldest first."""
        svc = service_of(view)
        if svc.store.get(ticket_id) is None:
            raise HTTPException(404, f"ticket {ticket_id!r} does not exist (list tickets to find its id)")
        return svc.store.photos([ticket_id]).get(ticket_id, [])

    @r.get(
        "/{ticket_id}/photos/{name}",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}, **responses(404)},
    )
    def photo(ticket_id: str, name: str, _who: Reader) -> FileResponse:
        """One photo of a ticket (its `url` in the ticket's `photos`)."""
        svc = service_of(view)
        known = {p.name: p for p in svc.store.photos([ticket_id]).get(ticket_id, [])}
        path = files.path(ticket_id, name) if name in known else None
        if path is None:
            raise HTTPException(404, f"ticket {ticket_id!r} has no photo {name!r} (its detail lists them)")
        return FileResponse(path, media_type=known[name].content_type, headers={"Cache-Control": "private"})

    return r
