"""API keys: created with the secret shown once, listed by prefix, revoked with effect on the next request."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Forbidden, NotFound
from core.security import NewApiKey, new_api_key
from schemas.permissions import Permission, Principal, Role, can_grant, permissions_for
from schemas.tables import ApiKey, Organization

TOUCH_EVERY = timedelta(minutes=1)


def check_grant(granter: Principal, role: Role, scopes: list[Permission] | None) -> None:
    """Nobody mints a key above their own role, nor one that can do what they can't (a scoped key's
    scopes bound the keys it creates: an unscoped key of its role would hold every permission of it)."""
    if granter.role is None or not can_grant(granter.role, role):
        raise Forbidden(f"a {granter.role.value if granter.role else 'caller without a role'} can't create a "
                        f"{role.value} key", code="role_too_high")
    missing = sorted(p.value for p in permissions_for(role, [s.value for s in scopes] if scopes is not None else None)
                     - granter.permissions)
    if missing:
        raise Forbidden("a new key can only hold permissions you hold: narrow its `scopes`",
                        code="scope_not_held", details={"missing": missing})


async def create_key(session: AsyncSession, org_id: uuid.UUID, *, name: str, role: Role,
                     scopes: list[Permission] | None, expires_at: datetime | None, created_by: str | None,
                     granter: Principal | None = None) -> tuple[ApiKey, NewApiKey]:
    """A new key for the organization, within what `granter` holds (None: the CLI). Returns (row, secret)."""
    if granter is not None:
        check_grant(granter, role, scopes)
    material = new_api_key()
    row = ApiKey(org_id=org_id, name=name, prefix=material.prefix, secret_hash=material.secret_hash, role=role.value,
                 scopes=[s.value for s in scopes] if scopes is not None else None, expires_at=expires_at,
                 created_by=created_by)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row, material


async def list_keys(session: AsyncSession, org_id: uuid.UUID, *, include_revoked: bool = False) -> list[ApiKey]:
    """The organization's keys, newest first."""
    query = select(ApiKey).where(ApiKey.org_id == org_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.execute(query.order_by(ApiKey.created_at.desc(), ApiKey.id))).scalars())


async def revoke_key(session: AsyncSession, org_id: uuid.UUID, key_id: uuid.UUID,
                     revoker: Role | None = None) -> ApiKey:
    """Revoke a key of the organization (idempotent); the next request with it is refused. As with members,
    nobody revokes a key of a role above their own (`revoker`; None: the CLI)."""
    row = (await session.execute(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org_id))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"API key {key_id} not found", details={"key_id": str(key_id)})
    if revoker is not None and not can_grant(revoker, Role(row.role)):
        raise Forbidden(f"a {revoker.value} can't revoke a {row.role} key", code="role_too_high",
                        details={"key_role": row.role})
    if row.revoked_at is None:
        row.revoked_at = func.now()
        await session.flush()
        await session.refresh(row)
    return row


async def find_by_prefix(session: AsyncSession, prefix: str) -> tuple[ApiKey, Organization | None] | None:
    """The key row for a presented key's prefix with its organization (None if deleted): one query per request."""
    row = (await session.execute(select(ApiKey, Organization).outerjoin(
        Organization, (Organization.id == ApiKey.org_id) & Organization.deleted_at.is_(None))
        .where(ApiKey.prefix == prefix))).first()
    return (row[0], row[1]) if row else None


async def touch(session: AsyncSession, key_id: uuid.UUID, last_used_at: datetime | None) -> bool:
    """Record use, at most once a minute per key (not a write per request); whether it wrote."""
    if last_used_at is not None and last_used_at > datetime.now(UTC) - TOUCH_EVERY:
        return False
    await session.execute(update(ApiKey).where(
        ApiKey.id == key_id,
        (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < func.now() - TOUCH_EVERY))
        .values(last_used_at=func.now()))
    return True


async def find_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    """A key row by id, whatever its state."""
    return (await session.execute(select(ApiKey).where(ApiKey.id == key_id))).scalar_one_or_none()
