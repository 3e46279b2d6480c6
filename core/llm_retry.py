"""When LLM calls are retried, for how long we wait, and what their failures mean to a job.

Retried: 429, 408, 409, 5xx, timeouts and connection failures, with full-jitter exponential backoff,
or the provider's `Retry-After` (`retry-after-ms`, seconds or an HTTP date) plus a little jitter. A
`Retry-After` beyond `RETRY_AFTER_CAP_SECONDS` is not waited for in-process: the call fails with
LLMUnavailable at once and the broker retries the whole job later.

What a failure says. A base URL is chosen by an organization's admin, so a job's error must not tell
them what (if anything) answers at an address: a refused connection, a timeout, a TLS failure, a
redirect, an HTML 404 or a 200 that is no API answer all read the same, `llm_unavailable` "could not
be reached or gave no usable answer", are retried the same, and only the service's log has the
cause. An answer in the OpenAI error shape (`{"error": {"message": …}}`) is the provider's own word
and is reported with its status: 401 `llm_rejected`, 429 `llm_unavailable` with its `Retry-After`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from core.errors import LLMRejected, LLMUnavailable

if TYPE_CHECKING:
    from core.llm import ProviderSettings

log = logging.getLogger(__name__)

# A provider asking us to come back later than this is better served by the broker's retry of the
# whole job than by a worker coroutine sleeping on it.
RETRY_AFTER_CAP_SECONDS = 60.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 20.0
# Statuses worth asking again, as the openai package itself treats them.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds a provider asks us to wait: `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if not headers:
        return None
    headers = {name.lower(): value for name, value in headers.items()}
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    return value if value >= 0 else None


class UnusableAnswer(Exception):
    """The endpoint answered, but not as an OpenAI-compatible API does (HTML, no choices, an empty stream)."""


def provider_message(exc: openai.APIStatusError) -> str | None:
    """The error message of an answer in the OpenAI error shape (the provider's own words), else None.

    `{"error": {"message": …}}` as OpenAI, Azure, Ollama and recent vLLM send it, or vLLM's older
    `{"object": "error", "message": …}`; redirects never count, whatever their body.
    """
    if 300 <= exc.status_code < 400:
        return None
    try:
        body = json.loads(exc.response.content)
    except Exception:  # noqa: BLE001 - unread (httpx or httpx2), not text, not JSON: no message of the provider's
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    elif body.get("object") == "error" and isinstance(body.get("message"), str):
        message = body["message"]
    else:
        return None
    return " ".join(message.split())[:300]


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, 5xx, timeouts, connection failures and answers that are no API's: worth asking again."""
    if isinstance(exc, (openai.APIConnectionError, TimeoutError, UnusableAnswer)):  # incl. APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        if provider_message(exc) is None:  # retried as an unreachable endpoint is, so it looks the same
            return True
        return exc.status_code >= 500 or exc.status_code in RETRYABLE_STATUSES
    return False


def _hinted_wait(exc: BaseException | None) -> float | None:
    # Only a provider's own answer may set the pace: any other server's Retry-After would show it answered.
    if isinstance(exc, openai.APIStatusError) and provider_message(exc) is not None:
        return parse_retry_after(exc.response.headers)
    return None


def backoff_seconds(attempt: int, hinted: float | None) -> float:
    """Wait before attempt `attempt + 1`: the provider's hint plus a little jitter, else full-jitter exponential."""
    if hinted is not None:
        # Wait at least what was asked; the jitter keeps many workers from returning in the same instant.
        return hinted + random.uniform(0, min(1.0, 0.1 * hinted + 0.05))
    return random.uniform(0, min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempt)) + 0.05


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    return backoff_seconds(state.attempt_number, _hinted_wait(exc))


def _should_retry(exc: BaseException) -> bool:
    hinted = _hinted_wait(exc)
    return is_retryable(exc) and (hinted is None or hinted <= RETRY_AFTER_CAP_SECONDS)


def map_error(exc: BaseException, provider: ProviderSettings) -> Exception:
    """Translate a failed call (after retries) into LLMRejected or LLMUnavailable, saying only what is safe.

    The provider's own error answers keep their status and message; every other failure gets one
    message, the same for a refused connection, a timeout or a web page, and its cause goes to the log.
    """
    where = f"LLM provider {provider.name!r} ({provider.model})"
    message = provider_message(exc) if isinstance(exc, openai.APIStatusError) else None
    if isinstance(exc, openai.APIStatusError) and message is not None:
        details: dict[str, Any] = {"provider": provider.name, "status": exc.status_code}
        if is_retryable(exc):
            hinted = _hinted_wait(exc)
            if hinted is not None:
                details["retry_after"] = round(hinted, 3)
            return LLMUnavailable(f"{where} answered {exc.status_code}: {message}", details=details)
        return LLMRejected(f"{where} rejected the request ({exc.status_code}): {message}", details=details)
    log.warning("LLM provider %r at %s: no usable answer: %s", provider.name, provider.base_url or "(default)",
                describe_failure(exc))
    return LLMUnavailable(f"{where} could not be reached or gave no usable answer (timeout "
                          f"{provider.timeout_seconds:g} s); the service's log has the cause",
                          details={"provider": provider.name})


def describe_failure(exc: BaseException) -> str:
    """What went wrong, for the log only: the exception chain, a status and where a redirect pointed."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        text = f"{type(seen).__name__}: {seen}" if str(seen) else type(seen).__name__
        if isinstance(seen, openai.APIStatusError):
            text = f"HTTP {seen.status_code} {seen.response.headers.get('content-type', '')}".rstrip()
            if seen.response.headers.get("location"):
                text += f", redirect to {seen.response.headers['location']} not followed"
        parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def retrying(max_retries: int) -> AsyncRetrying:
    """A tenacity loop making `max_retries` retries of transient failures, then re-raising the last one."""
    return AsyncRetrying(stop=stop_after_attempt(max_retries + 1), wait=_wait, retry=retry_if_exception(_should_retry),
                         reraise=True, before_sleep=_log_retry)


def is_transport_error(exc: BaseException) -> bool:
    """True for failures of the connection itself, as opposed to bugs in the code reading it."""
    # Mid-stream read failures can surface as the HTTP library's own exceptions rather than openai's.
    return isinstance(exc, (openai.APIError, TimeoutError)) or \
        type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "httpcore", "anyio"}


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    status = getattr(exc, "status_code", None)
    log.warning("LLM call failed (%s%s), retrying in %.2f s (attempt %d)", type(exc).__name__,
                f" {status}" if status else "", state.next_action.sleep if state.next_action else 0.0,
                state.attempt_number)

