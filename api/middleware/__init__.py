"""The HTTP middleware: one concern per module, each pure ASGI (a streamed response passes through
untouched but for the headers of its first message).

`install_middleware` stacks them, outermost first:

- `request_id`: the log lines, error bodies and audit rows of everything below carry the request's id;
- `access_log`: times everything below, the audit write included, and logs the final status, a 500 too;
- `audit`: writes a mutation's row as its response starts, after the headers below are set (so
  Server-Timing's `app` leaves the write out);
- `server_timing`, `rate_limit`: headers on every response, errors included;
- `unhandled_errors`: an exception nothing handled becomes a 500, which the middleware above then
  treat like any other answer;
- `request_limits`: oversized headers and bodies are refused before any route runs.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.middleware.access_log import AccessLog
from api.middleware.audit import AuditLog
from api.middleware.rate_limit import RateLimitHeaders
from api.middleware.request_id import RequestId
from api.middleware.request_limits import RequestLimits
from api.middleware.server_timing import ServerTiming
from api.middleware.unhandled_errors import UnhandledErrors
from core.settings import get_settings


def install_middleware(app: FastAPI) -> None:
    """Add the stack to the app, in the order of this module's docstring."""
    settings = get_settings()
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
                       upload_limits={"/api/v1/sources": settings.source_max_bytes,
                                      "/api/v1/imports": settings.import_max_bytes})
    outermost_first = [RequestId, AccessLog, AuditLog, *([ServerTiming] if settings.server_timing else []),
                       RateLimitHeaders, UnhandledErrors]
    for middleware in reversed(outermost_first):  # the last one added is the outermost
        app.add_middleware(middleware)
