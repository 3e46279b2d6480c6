"""Who is calling: API keys, access and refresh tokens, stream tokens → a Principal.

Every check happens on every request: a revoked key, a logged-out token, a deactivated user or a
removed membership stops working on the very next request. API keys are read from a cache that
hears of every change to a key or its organization from PostgreSQL (pipelines/accounts/key_cache.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import NotFound, Unauthorized
from core.metrics import API_KEY_LOOKUPS
from core.security import api_key_matches, api_key_prefix, decode_token, encode_token, is_token_revoked, revoke_token
from core.settings import get_settings
from pipelines.accounts import api_keys, organizations
from pipelines.accounts.key_cache import KeyEntry, key_cache
from schemas.permissions import ActorType, Permission, Principal, Role, permissions_for
from schemas.tables import Membership, Organization, User


async def _key_entry(session: AsyncSession, prefix: str) -> KeyEntry | None:
    """The key with this prefix: from this process's cache (pipelines/accounts/key_cache.py) or the database."""
    cache = key_cache()
    entry = cache.get(prefix)
    if entry is not None:
        API_KEY_LOOKUPS.labels("cache").inc()
        return entry
    API_KEY_LOOKUPS.labels("database").inc()
    generation = cache.generation
    found = await api_keys.find_by_prefix(session, prefix)
    if found is None:
        return None
    entry = KeyEntry.of(*found)
    cache.put(entry, generation)
    return entry


async def principal_from_api_key(session: AsyncSession, secret: str) -> Principal:
    """Resolve an API key; invalid, revoked and expired keys each have their own code."""
    prefix = api_key_prefix(secret)
    entry = await _key_entry(session, prefix) if prefix else None
    if entry is None or not api_key_matches(secret, entry.secret_hash):
        raise Unauthorized("the API key is not valid", code="api_key_invalid")
    if entry.revoked_at is not None:
        raise Unauthorized("the API key was revoked", code="api_key_revoked")
    if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
        raise Unauthorized("the API key has expired", code="api_key_expired")
    if not entry.org_live:
        raise Unauthorized("the API key's organization was deleted", code="api_key_revoked")
    if await api_keys.touch(session, entry.key_id, entry.last_used_at):
        key_cache().used(entry, datetime.now(UTC))
    role = Role(entry.role)
    return Principal(ActorType.API_KEY, entry.key_id, f"api key {entry.prefix}", org_id=entry.org_id, role=role,
                     permissions=permissions_for(role, list(entry.scopes) if entry.scopes is not None else None),
                     key_id=entry.key_id, rate_limit=entry.rate_limit)


async def _live_user(session: AsyncSession, user_id: str, issued_at: float) -> User:
    user = (await session.execute(select(User).where(User.id == uuid.UUID(user_id)))).scalar_one_or_none()
    if user is None or user.deleted_at is not None:
        raise Unauthorized("the account no longer exists", code="user_not_found")
    if not user.is_active:
        raise Unauthorized("this account is deactivated", code="user_inactive")
    if user.password_changed_at is not None and issued_at < user.password_changed_at.timestamp():
        raise Unauthorized("the password changed after this token was issued; sign in again", code="token_revoked")
    return user


