"""One log line per HTTP request, and its duration in the `REQUEST_LATENCY` histogram by route template.

Health probes and the metrics scrape are not logged: scraped often, never news. A route declared with
`api.streaming.streams` stays open as long as its client follows it: that is no latency, so the
histogram leaves it out (its line is still logged when it ends); so does any answer that turns out to be
an event stream (a route that streams on request, like posting a message with `?stream=true`).
"""

from __future__ import annotations

import logging
import time

from api.middleware.base import Middleware, on_response_start
from api.streaming import is_streaming
from core.metrics import REQUEST_LATENCY

log = logging.getLogger("agentmem.access")
PROBES = ("/healthz", "/readyz", "/metrics")


class AccessLog(Middleware):
    """Time each HTTP request and log it once it has ended."""

    async def handle(self, scope, receive, send) -> None:
        started = time.perf_counter()
        status = 500  # unless a response began: an exception went up past every handler
        event_stream = False

        async def note_status(message) -> None:
            nonlocal status, event_stream
            status = message["status"]
            headers = dict(message.get("headers") or [])
            event_stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")

        try:
            await self.app(scope, receive, on_response_start(send, note_status))
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or "unmatched"
            elapsed = time.perf_counter() - started
            if not (is_streaming(route) or event_stream):
                REQUEST_LATENCY.labels(scope["method"], template, str(status)).observe(elapsed)
            if template not in PROBES:
                # A `token=` in the query is blanked by core.logging's RedactSecrets filter.
                query = scope.get("query_string", b"").decode("latin-1")
                path = scope["path"] + (f"?{query}" if query else "")
                log.info("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000,
                         extra={"method": scope["method"], "route": template, "status_code": status,
                                "duration_ms": round(elapsed * 1000, 2)})
