"""What the SDK raises: the API's error body as an exception, and the client-side failures around it."""

from __future__ import annotations

from typing import Any

import httpx


class AgentMemError(Exception):
    """Everything the SDK raises derives from this."""


class APIConnectionError(AgentMemError):
    """The API could not be reached (or the connection broke) and retrying did not help."""


class APIError(AgentMemError):
    """An error answer of the API: `{"error": {"code", "message", "details", "request_id"}}` with its status.

    `status_code` is None for an `error` event that ended an event stream (the status line was already sent).
    """

    def __init__(self, status_code: int | None, code: str, message: str, details: Any = None,
                 request_id: str | None = None, headers: httpx.Headers | None = None) -> None:
        super().__init__(f"{status_code or 'stream'} {code}: {message}" + (f" (request {request_id})"
                                                                         if request_id else ""))
        self.status_code, self.code, self.message = status_code, code, message
        # An object, as the API documents `error.details` ({} when there are none).
        self.details = details if details is not None else {}
        self.request_id = request_id
        self.headers = headers or httpx.Headers()


class BadRequestError(APIError):
    """400 (malformed JSON) or 422 (invalid input)."""


class AuthenticationError(APIError):
    """401: missing, invalid, expired or revoked credentials."""


class PermissionDeniedError(APIError):
    """403: the key's role or scopes lack the permission."""


class NotFoundError(APIError):
    """404: not found in your organization."""


class ConflictError(APIError):
    """409: a version conflict, a busy conversation, an Idempotency-Key reused with another body…"""


class RateLimitError(APIError):
    """429: a rate limit or a job quota (raised once the retries are spent)."""


class UnavailableError(APIError):
    """503: overloaded, or the database or Redis is down (raised once the retries are spent)."""


_BY_STATUS: dict[int, type[APIError]] = {400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
                                         404: NotFoundError, 409: ConflictError, 422: BadRequestError,
                                         429: RateLimitError, 503: UnavailableError}


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error response (read already), whatever its body: a proxy's HTML page too."""
    request_id = response.headers.get("X-Request-ID")
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
        details, request_id = body.get("details"), body.get("request_id") or request_id
    except (ValueError, KeyError, TypeError):
        code, message, details = f"http_{response.status_code}", response.text[:500] or response.reason_phrase, None
    cls = _BY_STATUS.get(response.status_code, APIError)
    return cls(response.status_code, code, message, details, request_id, response.headers)


class JobFailed(AgentMemError):
    """`Job.wait()` saw the job end `failed` or `cancelled`; the job (with its `error`) is `.job`."""

    def __init__(self, job: Any) -> None:
        error = job.error
        super().__init__(f"job {job.id} {job.status}" + (f": {error.code}: {error.message}" if error else ""))
        self.job = job


class JobTimeout(AgentMemError, TimeoutError):
    """The job did not finish within the time given to `wait()` or `events()`; it goes on."""
