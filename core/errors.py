"""Application errors: each carries its HTTP status and a stable machine-readable code."""

from __future__ import annotations

from typing import Any


def error_details(details: Any) -> dict[str, Any]:
    """An error's `details` in its one shape, an object: none is `{}`, a list of problems is
    `{"errors": [...]}`, any other value `{"value": ...}`."""
    if details is None:
        return {}
    if isinstance(details, dict):
        return details
    if isinstance(details, (list, tuple)):
        return {"errors": list(details)}
    return {"value": details}


class AppError(Exception):
    """Base of every error AgentMem reports on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = error_details(details)
        self.headers = headers


class BadRequest(AppError):
    status_code, code = 400, "bad_request"


class Unauthorized(AppError):
    """No credentials, or credentials that can't be accepted (the code says why)."""

    status_code, code = 401, "not_authenticated"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code, details=details, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code, code = 403, "permission_denied"


class TooManyRequests(AppError):
    status_code, code = 429, "rate_limited"


class NotFound(AppError):
    status_code, code = 404, "not_found"


class Gone(AppError):
    """It existed, and is no more (an expired export's archive)."""

    status_code, code = 410, "gone"


class Conflict(AppError):
    status_code, code = 409, "conflict"


class InvalidInput(AppError):
    status_code, code = 422, "invalid_input"


class UpstreamUnavailable(AppError):
    """A dependency (database, Redis, model endpoint) is down or timing out; worth retrying."""

    status_code, code = 503, "upstream_unavailable"


class Overloaded(AppError):
    """The service is at capacity (too many requests at once, or no free database connection in
    time), not down: the request did nothing and may be sent again after `retry_after` seconds."""

    status_code, code = 503, "overloaded"

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after)})


class PermanentJobError(AppError):
    """A job failure that retrying cannot fix; the job fails at once with this code."""

    status_code, code = 422, "job_failed"


class TransientJobError(AppError):
    """A job failure worth retrying with backoff (rate limit, 5xx, timeout)."""

    status_code, code = 503, "transient_failure"


class LLMUnavailable(TransientJobError):
    """The LLM provider kept failing with 429/5xx/timeouts after the client's own retries; retry the job later."""

    code = "llm_unavailable"


class LLMRejected(PermanentJobError):
    """The LLM provider refused the request (400/401/403/404/422): asking again won't help."""

    code = "llm_rejected"


class LLMOutputInvalid(PermanentJobError):
    """The model's answer did not match the expected shape, even after one repair attempt."""

    code = "llm_output_invalid"


class LLMNotConfigured(InvalidInput, PermanentJobError):
    """No LLM provider for the organization nor a service-wide one (422 in the API, a permanent job failure)."""

    status_code, code = 422, "llm_not_configured"


class URLNotAllowed(InvalidInput, PermanentJobError):
    """A user-supplied URL leads where the outbound policy refuses (core/outbound.py): 422 in the API, a
    permanent job failure when it is found at call time."""

    status_code, code = 422, "url_not_allowed"


class URLUnresolvable(InvalidInput):
    """A user-supplied URL's host name does not resolve, so it can't be checked (nor used)."""

    status_code, code = 422, "url_unresolvable"


class JobCancelled(Exception):
    """Raised at a checkpoint when the job's cancellation was requested. A handler that keeps what it did
    before the checkpoint sets `result` to say so (the cancelled job's result)."""

    def __init__(self, result: dict | None = None) -> None:
        super().__init__("cancelled")
        self.result = result


def overload_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean busy, not down: the connection pool had no free connection in time
    (`sqlalchemy.exc.TimeoutError`, a type of its own, not the driver's). The API answers them as
    503 `overloaded`; a job retries them as it retries any of `infrastructure_errors()`."""
    import sqlalchemy.exc

    return (sqlalchemy.exc.TimeoutError,)


def infrastructure_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a database or Redis outage: a 503 in the API, a retry in a job (the
    `overload_errors()` among them: the API tells those apart)."""
    import asyncpg
    import redis.exceptions
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
            sqlalchemy.exc.DisconnectionError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            # asyncpg lets a refused or reset socket through unwrapped.
            ConnectionRefusedError, ConnectionResetError)
