"""Request dependencies: the database session, authentication and authorization, the Idempotency-Key.

Every route declares what it needs with one of:
- `Allow(Permission.X)`: a principal of an organization whose role (or key scopes) grants X;
- `Allow(None)`: any signed-in principal, with or without an organization;
- `AllowStream(Permission.JOBS_READ)`: as `Allow`, and also a short-lived stream token in `?token=`
  (browsers can't set headers on EventSource or WebSocket);
- `PUBLIC` (no credentials) for the handful of routes listed in `PUBLIC_ROUTES`.
A test walks the route table and fails for a route that declares none of them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from core import timing
from core.db import autocommit_scope, sessionmaker
from core.errors import AppError, Forbidden, NotFound, Unauthorized, infrastructure_errors
from core.security import API_KEY_PREFIX, api_key_prefix
from pipelines.accounts import auth, limits
from schemas.permissions import Permission, Principal


async def get_session() -> AsyncIterator[AsyncSession]:
    """One session per request; routes commit what they mean to keep."""
    async with sessionmaker()() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
log = logging.getLogger(__name__)

PUBLIC_ROUTES = frozenset({
    "/healthz", "/readyz", "/metrics", "/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh",
    "/api/v1/auth/password-reset",
})

_oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/login", auto_error=False, scheme_name="SignIn",
                               description="Sign in with a username and password; the access token is a JWT.")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer",
                     description="`Authorization: Bearer <API key or access token>`.")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey",
                        description="An organization's API key (`amk_…`), created at `POST /api/v1/api-keys`.")
_stream_token = APIKeyQuery(name="token", auto_error=False, scheme_name="StreamToken",
                            description="A short-lived stream token from `POST /api/v1/stream-tokens`, for "
                                        "EventSource and WebSocket clients that can't send headers.")
OrganizationHeader = Header(alias="X-Organization-Id", include_in_schema=False)


def _org_hint(conn: HTTPConnection, header: str | None) -> uuid.UUID | None:
    raw = conn.path_params.get("org_id") or header
    if raw is None:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise NotFound(f"organization {str(raw)[:64]!r} not found") from None


async def _principal(session: AsyncSession, credential: str | None, stream_token: str | None,
                     hint: uuid.UUID | None) -> Principal:
    if credential:
        # Anything shaped `amk_…` is meant as a key: a mangled one is an invalid key, not a bad JWT.
        if credential.startswith(API_KEY_PREFIX):
            principal = await auth.principal_from_api_key(session, credential)
            if hint is not None and hint != principal.org_id:
                raise NotFound(f"organization {hint} not found")
            return principal
        return await auth.principal_from_access_token(session, credential, hint)
    if stream_token:
        principal = await auth.principal_from_stream_token(session, stream_token)
        if hint is not None and hint != principal.org_id:
            raise NotFound(f"organization {hint} not found")
        return principal
    raise Unauthorized("send an API key (Authorization: Bearer amk_… or X-API-Key) or an access token",
                       code="not_authenticated")


def header_credential(conn: HTTPConnection) -> str | None:
    """The API key or access token in `X-API-Key` or `Authorization: Bearer`, for endpoints FastAPI doesn't
    resolve dependencies for (WebSocket, /mcp)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return conn.headers.get("x-api-key") or (value.strip() if scheme.lower() == "bearer" else None) or None


async def identify(conn: HTTPConnection) -> Principal:
    """Who the request's headers name, checked as `Allow` checks them (401 codes, `X-Organization-Id`), but
    neither charged to the rate limit nor checked for a permission: for /mcp, whose work is REST requests
    that are each charged and checked."""
    hint = _org_hint(conn, conn.headers.get("x-organization-id"))
    async with autocommit_scope() as session:
        principal = await _principal(session, header_credential(conn), None, hint)
        await session.commit()
    conn.state.principal = principal
    return principal


