"""The `web_search` built-in tool: a query to the operator's search endpoint, its results in one clean shape.

SearxNG's JSON API is the first adapter: `GET {AGENTMEM_WEB_SEARCH_URL}/search?q=…&format=json`
answers `{"results": [{"title", "url", "content", …}, …]}`; the tool returns
`{"query", "results": [{"title", "url", "snippet"}]}`, at most `AGENTMEM_WEB_SEARCH_MAX_RESULTS`.
Without an endpoint the tool is off: not listed, not offered to agents, refused when called.

The endpoint is the operator's, yet every request goes through the outbound policy
(`core.outbound.guarded_client`) like any other URL the service calls: an internal address needs
its entry in `AGENTMEM_OUTBOUND_ALLOW`. A timeout, a connection failure, a 429 or a 5xx is tried
again (`AGENTMEM_WEB_SEARCH_ATTEMPTS` tries in all, with backoff); then the call fails with a code
saying which (`web_search_timeout`, `web_search_unavailable`), as does an answer that is no search
result (`web_search_failed`).
"""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.errors import InvalidInput, PermanentJobError
from core.outbound import guarded_client
from core.settings import get_settings

TITLE_CHARS, URL_CHARS, SNIPPET_CHARS = 300, 2000, 1000
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebSearchNotConfigured(InvalidInput, PermanentJobError):
    """No search endpoint is configured: the tool is off (422 in the API, a permanent job failure)."""

    status_code, code = 422, "web_search_not_configured"


class WebSearchFailed(PermanentJobError):
    """The search endpoint failed, or answered with something that is no search result; the code says which."""

    code = "web_search_failed"


class _Retry(Exception):
    """A failure worth another try: the endpoint timed out, could not be reached, or was busy or broken."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _text(value: Any, limit: int) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def parse_results(body: Any, limit: int) -> list[dict[str, str]]:
    """The results of a SearxNG JSON answer as `{title, url, snippet}`, those without a URL left out."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise WebSearchFailed("the search endpoint's answer has no `results` list: is its JSON format enabled?")
    results = []
    for item in body["results"]:
        if not isinstance(item, dict) or not _text(item.get("url"), URL_CHARS):
            continue
        results.append({"title": _text(item.get("title"), TITLE_CHARS), "url": _text(item.get("url"), URL_CHARS),
                        "snippet": _text(item.get("content"), SNIPPET_CHARS)})
        if len(results) >= limit:
            break
    return results


async def _ask(client: httpx.AsyncClient, url: str, query: str) -> Any:
    settings = get_settings()
    try:
        response = await client.get(url, params={"q": query, "format": "json"}, headers={"Accept": "application/json"})
    except httpx.TimeoutException:
        raise _Retry("web_search_timeout", f"the search endpoint did not answer within "
                                           f"{settings.web_search_timeout_seconds:g} s") from None
    except httpx.TransportError as exc:
        raise _Retry("web_search_unavailable", f"the search endpoint could not be reached: {exc}") from None
    if response.status_code in TRANSIENT_STATUSES:
        raise _Retry("web_search_unavailable", f"the search endpoint answered {response.status_code}")
    if response.status_code != 200:
        raise WebSearchFailed(f"the search endpoint answered {response.status_code}",
                              details={"status": response.status_code})
    try:
        return response.json()
    except ValueError:
        raise WebSearchFailed("the search endpoint's answer is not JSON: is its JSON format enabled?") from None


async def web_search(query: str, max_results: int | None = None) -> dict[str, Any]:
    """Search with the configured endpoint; `{"query", "results": [{"title", "url", "snippet"}]}`."""
    settings = get_settings()
    if not settings.web_search_url:
        raise WebSearchNotConfigured("web_search is off: the operator has not set AGENTMEM_WEB_SEARCH_URL")
    limit = min(max_results or settings.web_search_max_results, settings.web_search_max_results)
    url = settings.web_search_url.rstrip("/") + "/search"
    attempts = settings.web_search_attempts
    async with guarded_client(timeout=settings.web_search_timeout_seconds) as client:
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(attempts), reraise=True,
                                               wait=wait_exponential(multiplier=0.25, max=4),
                                               retry=retry_if_exception_type(_Retry)):
                with attempt:
                    body = await _ask(client, url, query)
        except _Retry as exc:
            raise WebSearchFailed(f"{exc.message} ({attempts} attempts)", code=exc.code,
                                  details={"attempts": attempts}) from None
    return {"query": query, "results": parse_results(body, limit)}
