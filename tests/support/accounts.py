"""Signing in through the API, and hand-made tokens, for integration tests of accounts and organizations."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from core.redis import get_redis
from tests.support.stack import TEST_JWT_SECRET
from tests.support.tenants import Account

ISSUER, AUDIENCE = "agentmem", "agentmem-api"


async def sign_in(http: httpx.AsyncClient, account: Account, password: str | None = None,
                  organization_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Sign in with JSON and return the token pair (asserting it worked)."""
    body: dict[str, Any] = {"username": account.username, "password": password or account.password}
    if organization_id is not None:
        body["organization_id"] = str(organization_id)
    response = await http.post("/api/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str, org_id: uuid.UUID | None = None) -> dict[str, str]:
    """Headers presenting `token`, acting for `org_id` if given."""
    headers = {"Authorization": f"Bearer {token}"}
    if org_id is not None:
        headers["X-Organization-Id"] = str(org_id)
    return headers


def claims_for(user_id: uuid.UUID | str, *, typ: str = "access", lifetime: int = 600, issued_at: int | None = None,
               **overrides: Any) -> dict[str, Any]:
    """The claims the API puts in a token of type `typ`, with `overrides` (None removes a claim)."""
    now = int(time.time()) if issued_at is None else issued_at
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(user_id), "typ": typ, "iat": now, "nbf": now,
              "exp": now + lifetime, "jti": uuid.uuid4().hex} | overrides
    return {k: v for k, v in claims.items() if v is not None}


def sign_token(typ: str, subject: str, *, lifetime: int = 3600, issued_at: int | None = None, **claims: Any) -> str:
    """A token of type `typ` (access, refresh, stream) for `subject`, signed as the API would sign it.

    Made without the sign-in route, which is rate limited per address.
    """
    return jwt.encode(claims_for(subject, typ=typ, lifetime=lifetime, issued_at=issued_at, **claims),
                      TEST_JWT_SECRET, algorithm="HS256")


def access_headers(user_id: uuid.UUID, org_id: uuid.UUID | None) -> dict[str, str]:
    """Headers of a signed-in user acting for `org_id` (the `org` claim of their access token)."""
    claims = {"org": str(org_id)} if org_id else {}
    return {"Authorization": f"Bearer {sign_token('access', str(user_id), **claims)}"}


def craft_token(user_id: uuid.UUID, *, key: str = TEST_JWT_SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    """An access token made outside the API, signed with the API's key unless told otherwise."""
    return jwt.encode(claims_for(user_id, **overrides), key, algorithm=algorithm)


def unsigned_token(user_id: uuid.UUID) -> str:
    """An `alg: none` token with otherwise valid claims."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims_for(user_id))}."


@pytest.fixture
async def login_allowance(stack):
    """A full sign-in allowance for the test: every login here comes from one address, 127.0.0.1."""
    redis = get_redis()
    async for bucket in redis.scan_iter(match="agentmem:ratelimit:login:*"):
        await redis.delete(bucket)
