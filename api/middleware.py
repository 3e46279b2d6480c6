"""Request id, access log and latency histogram, as one pure ASGI middleware (streaming-safe)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from api.errors import unexpected_error_response
from core.logging import request_id_var
from core.metrics import REQUEST_LATENCY

log = logging.getLogger("agentmem.access")
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    """Give every request an id (honouring a sane X-Request-ID), log it, time it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method", "WS"), scope["path"])
            if scope["type"] != "http" or status.get("started"):
                raise
            await unexpected_error_response()(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            if scope["type"] == "http":
                is_stream = template.endswith("/events")
                if not is_stream:
                    REQUEST_LATENCY.labels(scope["method"], template, str(status["code"])).observe(elapsed)
                if template not in ("/healthz", "/readyz", "/metrics"):  # probes: scraped often, never news
                    log.info("%s %s %d %.1fms", scope["method"], scope["path"], status["code"], elapsed * 1000,
                             extra={"method": scope["method"], "route": template, "status_code": status["code"],
                                    "duration_ms": round(elapsed * 1000, 2)})
            request_id_var.reset(token)
