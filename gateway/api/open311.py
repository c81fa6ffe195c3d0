"""Open311 GeoReport v2 under `/open311/v2/`, in XML (what FixMyStreet's client reads) and JSON.

- `services.{xml,json}`: the categories of routing.yaml offered to the public; `service_code` is the
  category's city `code` where routing.yaml sets one, else the category name.
- `services/{code}.{fmt}`: the service definition (no extra attributes: `attributes` is empty).
- `requests.{fmt}` GET: tickets as service requests, with the spec's filters; POST: a citizen's or
  courier's report, which becomes an event `citizen:<id>` and so a ticket like any other (same
  dedup, routing and SLA). Needs `api_key` (a token of any role but read_only).
- `requests/{id}.{fmt}`, `tokens/{token}.{fmt}` (the token is the report's event id: a report
  queued by the per-grid rate limit has no request id yet). A POST answers with either the
  `service_request_id` or, while the report waits, the `token`: never an empty element beside the
  other (FixMyStreet reads an empty id as the id). An unknown token is 404.

Status: `open` while someone has to act; resolved, closed and cancelled are `closed`. Every error
under /open311/v2/ (400, 403, 404, 413, 422, 500, 503) uses the spec's format:
`[{"code": 400, "description": "..."}]` or `<errors><error><code>..</code>...</error></errors>`.
The reporter's contact details (email, phone, names, device and account ids) are kept apart from
the event and the ticket (`citizen_reports`), shown only to admin and command_centre tokens.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from gateway.api.auth import AuthError, bearer, client_host
from gateway.tickets.models import CitizenContact, Ticket
from gateway.tickets.routing import RoutingConfig
from gateway.tickets.states import OPEN, TicketStatus
from gateway.tickets.store import ticket_events
from gridgate.models import Event, Location, Severity, new_event_id, utc

if TYPE_CHECKING:
    from gateway.api import GatewayView

PREFIX = "/open311/v2"
Format = Literal["json", "xml"]
JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
CONTACT_FIELDS = ("email", "phone", "first_name", "last_name", "device_id", "account_id")
REQUEST_FIELDS = (
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
)
STATUS_NOTES = {
    TicketStatus.new: "Received.",
    TicketStatus.dispatched: "Dispatched to the responsible team.",
    TicketStatus.accepted: "Accepted by the responsible team.",
    TicketStatus.on_site: "The team is on site.",
    TicketStatus.resolved: "Fixed; awaiting verification.",
    TicketStatus.closed: "Fixed and verified.",
    TicketStatus.cancelled: "Closed without action: the problem was no longer there.",
    TicketStatus.reopened: "The problem came back: reopened.",
}


# ---- models: the spec's shapes, for the OpenAPI page --------------------------------------------


class Service(BaseModel):
    service_code: str
    service_name: str
    description: str = ""
    metadata: bool = Field(False, description="true when the service definition has attributes")
    type: str = Field("realtime", description="realtime, batch or blackbox")
    keywords: str = ""
    group: str = Field("", description="the team that handles it")


class ServiceRequest(BaseModel):
    service_request_id: str
    status: str = Field(description="open or closed")
    status_notes: str | None = None
    service_name: str | None = None
    service_code: str
    description: str | None = None
    agency_responsible: str | None = None
    service_notice: str | None = None
    requested_datetime: str
    updated_datetime: str | None = None
    expected_datetime: str | None = None
    address: str | None = None
    address_id: str | None = None
    zipcode: str | None = None
    lat: float | None = None
    long: float | None = None
    media_url: str | None = None


class PostedRequest(BaseModel):
    """What a POST answers: the request id, or (while the report is queued) the token; never both."""

    service_request_id: str | None = Field(None, description="present once the report is a ticket")
    token: str | None = Field(None, description="present only while there is no request id yet")
    service_notice: str


class TokenLookup(BaseModel):
    token: str
    service_request_id: str | None = Field(None, description="absent while the report waits for a ticket")


class Open311ErrorItem(BaseModel):
    """GeoReport v2's error: `[{"code": 404, "description": "..."}]` (XML: `<errors><error>`)."""

    code: int
    description: str


