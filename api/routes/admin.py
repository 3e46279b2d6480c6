"""Service administration (superusers): accounts, password resets, organization limits."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.accounts import organizations, users
from pipelines.accounts.key_cache import key_cache
from schemas.accounts import PasswordResetOut, UserAdminUpdate, UserOut
from schemas.common import Page
from schemas.organizations import LimitsUpdate, OrganizationOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/admin", tags=["admin"], responses=error_responses(
    401, 403, 404, 422, 429, 503, e401="Not signed in", e403="Only service administrators (superusers)",
    e404="No such user or organization"))
Admin = Annotated[Principal, Depends(Allow(P.USERS_ADMIN, user_only=True))]


@router.get("/users", response_model=Page[UserOut])
async def list_users(session: SessionDep, who: Admin, active: bool | None = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[UserOut]:
    """Every account, newest first."""
    rows, next_cursor = await users.list_users(session, limit=limit, cursor=cursor, active=active)
    return Page[UserOut](items=[UserOut.model_validate(u) for u in rows], next_cursor=next_cursor)


@router.patch("/users/{user_id}", response_model=UserOut)
@audited("user", target=lambda result: result.id, details=lambda body: {"is_active": body.is_active})
async def update_user(user_id: uuid.UUID, body: UserAdminUpdate, session: SessionDep, who: Admin) -> UserOut:
    """Activate or deactivate an account; a deactivated account's tokens stop working at once."""
    user = await users.set_active(session, user_id, body.is_active)
    await session.commit()
    return UserOut.model_validate(user)


@router.post("/users/{user_id}/password-reset", response_model=PasswordResetOut)
@audited("user", target=lambda user_id: user_id)
async def issue_password_reset(user_id: uuid.UUID, session: SessionDep, who: Admin) -> PasswordResetOut:
    """Issue a single-use password-reset token for `POST /api/v1/auth/password-reset`."""
    token, lifetime = await users.issue_password_reset(session, user_id)
    return PasswordResetOut(reset_token=token, expires_in=lifetime)


@router.patch("/organizations/{organization_id}/limits", response_model=OrganizationOut)
@audited("organization", target=lambda result: result.id, org_id=lambda result: result.id)
async def set_organization_limits(organization_id: uuid.UUID, body: LimitsUpdate, session: SessionDep,
                                  who: Admin) -> OrganizationOut:
    """Override an organization's quotas and rate limit; `null` restores the service default."""
    org = await organizations.set_limits(session, organization_id, body.model_dump(exclude_unset=True))
    await session.commit()
    key_cache().invalidate(f"org:{org.id}")  # its keys' rate limit: here at once, elsewhere when notified
    return OrganizationOut(id=org.id, name=org.name, limits=org.limits, created_at=org.created_at)
