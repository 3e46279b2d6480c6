"""The `Server-Timing` response header: the request's `core.timing` stages (auth, rate, queue, embed, …)
and `app`, the whole request until its response began. Browsers' devtools, `curl -i` and
`bench/search_latency.py` read it; `AGENTMEM_SERVER_TIMING=false` leaves this middleware out."""

from __future__ import annotations

import time

from api.middleware.base import Middleware, on_response_start
from core.timing import Timings, timings_var


class ServerTiming(Middleware):
    """Collect the stages of each HTTP request and report them with its response."""

    async def handle(self, scope, receive, send) -> None:
        timings = Timings()
        started = time.perf_counter()

        async def add_timings(message) -> None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            message.setdefault("headers", []).append((b"server-timing", timings.header(elapsed_ms).encode()))

        token = timings_var.set(timings)
        try:
            await self.app(scope, receive, on_response_start(send, add_timings))
        finally:
            timings_var.reset(token)
