"""The outbound policy (core/outbound.py) for `httpx2` clients: the MCP SDK's HTTP transport uses httpx2,
a fork of httpx with its own httpcore2, so the policy's backend is repeated here over httpcore2.

Same rules: every connection resolves the host once, refuses it unless every address passes, and
connects to a checked address; no redirects, no proxies or .netrc from the environment.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore2
import httpx2

from core.outbound import LIMITS, OutboundPolicy, connect_checked, current_policy


class GuardedBackend2(httpcore2.AsyncNetworkBackend):
    """An httpcore2 network backend that connects only to addresses the policy admits."""

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable | None = None) -> httpcore2.AsyncNetworkStream:
        """Connect to the first reachable address of `host`, all of which the policy admits."""
        return await connect_checked(httpcore2, self._policy or current_policy(), self._inner, host, port, timeout,
                                     local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> httpcore2.AsyncNetworkStream:
        """Never: a user-supplied URL does not reach a local socket."""
        raise httpcore2.ConnectError("unix sockets are not reachable through the outbound policy")

    async def sleep(self, seconds: float) -> None:
        """As the inner backend sleeps."""
        await self._inner.sleep(seconds)


class GuardedTransport2(httpx2.AsyncHTTPTransport):
    """httpx2's own transport, its connection pool connecting through a GuardedBackend2."""

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(), max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections, keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=GuardedBackend2(policy))


def guarded_client2(*, timeout: httpx2.Timeout, headers: dict[str, str] | None = None,
                    policy: OutboundPolicy | None = None) -> httpx2.AsyncClient:
    """An httpx2 client for a user-supplied URL: the policy on every connection, nothing from the environment."""
    return httpx2.AsyncClient(transport=GuardedTransport2(policy), follow_redirects=False, trust_env=False,
                              timeout=timeout, headers=headers)
