"""Request bodies: authenticated first, then limited per route before (and while) they are read.

An ASGI middleware in front of the whole app:

1. a request that carries a body (`Content-Length` or `Transfer-Encoding`) to `/api/` must hold a
   valid bearer token: 401 before a byte of the body is read. Open311 POSTs may carry `api_key` in
   the form itself (the spec), so a key in the query or the header is checked first (403) and a
   body-borne key after the (small) body is read;
2. a declared `Content-Length` above the route's limit is answered 413 at once;
3. the body is counted as it streams (chunked bodies have no length): the read that crosses the
   limit fails with 413, so no request ever holds more than its limit in memory.
"""

from __future__ import annotations

import re

from fastapi import HTTPException, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api import open311
from gateway.api.auth import Authenticator, AuthError, bearer, client_host
from gateway.api.errors import error_response

KIB = 1024
OPEN311_REPORT_MAX = 64 * KIB  # a form with a 4,000-character description, URL-encoded CJK
TICKET_ACTION_MAX = 32 * KIB  # {"note": 4,000 characters, "by": ...} as UTF-8 JSON
DEFAULT_MAX = 16 * KIB  # every other route takes no body worth the name
MULTIPART_OVERHEAD = 64 * KIB  # part headers, the note and the flags around the photos
PUSH_PREFIX = "/ingest/"  # operator platforms: no bearer token, the path secret is checked by the route
PHOTOS_ROUTE = re.compile(r"^/api/v1/tickets/[^/]+/photos$")


def body_limit(path: str, photos_max: int = 0, push_max: int = DEFAULT_MAX) -> int:
    """The most bytes of body a route accepts (`photos_max`: the photo upload's, from the limits;
    `push_max`: a platform push's, `platforms.max_body_bytes`)."""
    if path.startswith(PUSH_PREFIX):
        return push_max
    if path.startswith(f"{open311.PREFIX}/requests."):
        return OPEN311_REPORT_MAX
    if PHOTOS_ROUTE.match(path):
        return photos_max + MULTIPART_OVERHEAD
    if path.startswith("/api/v1/tickets/"):
        return TICKET_ACTION_MAX
    return DEFAULT_MAX


def too_large(method: str, path: str, size: str, limit: int) -> str:
    hint = "; photos go by media_url" if path.startswith(open311.PREFIX) else ""
    return f"the request body is {size}; {method} {path} accepts at most {limit} bytes{hint}"


class BodyLimit:
    """The middleware (see the module's docstring)."""

    def __init__(
        self, app: ASGIApp, auth: Authenticator, photos_max: int = 0, push_max: int = DEFAULT_MAX
    ) -> None:
        self.app = app
        self.auth = auth
        self.photos_max = photos_max
        self.push_max = push_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        method, path = request.method, request.url.path
        declared = request.headers.get("content-length")
        if "transfer-encoding" in request.headers or declared not in (None, "", "0"):
            refusal = self._refuse_unauthenticated(request)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        limit = body_limit(path, self.photos_max, self.push_max)
        if declared is not None:
            if not declared.isdigit():
                bad = error_response(path, 400, f"Content-Length {declared!r} is not a number of bytes")
                await bad(scope, receive, send)
                return
            if int(declared) > limit:
                message = too_large(method, path, f"{declared} bytes", limit)
                await error_response(path, 413, message, headers={"Connection": "close"})(
                    scope, receive, send
                )
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, too_large(method, path, f"over {limit} bytes", limit))
            return message

        await self.app(scope, counted, send)

    def _refuse_unauthenticated(self, request: Request) -> Response | None:
        """The error response for a body-carrying request that fails authentication, or None."""
        path = request.url.path
        token = bearer(request)
        if path.startswith(open311.PREFIX):
            token = token or request.query_params.get("api_key")
            if token is None:
                return None  # the key is in the form: read it (within the limit), then check it
            status, prefix, extra = 403, "invalid api_key: ", {}
        elif path.startswith("/api/"):
            status, prefix, extra = 401, "", {"WWW-Authenticate": "Bearer"}
        else:
            return None
        try:
            self.auth.authenticate(token, client_host(request))
        except AuthError as exc:
            return error_response(path, status, f"{prefix}{exc}", headers=extra)
        return None
