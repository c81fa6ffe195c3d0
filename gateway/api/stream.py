"""`/api/v1/stream`: the command centre's WebSocket of alerts and ticket changes.

Query: `grid_id`, `team`, `kinds`, `types` (alert, ticket), each comma-separated; `since_id`
(resume after this message id) or `since` (ISO 8601: messages from then on), served from the
replay ring of the last messages; the token as `?token=`, an `Authorization: Bearer` header, or
a first message `{"type": "auth", "token": ...}` within 5 s.

Messages are JSON with a `type`; `alert` (an event state change) and `ticket` (a ticket change,
as on MQTT) carry an increasing `id` and their time `at`. `hello` (the filters and `last_id`, the
newest message id now), `dropped` (`count` messages this client did not get after `last_id`,
the one to resume from with `since_id`; `next_id` is the first it gets after the gap), `pong`,
`error`. A client may send `{"type": "ping"}`. A slow client is never closed for being slow: it
loses its oldest queued messages and is told.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from gateway.api.auth import AuthError, Principal
from gateway.api.params import Timestamp
from gateway.stream import MESSAGE_TYPES, Gap, StreamClient, StreamFilter, StreamMessage

if TYPE_CHECKING:
    from gateway.api import GatewayView

AUTH_WAIT_S = 5.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400


TIMESTAMP: TypeAdapter[Any] = TypeAdapter(Timestamp)


def _split(value: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (value or "").split(",") if p.strip())


def resume_point(since_id: str | None, since: str | None) -> tuple[int | None, float | None]:
    """`since_id` (a message id) or `since` (ISO 8601); ValueError saying what is wrong."""
    if since_id is not None and since is not None:
        raise ValueError("give since_id or since, not both")
    if since_id is not None:
        if not since_id.isdigit():
            raise ValueError(f"since_id {since_id!r} is not a message id (the `id` of a message)")
        return int(since_id), None
    if since is not None:
        try:
            return None, TIMESTAMP.validate_python(since).timestamp()
        except ValidationError as exc:
            raise ValueError(f"since: {exc.errors()[0]['msg']}") from None
    return None, None


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

    async def send(
        ws: WebSocket, client: StreamClient, messages: list[StreamMessage], gap: Gap | None
    ) -> None:
        if gap is not None:
            await ws.send_text(gap.message(client.dropped).decode())
        for m in messages:
            await ws.send_text(m.body.decode())
            client.sent += 1

    async def pump(
        ws: WebSocket, client: StreamClient, backlog: list[StreamMessage], lost: Gap | None
    ) -> None:
        await send(ws, client, backlog, lost)  # a resume: what the ring still holds, first
        while True:
            await client.ready.wait()
            messages, gap = client.take()
            await send(ws, client, messages, gap)

    async def listen(ws: WebSocket) -> None:
        while True:
            text = await ws.receive_text()
            with contextlib.suppress(orjson.JSONDecodeError):
                msg = orjson.loads(text)
                if isinstance(msg, dict) and msg.get("type") == "ping":
                    await ws.send_text('{"type":"pong"}')

    @r.websocket("/api/v1/stream")
    async def stream(ws: WebSocket) -> None:
        """Alerts and ticket changes as they happen; filters and resume with `since_id` or `since`."""
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
        try:
            if unknown:
                raise ValueError(f"unknown types {sorted(unknown)} (use {', '.join(MESSAGE_TYPES)})")
            since_id, since = resume_point(q.get("since_id"), q.get("since"))
        except ValueError as exc:
            detail = str(exc)
            await ws.send_text(orjson.dumps({"type": "error", "status": 400, "detail": detail}).decode())
            await ws.close(CLOSE_BAD_REQUEST, detail[:120])
            return
        client, backlog, lost = view.stream.connect(
            who.name, flt, asyncio.get_running_loop(), since_id=since_id, since=since
        )
        try:
            hello = {
                "type": "hello",
                "who": who.name,
                "role": who.role,
                "filters": flt.describe(),
                "last_id": view.stream.last_id,
            }
            await ws.send_text(orjson.dumps(hello).decode())
            tasks = [asyncio.create_task(pump(ws, client, backlog, lost)), asyncio.create_task(listen(ws))]
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
