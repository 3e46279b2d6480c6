"""Organizations and their members: every row of AgentMem belongs to one organization."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, Forbidden, NotFound
from schemas.inputs import name_key
from schemas.permissions import Role, can_grant
from schemas.tables import ApiKey, Membership, Organization, User

LIVE = Organization.deleted_at.is_(None)


async def _name_free(session: AsyncSession, name: str, exclude: uuid.UUID | None = None) -> None:
    # Compared by look (name_key): "Acme", "ＡＣＭＥ" and a Cyrillic "Асme" are one name.
    query = select(Organization.id).where(LIVE, Organization.name_key == name_key(name))
    if exclude is not None:
        query = query.where(Organization.id != exclude)
    if (await session.execute(query)).first():
        raise Conflict(f"an organization called {name!r} exists", code="organization_name_taken")


async def create_organization(session: AsyncSession, name: str, owner_id: uuid.UUID | None = None) -> Organization:
    """A new organization; `owner_id` (a user) becomes its first owner."""
    await _name_free(session, name)
    org = Organization(name=name, name_key=name_key(name))
    session.add(org)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"an organization called {name!r} exists", code="organization_name_taken") from exc
    if owner_id is not None:
        session.add(Membership(org_id=org.id, user_id=owner_id, role=Role.OWNER.value))
        await session.flush()
    await session.refresh(org)
    return org


async def find_organization(session: AsyncSession, name: str) -> Organization | None:
    """The live organization called `name` (case-insensitive), if any."""
    return (await session.execute(select(Organization).where(
        LIVE, Organization.name_key == name_key(name)))).scalar_one_or_none()


async def ensure_organization(session: AsyncSession, name: str) -> tuple[Organization, bool]:
    """The live organization called `name`, created if missing; (org, created)."""
    existing = await find_organization(session, name)
    if existing is not None:
        return existing, False
    return await create_organization(session, name), True


async def get_organization(session: AsyncSession, org_id: uuid.UUID) -> Organization:
    """A live organization, or NotFound."""
    org = (await session.execute(select(Organization).where(Organization.id == org_id, LIVE))).scalar_one_or_none()
    if org is None:
        raise NotFound(f"organization {org_id} not found", details={"organization_id": str(org_id)})
    return org


async def list_for_user(session: AsyncSession, user_id: uuid.UUID) -> list[tuple[Organization, str]]:
    """The user's organizations with their role in each, oldest membership first."""
    rows = await session.execute(select(Organization, Membership.role).join(
        Membership, Membership.org_id == Organization.id).where(Membership.user_id == user_id, LIVE)
        .order_by(Membership.created_at, Organization.id))
    return [(org, role) for org, role in rows]


async def rename_organization(session: AsyncSession, org_id: uuid.UUID, name: str) -> Organization:
    """Change an organization's name."""
    org = await get_organization(session, org_id)
    await _name_free(session, name, exclude=org_id)
    org.name, org.name_key = name, name_key(name)
    org.updated_at = func.now()
    await session.flush()
    await session.refresh(org)
    return org


async def set_limits(session: AsyncSession, org_id: uuid.UUID, limits: dict[str, int | None]) -> Organization:
    """Override quota and rate-limit defaults for one organization (None removes an override)."""
    org = await get_organization(session, org_id)
    merged = {**org.limits, **limits}
    org.limits = {k: v for k, v in merged.items() if v is not None}
    org.updated_at = func.now()
    await session.flush()
    await session.refresh(org)
    return org


async def delete_organization(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Delete an organization (soft): its keys stop working and its data stops being served at once."""
    await get_organization(session, org_id)
    await session.execute(update(Organization).where(Organization.id == org_id).values(deleted_at=func.now()))
    await session.execute(update(ApiKey).where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
                          .values(revoked_at=func.now()))


async def list_members(session: AsyncSession, org_id: uuid.UUID) -> list[tuple[Membership, User]]:
    """Members with their accounts, oldest first."""
    rows = await session.execute(select(Membership, User).join(User, User.id == Membership.user_id).where(
        Membership.org_id == org_id, User.deleted_at.is_(None)).order_by(Membership.created_at, User.id))
    return [(m, u) for m, u in rows]


async def get_membership(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> Membership:
    """One member of the organization, or NotFound."""
    member = (await session.execute(select(Membership).join(User, User.id == Membership.user_id).where(
        Membership.org_id == org_id, Membership.user_id == user_id, User.deleted_at.is_(None)))).scalar_one_or_none()
    if member is None:
        raise NotFound(f"user {user_id} is not a member", details={"user_id": str(user_id)})
    return member


async def add_member(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID, role: Role,
                     granter: Role) -> Membership:
    """Add a user with a role no higher than the granter's own; 409 if already a member."""
    if not can_grant(granter, role):
        raise Forbidden(f"a {granter.value} can't grant the {role.value} role", code="role_too_high")
    inserted = (await session.execute(pg_insert(Membership).values(org_id=org_id, user_id=user_id, role=role.value)
                                      .on_conflict_do_nothing().returning(Membership.user_id))).first()
    if inserted is None:
        raise Conflict("this user is already a member", code="already_member", details={"user_id": str(user_id)})
    return await get_membership(session, org_id, user_id)


async def _owner_count(session: AsyncSession, org_id: uuid.UUID) -> int:
    # FOR UPDATE on the owners' rows: two demotions racing can't both see "another owner remains".
    # Locked in (org_id, user_id) order, as users.sole_owner_of does, so the two can't deadlock.
    rows = await session.execute(select(Membership.user_id).where(
        Membership.org_id == org_id, Membership.role == Role.OWNER.value)
        .order_by(Membership.user_id).with_for_update())
    return len(rows.all())


async def change_role(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID, role: Role,
                      granter: Role) -> Membership:
    """Change a member's role; nobody grants above their own, and the last owner stays an owner."""
    member = await get_membership(session, org_id, user_id)
    current = Role(member.role)
    if not can_grant(granter, role) or not can_grant(granter, current):
        raise Forbidden(f"a {granter.value} can't change a {current.value} to {role.value}", code="role_too_high")
    if current is Role.OWNER and role is not Role.OWNER and await _owner_count(session, org_id) <= 1:
        raise Conflict("the last owner can't be demoted: make someone else an owner first", code="last_owner")
    member.role = role.value
    await session.flush()
    return member


async def remove_member(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID, granter: Role | None) -> None:
    """Remove a member (`granter` None: the member leaves); the last owner can't go."""
    member = await get_membership(session, org_id, user_id)
    current = Role(member.role)
    if granter is not None and not can_grant(granter, current):
        raise Forbidden(f"a {granter.value} can't remove a {current.value}", code="role_too_high")
    if current is Role.OWNER and await _owner_count(session, org_id) <= 1:
        raise Conflict("the last owner can't leave: make someone else an owner or delete the organization",
                       code="last_owner")
    await session.execute(Membership.__table__.delete().where(Membership.org_id == org_id,
                                                               Membership.user_id == user_id))
