"""One rendering of errors: `{"error": {"code", "message", "details", "request_id"}}`."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import AppError, error_details, infrastructure_errors, overload_errors
from core.logging import request_id_var
from core.settings import get_settings

log = logging.getLogger(__name__)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def error_response(status: int, code: str, message: str, details=None, headers=None) -> JSONResponse:
    """A JSON error in the one shape clients parse."""
    body = {"error": {"code": code, "message": message, "details": error_details(details),
                      "request_id": request_id_var.get()}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _app_error(request: Request, exc: AppError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON",
                              [{"loc": e.get("loc"), "msg": e.get("msg")} for e in errors])
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
    summary = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:3])
    return error_response(422, "invalid_input", f"the request is invalid: {summary}", details)


@lru_cache(maxsize=4)
def _path_patterns(paths: tuple[tuple[str, tuple[str, ...]], ...]) -> list[tuple[re.Pattern, tuple[str, ...]]]:
    from api.routing import path_pattern

    return [(path_pattern(path), methods) for path, methods in paths]


def allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at this path (Starlette's 405 names only the first route's)."""
    paths = tuple((path, tuple(m.upper() for m in operations)) for path, operations in
                  request.app.openapi()["paths"].items())
    methods = {m for pattern, found in _path_patterns(paths) if pattern.match(request.url.path) for m in found}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        allow = allowed_methods(request)
        headers = {**(headers or {}), "Allow": ", ".join(allow)}
        message = f"{request.method} is not allowed here; use {', '.join(allow)}"
        return error_response(405, code, message, {"allowed": allow}, headers=headers)
    if exc.status_code == 404 and message == "Not Found":  # no route: say what the path should look like
        message = f"nothing at {request.url.path}: check the path (ids are UUIDs) against /docs"
    return error_response(exc.status_code, code, message, headers=headers)


async def _infrastructure_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
    module = type(exc).__module__
    code = "redis_unavailable" if module.startswith("redis") else "database_unavailable"
    return error_response(503, code, f"{code.split('_')[0].title()} is unavailable; try again shortly",
                          headers={"Retry-After": "5"})


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    # No free database connection in time: load, not an outage (the pool's limits are settings).
    log.warning("no free database connection within AGENTMEM_DB_POOL_TIMEOUT_SECONDS: %s", type(exc).__name__)
    retry_after = get_settings().overload_retry_after_seconds
    return error_response(503, "overloaded", f"the service is busy; retry after {retry_after} s",
                          headers={"Retry-After": str(retry_after)})


def unexpected_error_response() -> JSONResponse:
    """The 500 for an exception nothing else handled (rendered by the request middleware)."""
    return error_response(500, "internal_error", "an unexpected error occurred; quote the request id when reporting it")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; Starlette picks the most specific class along the exception's MRO."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for exc_class in infrastructure_errors():
        app.add_exception_handler(exc_class, _infrastructure_error)
    for exc_class in overload_errors():  # busy, not down: replaces the outage handler for these types
        app.add_exception_handler(exc_class, _overloaded)
    # Unknown exceptions are rendered by api.middleware.unhandled_errors, inside the request id
    # middleware, so the 500 carries the request id and is logged once.


_STANDARD_ERRORS = {
    401: "Missing, invalid, expired or revoked credentials",
    403: "Your role lacks the permission",
    404: "Not found in your organization",
    422: "Invalid input",
    429: "Rate limit exceeded (see `Retry-After`)",
    503: "Database or Redis unavailable, or the service is overloaded (see `code`; `Retry-After`)",
}


def error_responses(*codes: int, **described: str) -> dict[int | str, dict]:
    """OpenAPI `responses` for a router or route: the standard error statuses in `codes`, each with
    the `ErrorOut` body, and their wording replaced where `described` (`e403="Needs …"`) says more."""
    from schemas.common import ErrorOut

    out: dict[int | str, dict] = {}
    for code in codes:
        out[code] = {"model": ErrorOut, "description": described.get(f"e{code}", _STANDARD_ERRORS[code])}
    return out
