"""WebSocket: follow several jobs on one socket, and talk to agents on it. `PROTOCOL` documents the
messages; the OpenAPI description and the README carry it, since OpenAPI has no WebSocket operations."""

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
from core.errors import AppError, Forbidden, NotFound, infrastructure_errors
from core.logging import request_id_var
from core.metrics import OPEN_STREAMS
from core.settings import get_settings
from pipelines.accounts import audit, limits
from pipelines.conversations import messages as posting
from pipelines.jobs import follow as progress, lifecycle
from pipelines.jobs.rows import get_job
from schemas.conversations import MessageOut, SocketSend
from schemas.events import JobEvent
from schemas.inputs import InputRejected, strict_json_loads
from schemas.permissions import Permission, Principal
from schemas.tables import Job, Message

log = logging.getLogger(__name__)
router = APIRouter(route_class=CheckedRoute, tags=["jobs"])

PROTOCOL = """
Connect to `ws://HOST/api/v1/ws` with the usual `Authorization` header or, from a browser, `?token=` and a
stream token (`POST /api/v1/stream-tokens`). Every frame is one JSON object. Needs `jobs:read`.

Client → server, and the answer:
- `{"action": "subscribe", "job_id", "last_event_id"?}` → `{"type": "subscribed", "job_id"}`, then `event`
  frames: a `snapshot` (the job row), the job's events after `last_event_id` (or from now), ending with its
  terminal event and `{"type": "unsubscribed", "job_id", "reason": "finished"}`.
- `{"action": "unsubscribe", "job_id"}` → `{"type": "unsubscribed", "job_id", "reason": "requested"}`.
- `{"action": "send", "conversation_id", "content", "request_id"?, "max_steps"?, "idempotency_key"?}` →
  `{"type": "sent", "message", "job_id", "request_id"}`, then the agent turn's events from its start
  (needs `conversations:write`; a stream token can't).
- `{"action": "ping"}` → `{"type": "pong"}`.

Server → client:
- `{"type": "event", "event": {"id", "type", "job_id", "org_id", "data", "ts"}}`: a job event, as SSE sends
  it: `snapshot`, `queued`, `started`, `progress` `{done, total, message}`, `retrying`, `token`,
  `tool_call`, `tool_result`, `message`, `usage`, `succeeded` `{result}`, `failed` `{error}`, `cancelled`
  `{error, result?}`. Its `id` resumes a subscription as `last_event_id`.
- `{"type": "error", "code", "message", "job_id", "request_id"?, "details"?}`: a refused frame; the socket
  stays open. Codes: `not_found` (an unknown job, or another organization's: sent instead of
  `subscribed`), `invalid_input` (`job_id` missing or not a UUID; `job_id` is then `null` unless the client
  sent a string), `invalid_last_event_id`, `malformed_message`, `unknown_action`, `permission_denied`,
  `upstream_unavailable`.
- `{"type": "ping"}`: every `AGENTMEM_WS_PING_SECONDS`; no answer needed.

A refused connection (bad or missing credentials, a stream token for another job) gets one `error` frame,
then a close with code 4000 + the HTTP status (4401, 4403).
"""
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

    async def exists(self, job_id: uuid.UUID) -> bool:
        """Whether the job is one of the caller's organization's."""
        async with session_scope() as session:
            try:
                await get_job(session, self.who.org_id, job_id)
            except NotFound:
                return False
        return True

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
            await self.error("invalid_input", f"the message is invalid: {exc.message}",
                             details={"errors": [exc.detail()]})
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
        raw_id = message.get("job_id")
        echo = raw_id[:100] if isinstance(raw_id, str) else None  # never "None" for a missing id
        if raw_id is None:
            await self.error("invalid_input", f"{action} needs a job_id", details={"errors": [
                {"loc": ["job_id"], "msg": "Field required", "type": "missing"}]})
            return
        try:
            job_id = uuid.UUID(raw_id) if isinstance(raw_id, str) else None
            if job_id is None:
                raise ValueError(raw_id)
            last_event_id = progress.check_last_event_id(message.get("last_event_id"))
        except ValueError:
            await self.error("invalid_input", "job_id must be a UUID", echo)
            return
        except AppError as exc:
            await self.error(exc.code, exc.message, echo, details=exc.details)
            return
        if action == "subscribe":
            # An unknown job (or another organization's) is refused before anything says `subscribed`.
            if not can_follow(self.who, job_id) or not await self.exists(job_id):
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
