"""`agentmem mcp`: AgentMem's MCP tools over stdio for desktop clients, calling the API over HTTP.

The tools are the API's own (api/mcp_tools.py) with one HTTP client to the API carrying the key, so a
call is checked and answered exactly as the REST request it makes. stdout is the protocol: logs go to
stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx

from core.settings import get_settings

log = logging.getLogger(__name__)


async def _serve(api_url: str, api_key: str) -> None:
    from api.mcp_tools import build_server

    # Room for a tool that waits for its job as long as the server lets it.
    timeout = httpx.Timeout(30, read=get_settings().mcp_max_wait_seconds + 30)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=timeout) as http:

        @asynccontextmanager
        async def client_for(ctx) -> AsyncIterator[httpx.AsyncClient]:
            yield http

        log.info("serving AgentMem's MCP tools over stdio for %s", api_url)
        await build_server(client_for).run_stdio_async()


def serve_stdio(api_url: str, api_key: str | None) -> int:
    """Serve the MCP tools over stdin/stdout until the client closes them; 2 without a key."""
    if not api_key:
        print("agentmem mcp: no API key. Set AGENTMEM_API_KEY (an `amk_…` key of your organization, from "
              "`agentmem admin create-key` or POST /api/v1/api-keys) in the MCP client's `env`, or pass "
              "--api-key.", file=sys.stderr)
        return 2
    anyio.run(_serve, api_url.rstrip("/"), api_key)
    return 0
