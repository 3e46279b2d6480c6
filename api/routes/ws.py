"""WebSocket: follow several jobs on one socket.

Client → server: `{"action": "subscribe", "job_id": "...", "last_event_id": "..."?}`,
`{"action": "unsubscribe", "job_id": "..."}`, `{"action": "ping"}`.
Server → client: `{"type": "event", "event": {...}}` (the same events as SSE, snapshot first),
`{"type": "subscribed" | "unsubscribed", "job_id"}`, `{"type": "error", "code", "message"}`,
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

from api.deps import AllowSocket, can_follow
from api.routing import CheckedRoute
from core.errors import AppError, infrastructure_errors
from core.settings import get_settings
from pipelines.jobs import follow as progress
from schemas.permissions import Permission, Principal

log = logging.getLogger(__name__)
router = APIRouter(route_class=CheckedRoute, tags=["jobs"])


class Connection:
    """One socket: its subscriptions and a lock so tasks never interleave frames."""

    def __init__(self, ws: WebSocket, who: Principal) -> None:
        self.ws, self.who = ws, who
        self.lock = asyncio.Lock()
        self.subscriptions: dict[uuid.UUID, asyncio.Task] = {}

    async def send(self, message: dict) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps(message, default=str))

    async def error(self, code: str, message: str, job_id: str | None = None) -> None:
        await self.send({"type": "error", "code": code, "message": message, "job_id": job_id})

    async def follow(self, job_id: uuid.UUID, last_event_id: str | None) -> None:
        try:
            async for event in progress.follow_job(self.who.org_id, job_id, last_event_id):
                if event is not None:
                    await self.send({"type": "event", "event": event.model_dump(mode="json")})
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

    async def handle(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            action = message["action"]
        except (json.JSONDecodeError, KeyError, TypeError):
            await self.error("malformed_message", 'send JSON like {"action": "subscribe", "job_id": "..."}')
            return
        if action == "ping":
            await self.send({"type": "pong"})
            return
        if action not in ("subscribe", "unsubscribe"):
            await self.error("unknown_action", f"unknown action {action!r}: use subscribe, unsubscribe or ping")
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
                self.subscriptions[job_id] = asyncio.create_task(self.follow(job_id, last_event_id))
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
    """Follow several jobs over one WebSocket (see the module documentation for the protocol)."""
    await ws.accept()
    if isinstance(who, AppError):
        # Browsers never see a refused handshake's reason: accept, say why, close.
        await ws.send_text(json.dumps({"type": "error", "code": who.code, "message": who.message}))
        await ws.close(code=4000 + who.status_code, reason=who.code)
        return
    conn = Connection(ws, who)
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
        pings.cancel()
        await conn.close()
