"""The `Server-Timing` response header: the request's `core.timing` stages (auth, rate, queue, embed, …)
and `app`, the whole request until its response began. Browsers' devtools, `curl -i` and
`bench/search_latency.py` read it; `AGENTMEM_SERVER_TIMING=false` leaves this middleware out."""

from __future__ import annotations

import time

from core.timing import Timings, timings_var


class ServerTiming:
    """Pure ASGI middleware: collect the stages of each HTTP request and report them with its response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timings = Timings()
        started = time.perf_counter()

        async def send_with_timings(message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                message.setdefault("headers", []).append((b"server-timing", timings.header(elapsed_ms).encode()))
            await send(message)

        token = timings_var.set(timings)
        try:
            await self.app(scope, receive, send_with_timings)
        finally:
            timings_var.reset(token)
