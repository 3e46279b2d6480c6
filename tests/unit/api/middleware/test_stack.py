"""api/middleware/__init__.py: the application's middleware, outermost first, each where its concern needs it."""

from __future__ import annotations

from fastapi import FastAPI

from api.middleware import install_middleware
from api.middleware.access_log import AccessLog
from api.middleware.audit import AuditLog
from api.middleware.rate_limit import RateLimitHeaders
from api.middleware.request_id import RequestId
from api.middleware.request_limits import RequestLimits
from api.middleware.server_timing import ServerTiming
from api.middleware.unhandled_errors import UnhandledErrors


def stack() -> list[type]:
    app = FastAPI()
    install_middleware(app)
    return [m.cls for m in app.user_middleware]  # Starlette keeps them outermost first


def test_the_stack_runs_from_the_request_id_to_the_size_limits(override_settings):
    override_settings(server_timing=True)
    assert stack() == [RequestId, AccessLog, AuditLog, ServerTiming, RateLimitHeaders, UnhandledErrors,
                       RequestLimits]


def test_without_server_timing_its_middleware_is_left_out(override_settings):
    override_settings(server_timing=False)
    assert ServerTiming not in stack()