class Allow:
    """Authenticate the caller and require `permission` in the organization it acts for."""

    stream = False

    def __init__(self, permission: Permission | None, *, user_only: bool = False) -> None:
        self.permission = permission
        self.user_only = user_only

    async def __call__(self, conn: HTTPConnection,
                       signed_in: Annotated[str | None, Depends(_oauth2)] = None,
                       bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
                       api_key: Annotated[str | None, Depends(_api_key)] = None,
                       organization: Annotated[str | None, OrganizationHeader] = None) -> Principal:
        credential = api_key or (bearer.credentials if bearer else None) or signed_in
        return await self.resolve(conn, credential, None, organization)

    async def resolve(self, conn: HTTPConnection, credential: str | None, stream_token: str | None,
                      organization: str | None) -> Principal:
        hint = _org_hint(conn, organization)
        with timing.stage("auth"):  # includes the rate-limit check, also reported as `rate`
            return await self._authenticate(conn, credential, stream_token, hint)

    async def _authenticate(self, conn: HTTPConnection, credential: str | None, stream_token: str | None,
                            hint: uuid.UUID | None) -> Principal:
        # A short-lived session of its own: streaming routes must not hold a connection for hours. Reads (and
        # a key's once-a-minute `last_used_at`) need no transaction: no BEGIN and COMMIT round trips.
        async with autocommit_scope() as session:
            principal = await _principal(session, credential, stream_token, hint)
            conn.state.principal = principal  # who acted, for the audit log (api.middleware.audit)
            # Charged before the permission check: refused requests cost the caller too.
            try:
                with timing.stage("rate"):
                    state = await limits.check_rate(principal)
            except infrastructure_errors() as exc:
                # Fail open: a Redis outage must not stop accepted work (jobs are durable in PostgreSQL).
                log.warning("rate limit not checked (Redis unavailable): %s", exc)
            else:
                conn.state.rate_limit_headers = state.headers()  # sent by api.middleware.rate_limit
            self.check(principal)
            await session.commit()
        return principal

    def check(self, principal: Principal) -> None:
        """Raise 403 unless the principal may do this."""
        if self.user_only and principal.user_id is None:
            raise Forbidden("this needs a signed-in user, not an API key", code="user_required")
        if self.permission is None:
            return
        if self.permission is not Permission.USERS_ADMIN and principal.org_id is None:
            raise Forbidden("you are not acting for an organization: create one, or send X-Organization-Id to "
                            "pick one of yours", code="no_organization")
        if not principal.can(self.permission):
            raise Forbidden(f"this needs the {self.permission.value!r} permission", code="permission_denied",
                            details={"permission": self.permission.value,
                                     "role": principal.role.value if principal.role else None})


class AllowStream(Allow):
    """`Allow`, also accepting a stream token in the query string (and nothing long-lived there)."""

    stream = True

    async def __call__(self, conn: HTTPConnection,
                       signed_in: Annotated[str | None, Depends(_oauth2)] = None,
                       bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
                       api_key: Annotated[str | None, Depends(_api_key)] = None,
                       token: Annotated[str | None, Depends(_stream_token)] = None,
                       organization: Annotated[str | None, OrganizationHeader] = None) -> Principal:
        if token and api_key_prefix(token):
            raise Unauthorized("never put an API key in a URL: get a stream token from POST /api/v1/stream-tokens",
                               code="key_in_query")
        credential = api_key or (bearer.credentials if bearer else None) or signed_in
        return await self.resolve(conn, credential, token, organization)


class AllowSocket(AllowStream):
    """`AllowStream` for WebSockets: an auth failure is returned, so the socket can report it and close."""

    async def __call__(self, conn: HTTPConnection) -> Principal | AppError:  # type: ignore[override]
        # The HTTP security helpers don't run on WebSocket routes (and sockets aren't in OpenAPI):
        # read the same headers here.
        credential = header_credential(conn)
        token = conn.query_params.get("token")
        try:
            if token and api_key_prefix(token):
                raise Unauthorized("never put an API key in a URL: get a stream token from POST "
                                   "/api/v1/stream-tokens", code="key_in_query")
            return await self.resolve(conn, credential, token, conn.headers.get("x-organization-id"))
        except AppError as exc:
            return exc


def can_follow(principal: Principal, job_id: uuid.UUID | None) -> bool:
    """A stream token names one job (or none: the organization's stream); other principals follow any job."""
    return principal.stream_job_id is None or principal.stream_job_id == job_id


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255, min_length=1,
    description="Repeat a request safely: the same key and body return the same job; "
                "the same key with another body is a 409.")]


def route_guard(route) -> Allow | None:
    """The `Allow` a route declared (searched through its dependency tree), or None."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Allow):
            return dependant.call
        pending.extend(dependant.dependencies)
    return None


def document_permissions(routes) -> None:
    """Write each route's permission into its OpenAPI description (and `x-permission`)."""
    for route in routes:
        guard = route_guard(route) if hasattr(route, "dependant") else None
        if guard is None or not hasattr(route, "description") or "x-permission" in (route.openapi_extra or {}):
            continue
        if guard.user_only:
            from schemas.common import ErrorOut

            previous = route.responses.get(403, {}).get("description", "Forbidden")
            route.responses[403] = {"model": ErrorOut, "description": f"{previous}; `user_required`: API keys "
                                    "can't do this, sign in as a user"}
        needed = guard.permission.value if guard.permission else "signed-in"
        who = "a signed-in user" if guard.user_only else "an API key or a signed-in user"
        route.description = (route.description or "") + f"\n\n**Requires:** `{needed}` ({who})."
        route.openapi_extra = {**(route.openapi_extra or {}), "x-permission": needed}
