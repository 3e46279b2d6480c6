"""AgentMem as an MCP server over Streamable HTTP at `/mcp` (the tools are in api/mcp_tools.py).

- Authenticated as REST is, with an API key or access token in `Authorization: Bearer` or `X-API-Key`: a
  request without valid credentials is a 401 in the API's error shape before the MCP SDK sees it. Each tool
  then calls the REST routes in process, forwarding those credentials, so the key's organization and role,
  rate limits, quotas, idempotency, audit and error codes are REST's own.
- Stateless: every POST is served on its own, with no session kept in this process, so any number of API
  processes behind one port answer any request (no sticky sessions). There is no server-to-client request
  (sampling, elicitation) in these tools, which is what stateful sessions would be needed for.
- The SDK's DNS-rebinding check (Host and Origin headers) is on when `AGENTMEM_MCP_ALLOWED_HOSTS` is set;
  by default it is off: the API is reached under any host name behind a proxy, and a rebinding page could
  not send a request here anyway without an API key, which the browser does not add on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import HTTPConnection, Request
from starlette.routing import Route

from api.deps import identify
from api.mcp_tools import build_server
from api.middleware.audit import Audit
from core.settings import get_settings

PATH = "/mcp"
# What a tool's REST request carries of the MCP request: the credentials, the organization, the request id.
FORWARDED = ("authorization", "x-api-key", "x-organization-id", "x-request-id")


def _forwarding_client(app: FastAPI):
    """A REST client per tool call: the app in process, with the MCP request's credentials and address."""

    @asynccontextmanager
    async def client_for(ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
        request: Request = ctx.request_context.request
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        client = (request.client.host, request.client.port) if request.client else ("127.0.0.1", 0)
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=str(request.base_url), headers=headers) as http:
            yield http

    return client_for


def _security() -> TransportSecuritySettings:
    settings = get_settings()
    hosts = [h.strip() for h in (settings.mcp_allowed_hosts or "").split(",") if h.strip()]
    origins = [o.strip() for o in (settings.mcp_allowed_origins or "").split(",") if o.strip()]
    return TransportSecuritySettings(enable_dns_rebinding_protection=bool(hosts), allowed_hosts=hosts,
                                     allowed_origins=origins)


class McpEndpoint:
    """The ASGI endpoint at /mcp: authenticate, then hand the request to the SDK's session manager."""

    # The MCP request itself is not audited: each REST request its tools make is, as REST.
    __audit__ = Audit(recorded=False)

    def __init__(self, server: MCPServer) -> None:
        # Built once per app: the manager runs (in the app's lifespan) once per instance.
        # The body limit is the API's own (api/middleware/request_limits.py answers 413 in its shape first).
        server.streamable_http_app(streamable_http_path=PATH, stateless_http=True, transport_security=_security(),
                                   max_request_body_size=get_settings().max_body_bytes)
        self.server = server
        self.manager: StreamableHTTPSessionManager = server.session_manager

        self.route = Route(PATH, endpoint=self, methods=["GET", "POST", "DELETE"], include_in_schema=False)

    async def __call__(self, scope, receive, send) -> None:
        # FastAPI names the matched route in the scope for its own routes only; the audit and access-log
        # middleware read it there.
        scope["route"] = self.route
        await identify(HTTPConnection(scope))  # 401 in the API's shape, rendered by its error handler
        await self.manager.handle_request(scope, receive, send)


def mount_mcp(app: FastAPI) -> None:
    """Serve the MCP tools at /mcp (left out of the OpenAPI document: it is JSON-RPC, see the README)."""
    endpoint = McpEndpoint(build_server(_forwarding_client(app)))
    app.state.mcp = endpoint
    app.router.routes.append(endpoint.route)


@asynccontextmanager
async def serving_mcp(app: FastAPI) -> AsyncIterator[None]:
    """Run the MCP session manager for the app's lifetime (its task group serves each request)."""
    async with app.state.mcp.manager.run():
        yield
