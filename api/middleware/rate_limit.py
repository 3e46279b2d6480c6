"""The rate-limit headers (`X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`) on every
response to an authenticated request, errors included.

Authentication (`api.deps`) charges the caller's budget and leaves the headers in the request state
(`request.state.rate_limit_headers`); this adds them to whatever response follows, unless it carries
them already (a 429 brings its own, with `Retry-After`).
"""

from __future__ import annotations


class RateLimitHeaders:
    """Pure ASGI middleware: send the rate budget authentication found with the response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_budget(message) -> None:
            if message["type"] == "http.response.start":
                budget = scope.get("state", {}).get("rate_limit_headers", {})
                headers = message.setdefault("headers", [])
                present = {name.lower() for name, _ in headers}
                headers.extend((name.encode(), value.encode()) for name, value in budget.items()
                               if name.lower().encode() not in present)
            await send(message)

        await self.app(scope, receive, send_with_budget)
