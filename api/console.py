"""The web console at /console (plain HTML, JavaScript and CSS shipped in the package: no build step), and `/`,
a page that sends people to the console and the docs instead of a bare 404."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

CONSOLE = Path(__file__).parent / "static" / "console"
CONSOLE_URL = "/console"

HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AgentMem</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1d2433}
a{color:#2456c7}li{margin:.4rem 0}</style></head>
<body><h1>AgentMem</h1><p>Long-term memory for AI agents, with durable jobs and streamed progress.</p>
<ul><li><a href="/console/">Web console</a>: jobs live, memories, agents, chat, schedules, webhooks</li>
<li><a href="/docs">API docs</a> (Swagger UI) · <a href="/redoc">ReDoc</a> · <a href="/openapi.json">OpenAPI
document</a></li><li><a href="/readyz">Readiness</a> · <a href="/metrics">Metrics</a></li></ul></body></html>
"""


# The console runs only its own files and talks only to this origin: an injected <script> or inline handler
# doesn't run, and no other site can frame it. `no-cache`: an upgraded server's console is used at once.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """The console's static files, each sent with `HEADERS`."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


def install_console(app: FastAPI) -> None:
    """Mount the console's files at /console and the home page at /."""
    app.mount(CONSOLE_URL, ConsoleFiles(directory=CONSOLE, html=True), name="console")

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        """A page that links the console, the docs and the health endpoints."""
        return HTMLResponse(HOME)