async def membership(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> tuple[Role, dict] | None:
    """The user's role in a live organization and the organization's limits, or None."""
    row = (await session.execute(select(Membership.role, Organization.limits)
                                 .join(Organization, Organization.id == Membership.org_id)
                                 .where(Membership.org_id == org_id, Membership.user_id == user_id,
                                        organizations.LIVE))).first()
    return (Role(row[0]), row[1] or {}) if row else None


async def membership_role(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> Role | None:
    """The user's role in a live organization, or None."""
    found = await membership(session, org_id, user_id)
    return found[0] if found else None


async def principal_from_access_token(session: AsyncSession, token: str, org_hint: uuid.UUID | None) -> Principal:
    """Resolve a user's access token, acting in `org_hint` (path or header), the token's organization, or for a
    token issued before the user had one, the user's only organization."""
    claims = decode_token(token, "access")
    if await is_token_revoked(claims["jti"]):
        raise Unauthorized("the token was revoked (signed out)", code="token_revoked")
    user = await _live_user(session, claims["sub"], claims["iat"])
    org_id, found = None, None
    if org_hint is not None:
        found = await membership(session, org_hint, user.id)
        if found is None:  # not a member: the organization does not exist for this user
            raise NotFound(f"organization {org_hint} not found", details={"organization_id": str(org_hint)})
        org_id = org_hint
    elif claims.get("org"):
        found = await membership(session, uuid.UUID(claims["org"]), user.id)
        org_id = uuid.UUID(claims["org"]) if found else None
    else:
        # A token issued before the user had an organization: the one they have since created or joined acts,
        # so the organization is usable at once. With several, the caller names one (X-Organization-Id).
        mine = await organizations.list_for_user(session, user.id)
        if len(mine) == 1:
            org_id = mine[0][0].id
            found = await membership(session, org_id, user.id)
    role, limits = found if found else (None, {})
    return Principal(ActorType.USER, user.id, user.username, org_id=org_id, role=role,
                     permissions=permissions_for(role) if role else frozenset(), user_id=user.id,
                     superuser=user.is_superuser, token_id=claims["jti"], token_expires_at=claims["exp"],
                     rate_limit=limits.get("rate_limit_per_minute"))


async def issue_tokens(session: AsyncSession, user: User, org_id: uuid.UUID | None) -> dict[str, Any]:
    """An access and a refresh token, bound to `org_id` or the user's first organization."""
    if org_id is not None:
        if await membership_role(session, org_id, user.id) is None:
            raise NotFound(f"organization {org_id} not found", details={"organization_id": str(org_id)})
    else:
        mine = await organizations.list_for_user(session, user.id)
        org_id = mine[0][0].id if mine else None
    settings = get_settings()
    extra = {"org": str(org_id)} if org_id else {}
    access_seconds = settings.access_token_minutes * 60
    access, _ = encode_token("access", str(user.id), access_seconds, **extra)
    refresh, _ = encode_token("refresh", str(user.id), settings.refresh_token_days * 86400, **extra)
    return {"access_token": access, "refresh_token": refresh, "token_type": "bearer", "expires_in": access_seconds,
            "organization_id": org_id}


async def refresh_tokens(session: AsyncSession, refresh_token: str) -> dict[str, Any]:
    """Trade a refresh token for a new pair; the old refresh token is revoked (rotation)."""
    claims = decode_token(refresh_token, "refresh")
    if await is_token_revoked(claims["jti"]):
        raise Unauthorized("the refresh token was already used or revoked", code="token_revoked")
    user = await _live_user(session, claims["sub"], claims["iat"])
    if not await revoke_token(claims["jti"], claims["exp"]):  # a concurrent refresh spent it first
        raise Unauthorized("the refresh token was already used or revoked", code="token_revoked")
    org = uuid.UUID(claims["org"]) if claims.get("org") else None
    if org is not None and await membership_role(session, org, user.id) is None:
        org = None
    return await issue_tokens(session, user, org)


async def logout(principal: Principal, refresh_token: str | None) -> None:
    """Revoke the access token in use (and a refresh token, if given) for the rest of their lifetimes."""
    if principal.token_id and principal.token_expires_at:
        await revoke_token(principal.token_id, principal.token_expires_at)
    if refresh_token:
        claims = decode_token(refresh_token, "refresh")
        if claims["sub"] == str(principal.user_id):
            await revoke_token(claims["jti"], claims["exp"])


def issue_stream_token(principal: Principal, job_id: uuid.UUID | None) -> tuple[str, int]:
    """A short-lived token that only follows one job's events (or, with no job, the organization's)."""
    lifetime = get_settings().stream_token_seconds
    token, _ = encode_token("stream", principal.actor, lifetime, org=str(principal.org_id),
                            job=str(job_id) if job_id else None)
    return token, lifetime


async def principal_from_stream_token(session: AsyncSession, token: str) -> Principal:
    """Resolve a stream token to a principal that may only read job events, and only the job it names."""
    claims = decode_token(token, "stream")
    actor_type, _, actor_id = claims["sub"].partition(":")
    org_id = uuid.UUID(claims["org"])
    # The credential behind the token must still be good: revoking or expiring a key, deactivating a user
    # or removing them from the organization ends its streams too.
    if actor_type == ActorType.API_KEY.value:
        row = await api_keys.find_key(session, uuid.UUID(actor_id))
        if row is None or row.revoked_at is not None:
            raise Unauthorized("the API key behind this stream token was revoked", code="api_key_revoked")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise Unauthorized("the API key behind this stream token has expired", code="api_key_expired")
    else:
        user = await _live_user(session, actor_id, claims["iat"])
        if await membership_role(session, org_id, user.id) is None:
            raise NotFound(f"organization {org_id} not found", details={"organization_id": str(org_id)})
    return Principal(ActorType(actor_type), uuid.UUID(actor_id), claims["sub"], org_id=org_id,
                     permissions=frozenset({Permission.JOBS_READ}),
                     stream_job_id=uuid.UUID(claims["job"]) if claims.get("job") else None,
                     token_id=claims["jti"], token_expires_at=claims["exp"])
