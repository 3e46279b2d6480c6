"""The rate-limit headers (`X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`) on every
response to an authenticated request, errors included.

Authentication (`api.deps`) charges the caller's budget and leaves the headers in the request state
(`request.state.rate_limit_headers`); this adds them to whatever response follows, unless it carries
them already (a 429 brings its own, with `Retry-After`).
"""

from __future__ import annotations

from api.middleware.base import Middleware, on_response_start


class RateLimitHeaders(Middleware):
    """Send the rate budget authentication found with the response."""

    async def handle(self, scope, receive, send) -> None:
        async def add_budget(message) -> None:
            budget = scope.get("state", {}).get("rate_limit_headers", {})
            headers = message.setdefault("headers", [])
            present = {name.lower() for name, _ in headers}
            headers.extend((name.encode(), value.encode()) for name, value in budget.items()
                           if name.lower().encode() not in present)

        await self.app(scope, receive, on_response_start(send, add_budget))
