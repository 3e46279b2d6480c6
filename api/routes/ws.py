"""WebSocket: follow several jobs on one socket, and talk to agents on it.

Client → server: `{"action": "subscribe", "job_id": "...", "last_event_id": "..."?}`,
`{"action": "unsubscribe", "job_id": "..."}`, `{"action": "ping"}`, and
`{"action": "send", "conversation_id": "...", "content": "...", "request_id": "..."?, "max_steps": n?,
"idempotency_key": "..."?}`: a user message, posted as `POST /api/v1/conversations/{id}/messages` posts it
(`conversations:write`; a stream token can't), answered by an agent turn the socket then follows.
Server → client: `{"type": "event", "event": {...}}` (the same events as SSE, snapshot first),
`{"type": "subscribed" | "unsubscribed", "job_id"}`, `{"type": "sent", "message": {...}, "job_id",
"request_id"}` (then the turn's events from its start, as for a subscription), `{"type": "error", "code",
"message", "job_id"}` (with the `request_id` of the send it answers, and `details` when there are some),
`{"type": "ping" | "pong"}`. A subscription ends by itself after the job's terminal event.

Authenticate with the usual headers or, from a browser, `?token=` with a stream token; a refused
connection gets one error message, then a close with code 4000 + the HTTP status (4401, 4403, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from api.deps import AllowSocket, can_follow
from api.routing import CheckedRoute
from core.db import session_scope
from core.errors import AppError, Forbidden, infrastructure_errors
from core.logging import request_id_var
from core.metrics import OPEN_STREAMS
from core.settings import get_settings
from pipelines.accounts import audit, limits
from pipelines.conversations import messages as posting
from pipelines.jobs import follow as progress, lifecycle
from schemas.conversations import MessageOut, SocketSend
from schemas.events import JobEvent
from schemas.inputs import InputRejected, strict_json_loads
from schemas.permissions import Permission, Principal
from schemas.tables import Job, Message

log = logging.getLogger(__name__)
router = APIRouter(route_class=CheckedRoute, tags=["jobs"])
SOCKETS = OPEN_STREAMS.labels("websocket")


def event_message(event: JobEvent) -> str:
    """An event as the socket sends it: rendered once per event, however many sockets follow its job."""
    return json.dumps({"type": "event", "event": event.model_dump(mode="json")}, default=str)


class Connection:
    """One socket: its subscriptions and a lock so tasks never interleave frames."""

    def __init__(self, ws: WebSocket, who: Principal) -> None:
        self.ws, self.who = ws, who
        self.lock = asyncio.Lock()
        self.subscriptions: dict[uuid.UUID, asyncio.Task] = {}

    async def send(self, message: dict) -> None:
        await self.send_text(json.dumps(message, default=str))

    async def send_text(self, text: str) -> None:
        async with self.lock:
            await self.ws.send_text(text)

    async def error(self, code: str, message: str, job_id: str | None = None, **extra) -> None:
        await self.send({"type": "error", "code": code, "message": message, "job_id": job_id,
                         **{k: v for k, v in extra.items() if v is not None}})

    async def follow(self, job_id: uuid.UUID, last_event_id: str | None) -> None:
        try:
            async for event in progress.follow_job(self.who.org_id, job_id, last_event_id):
                if event is not None:
                    await self.send_text(event.rendered("websocket", event_message))
            await self.send({"type": "unsubscribed", "job_id": str(job_id), "reason": "finished"})
        except AppError as exc:
            await self.error(exc.code, exc.message, str(job_id))
        except infrastructure_errors() as exc:
            await self.error("upstream_unavailable", str(exc), str(job_id))
        except Exception:
            log.exception("following job %s failed", job_id)
            await self.error("internal_error", "following this job failed; subscribe again with last_event_id",
                             str(job_id))
        finally:
            self.subscriptions.pop(job_id, None)

    def subscribe(self, job_id: uuid.UUID, last_event_id: str | None) -> None:
        if job_id not in self.subscriptions:
            self.subscriptions[job_id] = asyncio.create_task(self.follow(job_id, last_event_id))

    async def post(self, body: SocketSend) -> tuple[Message, Job]:
        """Post the message as the REST route does: charged to the caller's rate, audited, committed, sent."""
        try:
            await limits.check_rate(self.who)
        except infrastructure_errors() as exc:
            log.warning("rate limit not checked (Redis unavailable): %s", exc)  # fail open, as for requests
        async with session_scope() as session:
            message, job = await posting.post_message(session, self.who, body.conversation_id, body.message(),
                                                      key=body.idempotency_key)
            client = self.ws.client
            await audit.record(session, org_id=self.who.org_id, actor=self.who.actor, action="post_message",
                               result="success", target_type="message", target_id=str(message.id), status_code=202,
                               request_id=request_id_var.get(), ip=client.host if client else None,
                               details={"conversation_id": str(body.conversation_id), "role": "user",
                                        "via": "websocket"})
            await lifecycle.commit(session)
        return message, job

    async def send_message(self, raw: dict) -> None:
        """`send`: post a user message, say so, then follow its turn from the start of its events."""
        request_id = raw.get("request_id") if isinstance(raw.get("request_id"), str) else None
        try:
            if not self.who.can(Permission.CONVERSATIONS_WRITE):
                raise Forbidden("sending messages needs the 'conversations:write' permission",
                                details={"permission": "conversations:write"})
            body = SocketSend.model_validate(raw)
            message, job = await self.post(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            await self.error("invalid_input", f"the message is invalid: {problems}", request_id=request_id)
            return
        except AppError as exc:
            await self.error(exc.code, exc.message, request_id=request_id, details=exc.details)
            return
        except infrastructure_errors() as exc:
            await self.error("upstream_unavailable", str(exc), request_id=request_id)
            return
        await self.send({"type": "sent", "message": MessageOut.from_row(message).model_dump(mode="json"),
                         "job_id": str(job.id), "request_id": request_id})
        self.subscribe(job.id, "0-0")  # from the stream's start: the worker may be ahead of this frame

    async def handle(self, raw: str) -> None:
        try:
            message = strict_json_loads(raw)
            action = message["action"]
        except InputRejected as exc:
            await self.error("invalid_input", f"the message is invalid: {exc.message}", details=[exc.detail()])
            return
        except (json.JSONDecodeError, KeyError, TypeError):
            await self.error("malformed_message", 'send JSON like {"action": "subscribe", "job_id": "..."}')
            return
        if action == "ping":
            await self.send({"type": "pong"})
            return
        if action == "send":
            await self.send_message(message)
            return
        if action not in ("subscribe", "unsubscribe"):
            await self.error("unknown_action", f"unknown action {action!r}: use subscribe, unsubscribe, send or "
                             "ping")
            return
        try:
            job_id = uuid.UUID(str(message.get("job_id")))
            last_event_id = progress.check_last_event_id(message.get("last_event_id"))
        except ValueError:
            await self.error("invalid_input", "job_id must be a UUID", str(message.get("job_id")))
            return
        except AppError as exc:
            await self.error(exc.code, exc.message, str(message.get("job_id")))
            return
        if action == "subscribe":
            if not can_follow(self.who, job_id):
                await self.error("not_found", f"job {job_id} not found", str(job_id))
                return
            if job_id not in self.subscriptions:
                await self.send({"type": "subscribed", "job_id": str(job_id)})
                self.subscribe(job_id, last_event_id)
        else:
            task = self.subscriptions.pop(job_id, None)
            if task is not None:
                task.cancel()
            await self.send({"type": "unsubscribed", "job_id": str(job_id), "reason": "requested"})

    async def close(self) -> None:
        for task in list(self.subscriptions.values()):
            task.cancel()
        for task in list(self.subscriptions.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@router.websocket("/api/v1/ws")
async def job_socket(ws: WebSocket,
                     who: Annotated[Principal | AppError, Depends(AllowSocket(Permission.JOBS_READ))]) -> None:
    """Follow several jobs, and talk to agents, over one WebSocket (see the module documentation for the
    protocol)."""
    await ws.accept()
    if isinstance(who, AppError):
        # Browsers never see a refused handshake's reason: accept, say why, close.
        await ws.send_text(json.dumps({"type": "error", "code": who.code, "message": who.message}))
        await ws.close(code=4000 + who.status_code, reason=who.code)
        return
    conn = Connection(ws, who)
    SOCKETS.inc()
    ping_every = get_settings().ws_ping_seconds

    async def pinger() -> None:
        while True:
            await asyncio.sleep(ping_every)
            await conn.send({"type": "ping"})

    pings = asyncio.create_task(pinger())
    try:
        while True:
            await conn.handle(await ws.receive_text())
    except WebSocketDisconnect:
        pass
    finally:
        SOCKETS.dec()
        pings.cancel()
        await conn.close()
