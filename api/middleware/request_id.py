"""A request id for every request: a sane incoming `X-Request-ID` is kept (so a proxy's or a client's id
follows the request), anything else is replaced by a new one. It is set in `core.logging.request_id_var`
for the log lines, error bodies and audit rows below, and sent back as the `X-Request-ID` header."""

from __future__ import annotations

import re
import uuid

from api.middleware.base import Middleware, on_response_start
from core.logging import request_id_var

VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestId(Middleware):
    """Give the request (or WebSocket) its id, and the response its `X-Request-ID` header."""

    scope_types = ("http", "websocket")

    async def handle(self, scope, receive, send) -> None:
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex

        async def add_id(message) -> None:
            message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, on_response_start(send, add_id))
        finally:
            request_id_var.reset(token)
