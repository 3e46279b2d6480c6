"""User accounts: registration, sign-in checks, self-service changes, administration, password resets."""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from core.redis import get_redis
from core.security import digest, hash_password, verify_password
from core.settings import get_settings
from pipelines.pages import newest_first
from schemas.permissions import Role
from schemas.tables import Membership, Organization, User


async def _check_unique(session: AsyncSession, username: str | None, email: str | None,
                        exclude: uuid.UUID | None = None) -> None:
    live = User.deleted_at.is_(None)
    if username is not None:
        clash = select(User.id).where(live, func.lower(User.username) == username.lower())
        if exclude:
            clash = clash.where(User.id != exclude)
        if (await session.execute(clash)).first():
            raise Conflict(f"the username {username!r} is taken", code="username_taken")
    if email is not None:
        clash = select(User.id).where(live, func.lower(User.email) == email.lower())
        if exclude:
            clash = clash.where(User.id != exclude)
        if (await session.execute(clash)).first():
            raise Conflict("an account with this email exists", code="email_taken")


async def create_user(session: AsyncSession, *, username: str, password: str, email: str | None = None,
                      full_name: str | None = None, superuser: bool = False) -> User:
    """A new active account; 409 `username_taken` / `email_taken` on a clash."""
    await _check_unique(session, username, email)
    user = User(username=username, email=email, full_name=full_name, password_hash=hash_password(password),
                is_superuser=superuser)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration won the race
        raise Conflict("the username or email is taken", code="username_taken") from exc
    return user


async def authenticate(session: AsyncSession, login: str, password: str) -> User:
    """The account for a username (or email) and password; one error for every mismatch."""
    key = login.lower()
    user = (await session.execute(select(User).where(
        User.deleted_at.is_(None),
        (func.lower(User.username) == key) | (func.lower(User.email) == key)))).scalars().first()
    if not verify_password(password, user.password_hash if user else None):
        raise Unauthorized("wrong username or password", code="invalid_credentials")
    if not user.is_active:
        raise Unauthorized("this account is deactivated", code="user_inactive")
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """A live account, or NotFound."""
    user = (await session.execute(
        select(User).where(User.id == user_id, User.deleted_at.is_(None)))).scalar_one_or_none()
    if user is None:
        raise NotFound(f"user {user_id} not found", details={"user_id": str(user_id)})
    return user


async def find_user(session: AsyncSession, username: str) -> User:
    """A live account by username, or NotFound."""
    user = (await session.execute(select(User).where(
        User.deleted_at.is_(None), func.lower(User.username) == username.lower()))).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user called {username!r}", details={"username": username})
    return user


async def update_user(session: AsyncSession, user: User, *, email: str | None = None, full_name: str | None = None,
                      new_password: str | None = None, current_password: str | None = None,
                      fields: set[str]) -> User:
    """Change what the user sent (`fields`); a new password needs the current one."""
    if "email" in fields:
        await _check_unique(session, None, email, exclude=user.id)
        user.email = email
    if "full_name" in fields:
        user.full_name = full_name
    if new_password is not None:
        if not current_password or not verify_password(current_password, user.password_hash):
            raise InvalidInput("current_password is missing or wrong", code="wrong_password")
        _set_password(user, new_password)
    user.updated_at = func.now()
    await session.flush()
    await session.refresh(user)
    return user


def _set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    user.password_changed_at = datetime.now().astimezone()


async def sole_owner_of(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Live organizations where this user is the only owner (they can't leave them ownerless)."""
    # A deleted organization keeps its memberships, but there is nothing left to own.
    owned = (select(Membership.org_id).join(Organization, Organization.id == Membership.org_id)
             .where(Membership.user_id == user_id, Membership.role == Role.OWNER.value,
                    Organization.deleted_at.is_(None)))
    # FOR UPDATE on those organizations' owner rows (as organizations.change_role does): two owners
    # deleting their accounts at once can't both count the other as staying.
    rows = await session.execute(
        select(Membership.org_id).where(Membership.org_id.in_(owned), Membership.role == Role.OWNER.value)
        .order_by(Membership.org_id, Membership.user_id).with_for_update())
    owners = Counter(org_id for (org_id,) in rows)
    return [org_id for org_id, count in owners.items() if count == 1]


async def delete_user(session: AsyncSession, user: User) -> None:
    """Delete an account (soft) and its memberships; refused while it is some organization's last owner."""
    orgs = await sole_owner_of(session, user.id)
    if orgs:
        raise Conflict("you are the last owner of an organization: transfer ownership or delete it first",
                       code="last_owner", details={"organization_ids": [str(o) for o in orgs]})
    await session.execute(Membership.__table__.delete().where(Membership.user_id == user.id))
    await session.execute(update(User).where(User.id == user.id).values(deleted_at=func.now(), is_active=False))


async def list_users(session: AsyncSession, *, limit: int, cursor: str | None,
                     active: bool | None = None) -> tuple[list[User], str | None]:
    """All live accounts, newest first (service administrators only)."""
    query = select(User).where(User.deleted_at.is_(None))
    if active is not None:
        query = query.where(User.is_active == active)
    return await newest_first(session, query, User, limit=limit, cursor=cursor)


async def set_active(session: AsyncSession, user_id: uuid.UUID, active: bool) -> User:
    """Activate or deactivate an account; a deactivated user's tokens stop working at once."""
    user = await get_user(session, user_id)
    user.is_active = active
    user.updated_at = func.now()
    await session.flush()
    await session.refresh(user)
    return user


def _reset_key(token: str) -> str:
    return f"agentmem:password-reset:{digest(token)}"


async def issue_password_reset(session: AsyncSession, user_id: uuid.UUID) -> tuple[str, int]:
    """A single-use reset token for the account (only its hash is kept, in Redis); (token, lifetime)."""
    user = await get_user(session, user_id)
    token = secrets.token_urlsafe(32)
    lifetime = get_settings().password_reset_minutes * 60
    await get_redis().set(_reset_key(token), str(user.id), ex=lifetime)
    return token, lifetime


async def reset_password(session: AsyncSession, token: str, new_password: str) -> User:
    """Use a reset token once to set a new password."""
    user_id = await get_redis().getdel(_reset_key(token))
    if user_id is None:
        raise InvalidInput("the reset token is unknown, used or expired", code="invalid_reset_token")
    user = await get_user(session, uuid.UUID(user_id))
    _set_password(user, new_password)
    await session.flush()
    return user
