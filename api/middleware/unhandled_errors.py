"""The last resort: an exception no handler took becomes the API's 500 (`internal_error`), logged once
with its traceback.

It sits inside the request id, access log and audit middleware, so that 500 quotes the request id,
is logged with its status and audited like any answer. Once a response has begun (a stream) its
status can't change: the exception goes on up and the server ends the connection.
"""

from __future__ import annotations

import logging

from api.errors import unexpected_error_response
from api.middleware.base import Middleware, on_response_start

log = logging.getLogger("agentmem.access")


class UnhandledErrors(Middleware):
    """Render an unhandled exception as the standard 500 body, if still possible."""

    scope_types = ("http", "websocket")

    async def handle(self, scope, receive, send) -> None:
        started = False

        async def note_start(message) -> None:
            nonlocal started
            started = True

        send_noting_start = on_response_start(send, note_start)
        try:
            await self.app(scope, receive, send_noting_start)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method", "WS"), scope["path"])
            if scope["type"] != "http" or started:
                raise
            await unexpected_error_response()(scope, receive, send_noting_start)