XML_CONTENT = {"text/xml": {"schema": {"type": "string", "description": "the same document in XML"}}}
ERROR_TEXT = {
    400: "a parameter is malformed",
    403: "api_key missing, unknown, or not allowed to do this",
    404: "no such service, request, token or jurisdiction",
    413: "the body is larger than this route accepts",
    422: "a path parameter is invalid (the format is .json or .xml)",
    503: "tickets are disabled on this gateway",
}


def documented(model: Any, *errors: int, ok: int = 200) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of an Open311 route: the body in JSON and XML, and the spec's errors."""
    out: dict[int | str, dict[str, Any]] = {ok: {"model": model, "content": XML_CONTENT}}
    for code in (*errors, 422, 500):
        out[code] = {
            "model": list[Open311ErrorItem],
            "content": XML_CONTENT,
            "description": ERROR_TEXT.get(code, "internal error (see the gateway log)"),
        }
    return out


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        self.status = status
        self.description = description
        super().__init__(description)


# ---- rendering --------------------------------------------------------------------------------------


def w3c(ts: float | None) -> str | None:
    """W3C date-time with offset (the spec's format), e.g. 2024-05-01T08:30:00+00:00."""
    return utc(ts).isoformat(timespec="seconds") if ts is not None else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _append(parent: ET.Element, name: str, value: Any) -> None:
    el = ET.SubElement(parent, name)
    if isinstance(value, dict):
        for k, v in value.items():
            _append(el, k, v)
    elif isinstance(value, list):
        child = name[:-1] if name.endswith("s") else "item"
        for item in value:
            _append(el, child, item)
    else:
        el.text = _text(value)


def xml_document(root: str, item: str | None, rows: Iterable[dict[str, Any]] | dict[str, Any]) -> bytes:
    """`<root><item>...</item>...</root>` (or `<root>fields</root>` when item is None)."""
    top = ET.Element(root)
    if item is None:
        assert isinstance(rows, dict)
        for k, v in rows.items():
            _append(top, k, v)
    else:
        for row in rows:  # type: ignore[union-attr]
            _append(top, item, row)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(
        top, encoding="utf-8", xml_declaration=False
    )


