"""One error body for the whole REST API, and Open311's own format under /open311/v2/.

Every error the API answers (401, 403, 404, 409, 413, 422, 500, 503, from our code or from
FastAPI's request validation) is `ErrorBody`: `detail` (a sentence: what was wrong, where, and the
fix) and, for an invalid request, `errors` (each invalid field). Under `/open311/v2/` the same
errors use GeoReport v2's format instead (`[{"code", "description"}]` or `<errors>`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api import open311

log = logging.getLogger("gridgate.api")

DESCRIPTIONS = {
    400: "the request is malformed (e.g. a body that is not UTF-8 JSON)",
    401: "no valid bearer token (`Authorization: Bearer <token>`)",
    403: "the token's role or scope does not allow this",
    404: "no such resource",
    409: "the ticket's state machine refuses the action (or a ticket's photo limit is reached, or a "
    "maintenance window is from gateway.yaml or already over)",
    413: "the request body is larger than this route accepts",
    415: "the upload is not of a type this route accepts (photos: JPEG, PNG or WebP, judged by their bytes)",
    422: "a parameter or the body is invalid; `errors` names each field",
    500: "an internal error (the gateway log has the details)",
    503: "the feature is disabled on this gateway or not ready",
}


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: `query`, `path` or `body`, then the field")
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="pydantic's error type, e.g. `less_than_equal`")


class ErrorBody(BaseModel):
    """Every error of the REST API."""

    detail: str = Field(description="what was wrong, where, and how to fix it")
    errors: list[FieldError] = Field(default_factory=list, description="each invalid field (422 only)")


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, each with `ErrorBody`."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}


def error_response(
    path: str, status: int, detail: str, errors: list[FieldError] | None = None, **kw: Any
) -> Response:
    """The error body for a request path: Open311's format under its prefix, `ErrorBody` elsewhere."""
    if path.startswith(open311.PREFIX):
        return open311.error_response(open311.format_of(path), status, detail, **kw)
    body = ErrorBody(detail=detail, errors=errors or [])
    return JSONResponse(body.model_dump(mode="json"), status, **kw)


def describe(errors: list[FieldError]) -> str:
    """One sentence for the first invalid fields: `query.offset: Input should be ... (and 1 more)`."""
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{'.'.join(str(p) for p in first.loc)}: {first.msg}{more}"


def install(app: FastAPI) -> None:
    """Error handlers for every path: our HTTPExceptions, FastAPI's validation and Open311's; then
    `CrashGuard` for everything else."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(request.url.path, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            FieldError(loc=list(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", "")))
            for e in exc.errors()
        ]
        return error_response(request.url.path, 422, describe(errors), errors)

    @app.exception_handler(open311.Open311Error)
    async def _open311_error(request: Request, exc: open311.Open311Error) -> Response:
        return error_response(request.url.path, exc.status, exc.description)

    app.add_middleware(CrashGuard)


class CrashGuard:
    """ASGI middleware: an unexpected exception is logged and answered 500 in the path's format.

    (A handler for `Exception` would sit in Starlette's outermost middleware, which re-raises, so
    the server would drop the connection after the 500 and the client's next request with it.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            method, path = scope["method"], scope["path"]
            log.error("event=api_error method=%s path=%s error=%r", method, path, exc, exc_info=exc)
            if started:
                raise
            detail = f"internal error on {method} {path}; see the gateway log (event=api_error)"
            await error_response(path, 500, detail)(scope, receive, send)
