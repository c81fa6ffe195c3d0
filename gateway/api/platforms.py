"""Operator platforms' HTTP push: CTWing and OneNET POST device messages here (docs/platforms.md).

No bearer token (the platforms cannot send one): the path's secret segment names the caller, and
OneNET's signature is checked when its token is configured. A push is journaled before the 200,
and the answer never waits for decoding or rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.api.auth import client_host
from gateway.api.errors import ErrorBody, error_response
from gateway.platforms.receiver import Answer, PushAnswer, PushReceiver

if TYPE_CHECKING:
    from gateway.api import GatewayView

PREFIX = "/ingest"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "OneNET's URL check without `msg`",
        401: "wrong path secret (the URL registered in the console holds `platforms.<name>.secret`)",
        403: "OneNET: the signature does not match `platforms.onenet.token`",
        413: "the body is larger than `platforms.max_body_bytes`",
        429: "this source sends faster than `rate_limit_per_s`; retry after `Retry-After` seconds",
        503: "the journal cannot be written: nothing was accepted, retry later",
    }.items()
}
JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "the platform's envelope"}}
        },
    }
}


def answer_response(path: str, answer: Answer) -> Response:
    if answer.text is not None:
        return PlainTextResponse(answer.text)
    if answer.body is not None:
        return JSONResponse(answer.body.model_dump(mode="json"))
    headers = {"Retry-After": str(answer.retry_after_s)} if answer.retry_after_s is not None else None
    return error_response(path, answer.status, answer.detail or "refused", headers=headers)


async def receive(
    push: PushReceiver, platform: Literal["ctwing", "onenet"], secret: str, request: Request
) -> Response:
    """Admit (secret, rate), then read the body (within its limit), then parse, journal and answer."""
    path = request.url.path
    refusal = push.admit(platform, secret, client_host(request))
    if refusal is not None:
        return answer_response(path, refusal)
    body = await request.body()
    return answer_response(path, push.receive(platform, body))  # a journal write: tens of microseconds


def router(view: GatewayView) -> APIRouter:
    push = view.push
    assert push is not None
    r = APIRouter(prefix=PREFIX, tags=["platforms"])

    if "ctwing" in push.platforms:

        @r.post("/ctwing/{secret}", response_model=PushAnswer, responses=ERRORS, openapi_extra=JSON_BODY)
        async def ctwing_push(secret: str, request: Request) -> Response:
            """CTWing subscription push (dataReport, eventReport, deviceOnlineOfflineReport,
            commandResponse): 200 once journaled, or dead-lettered when permanently bad."""
            return await receive(push, "ctwing", secret, request)

    if "onenet" in push.platforms:

        @r.get(
            "/onenet/{secret}",
            response_class=Response,  # the 200 is text (documented below), the errors JSON
            responses={
                200: {
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                    "description": "`msg` echoed",
                },
                **ERRORS,
            },
        )
        def onenet_verify(
            secret: str,
            request: Request,
            msg: str | None = None,
            nonce: str | None = None,
            signature: str | None = None,
        ) -> Response:
            """OneNET's URL check: `msg` echoed as text once `signature` is base64(md5(token+nonce+msg))."""
            path = request.url.path
            refusal = push.admit("onenet", secret, client_host(request))
            if refusal is not None:
                return answer_response(path, refusal)
            return answer_response(path, push.verify_onenet(msg, nonce, signature))

        @r.post("/onenet/{secret}", response_model=PushAnswer, responses=ERRORS, openapi_extra=JSON_BODY)
        async def onenet_push(secret: str, request: Request) -> Response:
            """OneNET HTTP push, the new format (`msg` a JSON string, maybe AES-encrypted) or the old
            one (`msg` an object): signature checked when a token is configured."""
            return await receive(push, "onenet", secret, request)

    return r