def render(
    fmt: str, root: str, item: str | None, data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    if fmt == "xml":
        return Response(xml_document(root, item, data), status, headers, media_type=XML_TYPE)
    return Response(orjson.dumps(data), status, headers, media_type=JSON_TYPE)


def error_response(
    fmt: str, status: int, description: str, headers: dict[str, str] | None = None
) -> Response:
    """The spec's error document: `[{"code", "description"}]` or `<errors><error>...</error></errors>`."""
    return render(fmt, "errors", "error", [{"code": status, "description": description}], status, headers)


def format_of(path: str) -> str:
    return "xml" if path.endswith(".xml") else "json"


# ---- the catalogue ----------------------------------------------------------------------------------


class Catalogue:
    """Categories <-> services, from routing.yaml and `open311.services`."""

    def __init__(self, routing: RoutingConfig, offered: list[str], agency: str) -> None:
        self.routing = routing
        self.agency = agency
        cats = offered or [c for c, spec in routing.categories.items() if spec.team != routing.fault_team]
        self.categories = [c for c in cats if c in routing.categories] or list(cats)
        self.by_code = {self.code(c): c for c in self.categories}
        self.by_code.update({c: c for c in self.categories})  # the category name always works too

    def code(self, category: str) -> str:
        spec = self.routing.categories.get(category)
        return (spec.code if spec is not None and spec.code else None) or category

    def name(self, category: str) -> str:
        spec = self.routing.categories.get(category)
        return (spec.name if spec is not None and spec.name else None) or category.replace(
            "_", " "
        ).capitalize()

    def team_name(self, team: str) -> str:
        spec = self.routing.teams.get(team)
        return spec.name if spec is not None and spec.name else team

    def service(self, category: str) -> dict[str, Any]:
        spec = self.routing.categories.get(category)
        team = (spec.team if spec is not None else None) or self.routing.fallback_team
        return Service(
            service_code=self.code(category),
            service_name=self.name(category),
            description=spec.description if spec is not None else "",
            keywords=", ".join(category.split("_")),
            group=self.team_name(team),
        ).model_dump()

    def category_of(self, code: str) -> str:
        try:
            return self.by_code[code]
        except KeyError:
            raise Open311Error(
                404, f"service_code {code!r} not found (GET services.xml lists them)"
            ) from None

    def request(self, t: Ticket, citizen: dict[str, Any] | None = None) -> dict[str, Any]:
        c = citizen or {}
        return {
            "service_request_id": t.id,
            "status": "open" if t.status in OPEN else "closed",
            "status_notes": STATUS_NOTES.get(t.status, ""),
            "service_name": self.name(t.category),
            "service_code": self.code(t.category),
            "description": c.get("description") or t.title,
            "agency_responsible": self.agency or self.team_name(t.team),
            "service_notice": "",
            "requested_datetime": w3c(t.created_at),
            "updated_datetime": w3c(t.updated_at),
            "expected_datetime": w3c(t.resolve_by),
            "address": c.get("address"),
            "address_id": c.get("address_id"),
            "zipcode": c.get("zipcode"),
            "lat": t.lat,
            "long": t.lon,
            "media_url": c.get("media_url"),
        }


def citizen_details(view: GatewayView, ticket_ids: list[str], base_url: str) -> dict[str, dict[str, Any]]:
    """Per ticket, what the first citizen report on it said (address, media...), in one query;
    `media_url` is the citizen's own, else the first photo attached to the ticket (under `base_url`)."""
    if not ticket_ids or view.tickets is None:
        return {}
    c = ticket_events.c
    q = (
        select(c.ticket_id, c.evidence)
        .where(c.ticket_id.in_(ticket_ids), c.source.like("citizen:%"))
        .order_by(c.first_seen)
    )
    out: dict[str, dict[str, Any]] = {}
    with view.tickets.store.engine.connect() as conn:
        for tid, evidence in conn.execute(q):
            ev = orjson.loads(evidence) if isinstance(evidence, str | bytes) else evidence
            out.setdefault(tid, (ev or {}).get("open311", {}))
    for tid, photos in view.tickets.store.photos(ticket_ids).items():
        found = out.setdefault(tid, {})
        if not found.get("media_url"):
            out[tid] = found | {"media_url": base_url.rstrip("/") + photos[0].url}
    return out


def ticket_of_event(view: GatewayView, event_id: str) -> str | None:
    if view.tickets is None:
        return None
    q = select(ticket_events.c.ticket_id).where(ticket_events.c.event_id == event_id).limit(1)
    with view.tickets.store.engine.connect() as conn:
        return conn.execute(q).scalar()


def parse_date(name: str, value: str | None) -> float | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace(" ", "+") if "T" in value else value)
    except ValueError:
        raise Open311Error(
            400, f"{name} {value!r} is not a W3C date-time (e.g. 2024-05-01T08:00:00Z)"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _csv(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


# ---- the router -------------------------------------------------------------------------------------


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(prefix=PREFIX, tags=["open311"])
    cfg = view.cfg.open311

    def catalogue() -> Catalogue:
        if view.tickets is None:
            raise Open311Error(503, "tickets are disabled on this gateway")
        return Catalogue(view.tickets.desk.routing, cfg.services, cfg.agency_responsible)

    def check_jurisdiction(request: Request, form: dict[str, str] | None = None) -> None:
        given = (form or {}).get("jurisdiction_id") or request.query_params.get("jurisdiction_id")
        if given and cfg.jurisdiction_id and given != cfg.jurisdiction_id:
            raise Open311Error(404, f"jurisdiction_id {given!r} is not served here")

    def check_reader(request: Request) -> None:
        if cfg.public_read:
            return
        token = request.query_params.get("api_key") or bearer(request)
        try:
            request.app.state.auth.authenticate(token, client_host(request))
        except AuthError as exc:
            raise Open311Error(403, f"{exc} (pass api_key)") from exc

    def reading(request: Request) -> Catalogue:
        """The checks every GET makes, in the spec's order; the catalogue to answer from."""
        check_jurisdiction(request)
        check_reader(request)
        return catalogue()

    @r.get(
        "/services.{fmt}", response_model=list[Service], responses=documented(list[Service], 403, 404, 503)
    )
    def services(fmt: Format, request: Request) -> Response:
        """The service list: one service per public category."""
        cat = reading(request)
        return render(fmt, "services", "service", [cat.service(c) for c in cat.categories])

    @r.get("/services/{code}.{fmt}", responses=documented(dict[str, Any], 403, 404, 503))
    def service_definition(code: str, fmt: Format, request: Request) -> Response:
        """A service definition: gridgate asks for no extra attributes."""
        cat = reading(request)
        category = cat.category_of(code)
        return render(fmt, "service_definition", None, {"service_code": cat.code(category), "attributes": []})

    @r.get(
        "/requests.{fmt}",
        response_model=list[ServiceRequest],
        responses=documented(list[ServiceRequest], 400, 403, 404, 503),
    )
    def get_requests(fmt: Format, request: Request) -> Response:
        """Service requests; default: the last `open311.default_days` days, newest first."""
        cat = reading(request)
        assert view.tickets is not None
        store = view.tickets.store
        q = request.query_params
        ids = _csv(q.get("service_request_id"))
        if ids:  # the spec: other parameters are ignored when ids are given
            found = [t for t in (store.get(i) for i in ids) if t is not None and not t.is_fault]
        else:
            now = view.clock.now()
            end = parse_date("end_date", q.get("end_date"))
            start = parse_date("start_date", q.get("start_date"))
            end = end if end is not None else now + 1
            start = start if start is not None else end - cfg.default_days * 86_400
            if start >= end:
                raise Open311Error(400, "start_date must be before end_date")
            statuses: list[TicketStatus] | None = None
            wanted = {s.lower() for s in _csv(q.get("status"))}
            if wanted - {"open", "closed"}:
                raise Open311Error(400, f"status must be open or closed (got {q.get('status')!r})")
            if wanted == {"open"}:
                statuses = sorted(OPEN)
            elif wanted == {"closed"}:
                statuses = sorted(set(TicketStatus) - OPEN)
            codes = _csv(q.get("service_code"))
            categories = [cat.category_of(c) for c in codes] if codes else None
            found = []
            for category in categories or [None]:
                found += store.list_tickets(
                    status=statuses,
                    category=category,
                    since=start,
                    until=end,
                    limit=cfg.max_requests if categories else cfg.max_requests * 2,
                )
            found = [t for t in found if not t.is_fault]
            found.sort(key=lambda t: (t.created_at, t.id), reverse=True)
            found = found[: cfg.max_requests]
        details = citizen_details(view, [t.id for t in found], str(request.base_url))
        return render(fmt, "service_requests", "request", [cat.request(t, details.get(t.id)) for t in found])

    @r.get(
        "/requests/{request_id}.{fmt}",
        response_model=list[ServiceRequest],
        responses=documented(list[ServiceRequest], 403, 404, 503),
    )
    def get_request(request_id: str, fmt: Format, request: Request) -> Response:
        """One service request (a ticket) by its id."""
        cat = reading(request)
        assert view.tickets is not None
        t = view.tickets.store.get(request_id)
        if t is None or t.is_fault:
            raise Open311Error(404, f"service_request_id {request_id!r} not found")
        details = citizen_details(view, [t.id], str(request.base_url))
        return render(fmt, "service_requests", "request", [cat.request(t, details.get(t.id))])

    @r.get(
        "/tokens/{token}.{fmt}",
        response_model=list[TokenLookup],
        responses=documented(list[TokenLookup], 403, 404, 503),
    )
    def get_token(token: str, fmt: Format, request: Request) -> Response:
        """The request id a POST's token became (only the token while the report waits); 404 if unknown."""
        reading(request)
        assert view.tickets is not None
        if not view.tickets.store.report_known(token):
            raise Open311Error(404, f"token {token!r} not found (tokens are what POST requests answered)")
        found = TokenLookup(token=token, service_request_id=ticket_of_event(view, token))
        return render(fmt, "service_requests", "request", [found.model_dump(exclude_none=True)])

    @r.post(
        "/requests.{fmt}",
        status_code=201,
        response_model=list[PostedRequest],
        responses=documented(list[PostedRequest], 400, 403, 404, 413, 503, ok=201),
    )
    async def post_request(fmt: Format, request: Request) -> Response:
        """A citizen report (form-encoded as the spec says, or JSON): becomes a ticket like any other."""
        form = await read_form(request)
        check_jurisdiction(request, form)
        token = form.get("api_key") or bearer(request)
        try:
            who = request.app.state.auth.authenticate(token, client_host(request))
        except AuthError as exc:
            raise Open311Error(403, f"invalid api_key: {exc}") from exc
        if not who.can_report:
            raise Open311Error(403, f"the api_key of {who.name!r} (role {who.role}) may not file reports")
        cat = catalogue()
        code = form.get("service_code")
        if not code:
            raise Open311Error(400, "service_code is required (GET services.xml lists them)")
        category = cat.category_of(code)
        location = parse_location(form)
        if location is None and not (form.get("address_string") or form.get("address_id")):
            raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
        description = (form.get("description") or "").strip()[:4000]
        now = view.clock.now()
        report_id = new_event_id()
        public = {
            "description": description or None,
            "address": form.get("address_string") or None,
            "address_id": form.get("address_id") or None,
            "zipcode": form.get("zipcode") or None,
            "media_url": form.get("media_url") or None,
        }
        contact = CitizenContact(
            report_id=report_id,
            filed_at=now,
            filed_by=who.name,
            **{k: form[k][:256] for k in CONTACT_FIELDS if form.get(k)},
        )
        ev = Event(
            id=report_id,
            kind=category,
            source=f"citizen:{report_id}",
            location=location,
            severity=Severity.major,
            started_at=utc(now),
            updated_at=utc(now),
            message=description[:200] or cat.name(category),
            measurements={"channel": "open311", "filed_by": who.name},
            evidence={"open311": public, "media_url": public["media_url"]},
        )

        def file_report() -> tuple[str | None, Ticket | None]:
            # database work off the event loop: the stream and other requests keep going
            assert view.tickets is not None
            view.tickets.store.save_report(contact)  # personal data: never on the event
            view.report_event(ev)
            tid = ticket_of_event(view, report_id)
            return tid, view.tickets.store.get(tid) if tid else None

        tid, t = await run_in_threadpool(file_report)
        if t is None:
            notice = "Received; it will be dispatched shortly. Look the token up for its request id."
        elif t.count > 1 or t.sources[0] != ev.source:
            notice = (
                "Received: the same problem was already reported here, so your report joined that request."
            )
        else:
            minutes = max(1, round((t.on_site_by - t.created_at) / 60))
            notice = (
                f"Received and sent to {cat.team_name(t.team)}; "
                f"someone should be there within {minutes} minutes."
            )
        # the id, or the token while there is none: an empty id would be read as the id
        posted = PostedRequest(
            service_request_id=tid, token=None if tid else report_id, service_notice=notice
        )
        return render(fmt, "service_requests", "request", [posted.model_dump(exclude_none=True)], status=201)

    return r


async def read_form(request: Request) -> dict[str, str]:
    """The POST's fields: form-encoded body (the spec), or a JSON object; query parameters too."""
    body = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, str] = dict(request.query_params)
    if ctype == "application/json":
        try:
            doc = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise Open311Error(400, f"the body is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise Open311Error(400, "the JSON body must be an object of fields")
        fields.update({k: str(v) for k, v in doc.items() if v is not None})
    elif ctype in ("", "application/x-www-form-urlencoded"):
        try:
            parsed = parse_qs(body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            raise Open311Error(400, "the form body is not UTF-8") from None
        fields.update({k: v[0] for k, v in parsed.items()})
    else:
        raise Open311Error(400, f"send application/x-www-form-urlencoded (got {ctype}); media by media_url")
    return fields


def parse_location(form: dict[str, str]) -> Location | None:
    lat, lon = form.get("lat"), form.get("long")
    if not lat and not lon:
        return None
    try:
        return Location(lat=float(lat or ""), lon=float(lon or ""))
    except ValueError:
        raise Open311Error(400, f"lat and long must be decimal degrees (got {lat!r}, {lon!r})") from None
