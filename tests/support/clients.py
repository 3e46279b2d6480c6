"""HTTP clients for integration tests, optionally calling from a loopback address of the test's own.

All of 127.0.0.0/8 reaches the local API, so a test can be "another client address" (its own
sign-in rate-limit bucket, a known IP in audit rows) without a proxy.
"""

from __future__ import annotations

import random

import httpx


def loopback_address() -> str:
    """A random loopback address other than 127.0.0.1 (the one every other test calls from)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def api_client(base_url: str, *, address: str | None = None,
               headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An HTTP client for the API, connecting from `address` when given."""
    transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=120), headers=headers or {},
                             transport=transport)
