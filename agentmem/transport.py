"""The one HTTP layer of the SDK (and so of the CLI): headers, idempotency keys, retries, errors, pages.

`SyncTransport` and `AsyncTransport` answer the same calls; the resources (agentmem/resources.py) are written once
against them: a sync transport returns values, an async one coroutines (and async iterators for pages).
429 and 503 are retried for every method, after the `Retry-After` the API sends (else exponential backoff);
a broken connection is retried only where repeating the request is harmless: reads, and writes the API
deduplicates by their `Idempotency-Key`.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import TypeAdapter

from agentmem.errors import APIConnectionError, error_from_response

API = "/api/v1"
RETRY_STATUSES = frozenset({429, 503})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Call:
    """One API request and how to read its answer."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: Any = None                               # bytes, or a function giving the body afresh per attempt
    headers: dict[str, str] = field(default_factory=dict)
    out: Any = None                                   # a model or type to validate the JSON answer as
    then: Callable[[Any, Any], Any] | None = None     # (transport, parsed) -> what the caller gets
    idempotency_key: str | None = None
    replay_safe: bool = False                         # the API deduplicates it by Idempotency-Key

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.method in WRITE_METHODS:
            headers["Idempotency-Key"] = self.idempotency_key or f"sdk-{uuid.uuid4()}"
        return headers

    def body(self) -> Any:
        return self.content() if callable(self.content) else self.content

    def params_without_none(self) -> dict[str, Any] | None:
        if self.params is None:
            return None
        return {k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, uuid.UUID) else v)
                for k, v in self.params.items() if v is not None}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The `Retry-After` header as seconds (a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _adapter(out: Any) -> TypeAdapter:
    return out if isinstance(out, TypeAdapter) else TypeAdapter(out)


class _Base:
    def __init__(self, base_url: str, api_key: str | None, *, organization: str | None, timeout: float,
                 max_retries: int, max_backoff: float, headers: dict[str, str] | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.max_backoff, self.timeout = max_retries, max_backoff, timeout
        self.headers = {"User-Agent": "agentmem-python"} | (headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        if organization:
            self.headers["X-Organization-Id"] = organization

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """How long to wait before retry `attempt` (0-based): the server's `Retry-After`, else exponential."""
        advised = retry_after_seconds(response) if response is not None else None
        if advised is not None:
            return min(advised, self.max_backoff)
        return min(self.max_backoff, 0.5 * 2 ** attempt) * (0.5 + random.random() / 2)

    def may_retry(self, call: Call, attempt: int, response: httpx.Response | None,
                  exc: httpx.TransportError | None) -> bool:
        if attempt >= self.max_retries:
            return False
        if response is not None:
            return response.status_code in RETRY_STATUSES
        # Nothing reached the server, or the request is harmless to repeat.
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) or call.method == "GET" or call.replay_safe

    @staticmethod
    def parse(call: Call, response: httpx.Response) -> Any:
        if call.out is None or response.status_code == 204:
            return None
        return _adapter(call.out).validate_python(response.json())


class SyncTransport(_Base):
    """Blocking calls over one `httpx.Client`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, organization: str | None = None,
                 timeout: float = 30.0, max_retries: int = 5, max_backoff: float = 60.0,
                 headers: dict[str, str] | None = None, http: httpx.Client | None = None) -> None:
        super().__init__(base_url, api_key, organization=organization, timeout=timeout, max_retries=max_retries,
                         max_backoff=max_backoff, headers=headers)
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self.sleep: Callable[[float], None] = time.sleep
        self.is_async = False

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call, *, stream: bool = False, timeout: httpx.Timeout | None = None) -> httpx.Response:
        """Send with retries; an error status is raised as `APIError`. With `stream`, the body is not read."""
        headers = self.headers | call.request_headers()   # one key for every retry of this call
        for attempt in range(self.max_retries + 1):
            request = self.http.build_request(call.method, API + call.path, params=call.params_without_none(),
                                              json=call.json, content=call.body(), headers=headers,
                                              timeout=timeout or httpx.USE_CLIENT_DEFAULT)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not self.may_retry(call, attempt, None, exc):
                    raise APIConnectionError(f"{call.method} {call.path}: {exc!r}") from exc
                self.sleep(self.delay(attempt, None))
                continue
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            if not self.may_retry(call, attempt, response, None):
                raise error_from_response(response)
            self.sleep(self.delay(attempt, response))
        raise AssertionError("unreachable")

    def __call__(self, call: Call) -> Any:
        """Send a call and return what it reads as."""
        parsed = self.parse(call, self.send(call))
        return call.then(self, parsed) if call.then else parsed

    @contextmanager
    def stream(self, call: Call, *, timeout: httpx.Timeout | None = None) -> Iterator[httpx.Response]:
        """An open response whose body is read as it arrives (event streams, downloads)."""
        response = self.send(call, stream=True, timeout=timeout)
        try:
            yield response
        finally:
            response.close()

    def pages(self, call: Call) -> Iterator[Any]:
        """Every item of a cursor-paginated list, page after page as the iteration reaches it."""
        item = _adapter(call.out)
        params = dict(call.params or {})
        while True:
            page = self(Call("GET", call.path, params=params, out=dict))
            for raw in page["items"]:
                parsed = item.validate_python(raw)
                yield call.then(self, parsed) if call.then else parsed
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]


class AsyncTransport(_Base):
    """The same calls over one `httpx.AsyncClient`: coroutines, and async iterators for pages."""

    def __init__(self, base_url: str, api_key: str | None = None, *, organization: str | None = None,
                 timeout: float = 30.0, max_retries: int = 5, max_backoff: float = 60.0,
                 headers: dict[str, str] | None = None, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(base_url, api_key, organization=organization, timeout=timeout, max_retries=max_retries,
                         max_backoff=max_backoff, headers=headers)
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self.sleep: Callable[[float], Any] = asyncio.sleep
        self.is_async = True

    async def close(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call, *, stream: bool = False, timeout: httpx.Timeout | None = None) -> httpx.Response:
        """As `SyncTransport.send`."""
        headers = self.headers | call.request_headers()
        for attempt in range(self.max_retries + 1):
            request = self.http.build_request(call.method, API + call.path, params=call.params_without_none(),
                                              json=call.json, content=call.body(), headers=headers,
                                              timeout=timeout or httpx.USE_CLIENT_DEFAULT)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not self.may_retry(call, attempt, None, exc):
                    raise APIConnectionError(f"{call.method} {call.path}: {exc!r}") from exc
                await self.sleep(self.delay(attempt, None))
                continue
            if response.status_code < 400:
                return response
            await response.aread()
            await response.aclose()
            if not self.may_retry(call, attempt, response, None):
                raise error_from_response(response)
            await self.sleep(self.delay(attempt, response))
        raise AssertionError("unreachable")

    async def __call__(self, call: Call) -> Any:
        parsed = self.parse(call, await self.send(call))
        return call.then(self, parsed) if call.then else parsed

    @asynccontextmanager
    async def stream(self, call: Call, *, timeout: httpx.Timeout | None = None) -> AsyncIterator[httpx.Response]:
        response = await self.send(call, stream=True, timeout=timeout)
        try:
            yield response
        finally:
            await response.aclose()

    async def pages(self, call: Call) -> AsyncIterator[Any]:
        item = _adapter(call.out)
        params = dict(call.params or {})
        while True:
            page = await self(Call("GET", call.path, params=params, out=dict))
            for raw in page["items"]:
                parsed = item.validate_python(raw)
                yield call.then(self, parsed) if call.then else parsed
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]
