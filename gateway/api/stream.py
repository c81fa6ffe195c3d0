"""`/api/v1/stream`: the command centre's WebSocket of alerts and ticket changes.

Query: `grid_id`, `team`, `kinds`, `types` (alert, ticket), each comma-separated; the token as
`?token=`, an `Authorization: Bearer` header, or a first message `{"type": "auth", "token": ...}`
within 5 s. Messages are JSON with a `type`: `hello` (the filters), `alert` (an event state
change), `ticket` (a ticket change, as on MQTT), `dropped` (this client fell behind and lost
`count` older messages), `pong`. A client may send `{"type": "ping"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from gateway.api.auth import AuthError, Principal
from gateway.stream import MESSAGE_TYPES, StreamClient, StreamFilter

if TYPE_CHECKING:
    from gateway.api import GatewayView

AUTH_WAIT_S = 5.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400


def _split(value: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (value or "").split(",") if p.strip())


def router(view: GatewayView) -> APIRouter:
    r = APIRouter(tags=["stream"])

    async def authenticate(ws: WebSocket) -> Principal | None:
        auth = ws.app.state.auth
        host = ws.client.host if ws.client is not None else None
        token = ws.query_params.get("token") or ws.query_params.get("access_token")
        header = ws.headers.get("authorization", "")
        if not token and header.lower().startswith("bearer "):
            token = header[7:].strip()
        if not token and not auth.open:
            try:  # browsers cannot set headers: the first message may carry the token
                first = orjson.loads(await asyncio.wait_for(ws.receive_text(), AUTH_WAIT_S))
                token = (
                    first.get("token") if isinstance(first, dict) and first.get("type") == "auth" else None
                )
            except (TimeoutError, orjson.JSONDecodeError, WebSocketDisconnect):
                token = None
        try:
            return auth.authenticate(token, host)
        except AuthError as exc:
            with contextlib.suppress(Exception):
                await ws.send_text(
                    orjson.dumps({"type": "error", "status": exc.status, "detail": str(exc)}).decode()
                )
                await ws.close(CLOSE_UNAUTHORIZED, str(exc)[:120])
            return None

    async def pump(ws: WebSocket, client: StreamClient) -> None:
        while True:
            await client.ready.wait()
            messages, drops = client.take()
            if drops:
                await ws.send_text(
                    orjson.dumps({"type": "dropped", "count": drops, "total": client.dropped}).decode()
                )
            for m in messages:
                await ws.send_text(m.decode())
                client.sent += 1

    async def listen(ws: WebSocket) -> None:
        while True:
            text = await ws.receive_text()
            with contextlib.suppress(orjson.JSONDecodeError):
                msg = orjson.loads(text)
                if isinstance(msg, dict) and msg.get("type") == "ping":
                    await ws.send_text('{"type":"pong"}')

    @r.websocket("/api/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        who = await authenticate(ws)
        if who is None:
            return
        q = ws.query_params
        flt = StreamFilter(
            grids=_split(q.get("grid_id")),
            teams=_split(q.get("team")),
            kinds=_split(q.get("kinds")),
            types=_split(q.get("types")),
        )
        unknown = flt.types - set(MESSAGE_TYPES)
        if unknown:
            detail = f"unknown types {sorted(unknown)} (use {', '.join(MESSAGE_TYPES)})"
            await ws.send_text(orjson.dumps({"type": "error", "status": 400, "detail": detail}).decode())
            await ws.close(CLOSE_BAD_REQUEST, detail[:120])
            return
        client = view.stream.connect(who.name, flt, asyncio.get_running_loop())
        try:
            await ws.send_text(
                orjson.dumps(
                    {"type": "hello", "who": who.name, "role": who.role, "filters": flt.describe()}
                ).decode()
            )
            tasks = [asyncio.create_task(pump(ws, client)), asyncio.create_task(listen(ws))]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for t in done:
                with contextlib.suppress(Exception):
                    t.result()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            view.stream.disconnect(client)

    return r
