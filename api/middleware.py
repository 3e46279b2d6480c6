"""Request id, access log, latency histogram, Server-Timing, rate-limit headers and the audit log of
mutations, as one pure ASGI middleware (streaming-safe)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from api.context import RequestInfo, request_info_var
from api.errors import unexpected_error_response
from core.db import session_scope
from core.errors import infrastructure_errors
from core.logging import request_id_var
from core.metrics import REQUEST_LATENCY
from core.timing import Timings, timings_var
from pipelines.accounts import audit

log = logging.getLogger("agentmem.access")
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


async def write_audit(scope, info: RequestInfo, status_code: int) -> None:
    """The audit row of a mutating request; a database outage is logged, never turned into a failed request."""
    route = scope.get("route")
    principal = info.principal
    target_type, target_id = info.target_type, info.target_id
    if target_id is None and route is not None:
        # Default target: the last path parameter (`/memories/{memory_id}` → memory, its id).
        params = scope.get("path_params") or {}
        if params:
            name = list(params)[-1]
            target_type, target_id = name.removesuffix("_id"), str(params[name])
    org_id = info.org_id or (principal.org_id if principal else None)
    try:
        async with session_scope() as session:
            await audit.record(session, org_id=org_id, actor=info.actor or (principal.actor if principal else "anonymous"),
                               action=getattr(route, "name", None) or "unmatched",
                               result="success" if status_code < 400 else "failure", target_type=target_type,
                               target_id=target_id, status_code=status_code, request_id=request_id_var.get(),
                               ip=info.ip, details=info.details)
            await session.commit()
    except infrastructure_errors() as exc:
        log.error("audit entry for %s %s not written: %s", scope.get("method"), scope["path"], exc)


class RequestContext:
    """Give every request an id (honouring a sane X-Request-ID), log it, time it."""

    def __init__(self, app, audit_log: bool = False, server_timing: bool = True) -> None:
        self.app = app
        self.audit_log = audit_log  # create_app turns it on; unit tests of error rendering run without a database
        self.server_timing = server_timing

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        client = scope.get("client")
        info = RequestInfo(ip=client[0] if client else None)
        info_token = request_info_var.set(info)
        timings = Timings()
        timings_token = timings_var.set(timings)
        started = time.perf_counter()
        status = {"code": 500}
        audited = self.audit_log and scope["type"] == "http" and scope["method"] in MUTATING

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                headers = message.setdefault("headers", [])
                headers.append((b"x-request-id", request_id.encode()))
                present = {k.lower() for k, _ in headers}
                for name, value in info.rate_headers.items():
                    if name.lower().encode() not in present:
                        headers.append((name.encode(), value.encode()))
                if self.server_timing and scope["type"] == "http":
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    headers.append((b"server-timing", timings.header(elapsed_ms).encode()))
                route = scope.get("route")
                if audited and getattr(getattr(route, "endpoint", None), "__audited__", True):
                    # Before the response leaves: a client that saw the answer can read its audit entry.
                    await write_audit(scope, info, message["status"])
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
            template = getattr(route, "path_format", None) or "unmatched"
            elapsed = time.perf_counter() - started
            if scope["type"] == "http":
                is_stream = template.endswith("/events")
                if not is_stream:
                    REQUEST_LATENCY.labels(scope["method"], template, str(status["code"])).observe(elapsed)
                if template not in ("/healthz", "/readyz", "/metrics"):  # probes: scraped often, never news
                    # A `token=` in the query is blanked by core.logging's RedactSecrets filter.
                    query = scope.get("query_string", b"").decode("latin-1")
                    path = scope["path"] + (f"?{query}" if query else "")
                    log.info("%s %s %d %.1fms", scope["method"], path, status["code"], elapsed * 1000,
                             extra={"method": scope["method"], "route": template, "status_code": status["code"],
                                    "duration_ms": round(elapsed * 1000, 2)})
            timings_var.reset(timings_token)
            request_info_var.reset(info_token)
            request_id_var.reset(token)
