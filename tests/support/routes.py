"""The API's route table for generated tests: every route of `api.app.ROUTERS`, callable with chosen ids.

A test parametrized over `endpoints()` covers a new route the day it is added; a route with a request
body needs a minimal one in `BODIES`, or `Endpoint.body` fails and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from fastapi.routing import APIRoute, APIWebSocketRoute

from api.app import ROUTERS
from api.deps import PUBLIC_ROUTES, Allow, route_guard
from schemas.permissions import Permission

WEBSOCKET = "WEBSOCKET"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Body placeholders that name a row (or an account): a call filling one with another organization's targets it.
ROW_IDS = frozenset({"memory_id", "job_id", "key_id", "org_id", "user_id", "organization_id", "username",
                     "config_id"})

@dataclass(frozen=True)
class Multipart:
    """A multipart/form-data body: text fields (placeholders filled like a JSON body's) and files."""

    data: dict[str, str]
    files: dict[str, tuple[str, bytes, str]]


# The smallest valid body of each route that takes one; "{name}" is filled from the ids the test passes.
BODIES: dict[str, Any] = {
    "POST /api/v1/auth/logout": {},
    "PATCH /api/v1/auth/me": {"full_name": "Route Matrix"},
    "POST /api/v1/organizations": {"name": "{new_name}"},
    "PATCH /api/v1/organizations/{org_id}": {"name": "{new_name}"},
    "POST /api/v1/organizations/{org_id}/members": {"username": "{username}", "role": "viewer"},
    "PATCH /api/v1/organizations/{org_id}/members/{user_id}": {"role": "viewer"},
    "POST /api/v1/api-keys": {"name": "route matrix", "role": "viewer"},
    "POST /api/v1/memories": {"items": [{"content": "a memory of the calling organization"}], "user_id": "{scope}"},
    "POST /api/v1/memories/search": {"query": "{query}"},
    "POST /api/v1/messages/search": {"query": "{query}"},
    "PATCH /api/v1/memories/{memory_id}": {"content": "changed by the route matrix"},
    "POST /api/v1/summaries": {"memory_ids": ["{memory_id}"]},
    # A public address literal (no DNS; the outbound policy refuses internal ones), never called.
    "POST /api/v1/llm/configs": {"name": "{new_name}", "model": "matrix-model", "base_url": "http://93.184.216.34:9/v1"},
    "PATCH /api/v1/llm/configs/{config_id}": {"max_retries": 2},
    "PUT /api/v1/llm/configs/default": {"config_id": "{config_id}"},
    "POST /api/v1/agents": {"name": "{new_name}"},
    "PATCH /api/v1/agents/{agent_id}": {"description": "changed by the route matrix"},
    "POST /api/v1/blocks": {"label": "{new_name}", "value": "made by the route matrix"},
    "PATCH /api/v1/blocks/{block_id}": {"value": "changed by the route matrix"},
    "POST /api/v1/blocks/{block_id}/revert": {"version": 1},
    "POST /api/v1/blocks/{block_id}/rewrite": {"strategy": "preserve_recent"},
    "POST /api/v1/tools": {"name": "{new_name}", "language": "python", "source": "print('route matrix')"},
    "PATCH /api/v1/tools/{tool_id}": {"description": "changed by the route matrix"},
    "POST /api/v1/tools/{tool_id}/execute": {"arguments": {}},
    "POST /api/v1/stream-tokens": {"job_id": "{job_id}"},
    "POST /api/v1/agents/{agent_id}/conversations": {"title": "route matrix"},
    "PATCH /api/v1/conversations/{conversation_id}": {"title": "changed by the route matrix"},
    # `respond: false`: stored as history, no turn (the matrix has no LLM behind it).
    "POST /api/v1/conversations/{conversation_id}/messages": {"content": "from the route matrix", "respond": False},
    "POST /v1/chat/completions": {"model": "{agent_id}", "messages": [{"role": "user", "content": "hi, matrix"}]},
    "PATCH /api/v1/admin/users/{user_id}": {"is_active": False},
    "PATCH /api/v1/admin/organizations/{organization_id}/limits": {"rate_limit_per_minute": 5},
    # A public address literal again: the outbound policy passes it without DNS, and nothing calls it here.
    "POST /api/v1/mcp/servers": {"name": "{new_name}", "transport": "streamable_http",
                                 "url": "http://93.184.216.34:9/mcp", "headers": {"Authorization": "Bearer matrix"}},
    "PATCH /api/v1/mcp/servers/{server_id}": {"description": "changed by the route matrix"},
    "POST /api/v1/mcp/servers/{server_id}/tools/{tool_name}/call": {"arguments": {"text": "route matrix"}},
    "POST /api/v1/sources": Multipart(data={"user_id": "{scope}"}, files={
        "file": ("matrix.txt", b"A document uploaded by the route matrix.", "text/plain")}),
    "POST /api/v1/maintenance/{task}": {"params": {}},
    "POST /api/v1/exports": {"scope": "user", "scope_id": "{scope}", "include": ["memories"]},
    # A public address literal: the outbound policy passes it without DNS; no event reaches it in the matrix.
    "POST /api/v1/webhooks": {"url": "http://93.184.216.34:9/hook", "event_types": ["job.failed"]},
    "PATCH /api/v1/webhooks/{webhook_id}": {"description": "changed by the route matrix"},
    "POST /api/v1/schedules": {"name": "{new_name}", "task": "integrity", "cron": "0 5 * * *"},
    "PATCH /api/v1/schedules/{schedule_id}": {"enabled": False},
}


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, Multipart):
        return _placeholders(value.data)
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(_placeholders(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_placeholders(v) for v in value))
    return set()


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, Multipart):
        return Multipart(_fill(value.data, ids), value.files)
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: str(ids[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@dataclass(frozen=True)
class Endpoint:
    """One method of one route."""

    method: str
    route: APIRoute | APIWebSocketRoute

    @property
    def path(self) -> str:
        return self.route.path_format

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def public(self) -> bool:
        return self.path in PUBLIC_ROUTES

    @property
    def guard(self) -> Allow | None:
        return route_guard(self.route)

    @property
    def admin(self) -> bool:
        return self.guard is not None and self.guard.permission is Permission.USERS_ADMIN

    @property
    def template(self) -> Any:
        # Public routes (sign-up, sign-in) are not called by the generated tests: they need no body here.
        if self.public or self.method == WEBSOCKET or getattr(self.route, "body_field", None) is None:
            return None
        assert self.id in BODIES, f"add a minimal valid body for {self.id} to tests/support/routes.py BODIES"
        return BODIES[self.id]

    @property
    def targets(self) -> set[str]:
        """The ids that name an existing row: every path parameter, and the body fields that are ids."""
        return set(PLACEHOLDER.findall(self.path)) | (_placeholders(self.template) & ROW_IDS)

    def url(self, ids: dict[str, Any]) -> str:
        return _fill(self.path, ids)

    def body(self, ids: dict[str, Any]) -> Any:
        return _fill(self.template, ids)


def endpoints() -> list[Endpoint]:
    """Every HTTP method of every route, and every WebSocket route, of the application's routers."""
    found = []
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIWebSocketRoute):
                found.append(Endpoint(WEBSOCKET, route))
            elif isinstance(route, APIRoute):
                found.extend(Endpoint(method, route) for method in sorted(route.methods - {"HEAD"}))
    return found


def fresh_ids(**ids: Any) -> dict[str, Any]:
    """Ids that name nothing, updated with `ids`; plus values for the non-id placeholders."""
    return {"memory_id": uuid.uuid4(), "job_id": uuid.uuid4(), "key_id": uuid.uuid4(), "org_id": uuid.uuid4(),
            "user_id": uuid.uuid4(), "organization_id": uuid.uuid4(), "username": f"nobody-{uuid.uuid4().hex[:10]}",
            "config_id": uuid.uuid4(), "agent_id": uuid.uuid4(), "block_id": uuid.uuid4(),
            "tool_id": uuid.uuid4(), "conversation_id": uuid.uuid4(), "server_id": uuid.uuid4(), "tool_name": "echo",
            "source_id": uuid.uuid4(), "task": "integrity", "export_id": uuid.uuid4(),
            "webhook_id": uuid.uuid4(), "delivery_id": uuid.uuid4(), "schedule_id": uuid.uuid4(),
            "new_name": f"renamed-{uuid.uuid4().hex[:10]}", "scope": f"matrix-{uuid.uuid4().hex[:10]}",
            "query": "what does this organization remember?", "path": f"matrix/{uuid.uuid4().hex[:10]}.txt"} | ids


def send_body(body: Any) -> dict[str, Any]:
    """httpx's keyword arguments that send a template's body: JSON, a multipart form, or nothing."""
    if body is None:
        return {}
    if isinstance(body, Multipart):
        return {"data": body.data, "files": body.files}
    return {"json": body}


@dataclass
class Reply:
    status: int
    text: str  # empty for an event stream (it never ends; its body is not read)

    @property
    def code(self) -> str | None:
        try:
            return json.loads(self.text)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


async def call(client: httpx.AsyncClient, endpoint: Endpoint, ids: dict[str, Any],
               headers: dict[str, str] | None = None) -> Reply:
    """Call an HTTP endpoint with `ids` in its path and body; an event stream is closed once its status is known."""
    body = endpoint.body(ids)
    async with client.stream(endpoint.method, endpoint.url(ids), headers=headers, **send_body(body)) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return Reply(response.status_code, "")
        await response.aread()
        return Reply(response.status_code, response.text)


@dataclass
class SocketReply:
    frames: list[dict]
    close_code: int | None  # set when the server closed the socket


def socket_url(api_url: str, path: str = "/api/v1/ws", query: str = "") -> str:
    return api_url.replace("http://", "ws://", 1) + path + (f"?{query}" if query else "")


async def socket_exchange(url: str, headers: dict[str, str] | None, message: dict, *, until, timeout: float = 30
                          ) -> SocketReply:
    """Connect, send one message, and collect frames until `until(frame)` is true or the server closes."""
    frames: list[dict] = []
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):  # refused: the error frame is waiting to be read
            await ws.send(json.dumps(message))

        async def read() -> int | None:
            while True:
                try:
                    frame = json.loads(await ws.recv())
                except websockets.ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd else None
                frames.append(frame)
                if until(frame):
                    return None

        close_code = await asyncio.wait_for(read(), timeout)
    return SocketReply(frames, close_code)
