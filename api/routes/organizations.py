"""Organizations and their members."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.accounts import organizations, users
from pipelines.accounts.key_cache import key_cache
from schemas.common import ErrorOut
from schemas.organizations import (
    MemberAdd,
    MemberOut,
    MemberUpdate,
    OrganizationCreate,
    OrganizationOut,
    OrganizationUpdate,
)
from schemas.permissions import Permission as P, Principal, Role

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/organizations", tags=["organizations"],
                   responses=error_responses(401, 403, 404, 422, 429, 503, e404="No such organization among yours"))


def _out(org, role: Role | str | None) -> OrganizationOut:
    return OrganizationOut(id=org.id, name=org.name, role=Role(role) if role else None, limits=org.limits,
                           created_at=org.created_at)


def _member_out(membership, user) -> MemberOut:
    return MemberOut(user_id=user.id, username=user.username, email=user.email, role=Role(membership.role),
                     joined_at=membership.created_at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OrganizationOut,
             responses={409: {"model": ErrorOut, "description": "The name is taken"}})
@audited("organization", target=lambda result: result.id, org_id=lambda result: result.id)
async def create_organization(body: OrganizationCreate, session: SessionDep,
                              who: Annotated[Principal, Depends(Allow(None, user_only=True))]) -> OrganizationOut:
    """Create an organization; you become its owner."""
    org = await organizations.create_organization(session, body.name, owner_id=who.user_id)
    await session.commit()
    return _out(org, Role.OWNER)


@router.get("", response_model=list[OrganizationOut])
async def list_organizations(session: SessionDep,
                             who: Annotated[Principal, Depends(Allow(None))]) -> list[OrganizationOut]:
    """Your organizations (for an API key: its own)."""
    if who.user_id is None:
        return [_out(await organizations.get_organization(session, who.org_id), who.role)]
    return [_out(org, role) for org, role in await organizations.list_for_user(session, who.user_id)]


@router.get("/{org_id}", response_model=OrganizationOut)
async def get_organization(org_id: uuid.UUID, session: SessionDep,
                           who: Annotated[Principal, Depends(Allow(P.ORG_READ))]) -> OrganizationOut:
    """One of your organizations."""
    return _out(await organizations.get_organization(session, org_id), who.role)


@router.patch("/{org_id}", response_model=OrganizationOut,
              responses={409: {"model": ErrorOut, "description": "The name is taken"}})
@audited()
async def update_organization(org_id: uuid.UUID, body: OrganizationUpdate, session: SessionDep,
                              who: Annotated[Principal, Depends(Allow(P.ORG_MANAGE))]) -> OrganizationOut:
    """Rename an organization."""
    org = await organizations.rename_organization(session, org_id, body.name)
    await session.commit()
    return _out(org, who.role)


@router.delete("/{org_id}", status_code=status.HTTP_204_NO_CONTENT)
@audited()
async def delete_organization(org_id: uuid.UUID, session: SessionDep,
                              who: Annotated[Principal, Depends(Allow(P.ORG_DELETE))]) -> Response:
    """Delete an organization (soft, owners only): its API keys are revoked and its data is no longer served."""
    await organizations.delete_organization(session, org_id)
    await session.commit()
    key_cache().invalidate(f"org:{org_id}")  # its keys: here at once; other processes when PostgreSQL notifies them
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org_id}/members", response_model=list[MemberOut])
async def list_members(org_id: uuid.UUID, session: SessionDep,
                       who: Annotated[Principal, Depends(Allow(P.MEMBERS_READ))]) -> list[MemberOut]:
    """The organization's members and their roles."""
    return [_member_out(m, u) for m, u in await organizations.list_members(session, org_id)]


@router.post("/{org_id}/members", status_code=status.HTTP_201_CREATED, response_model=MemberOut,
             responses={409: {"model": ErrorOut, "description": "Already a member"}})
@audited("member", target=lambda result: result.user_id, details=lambda body: {"role": body.role.value})
async def add_member(org_id: uuid.UUID, body: MemberAdd, session: SessionDep,
                     who: Annotated[Principal, Depends(Allow(P.MEMBERS_MANAGE))]) -> MemberOut:
    """Add an existing account with a role no higher than yours."""
    user = await users.find_user(session, body.username)
    membership = await organizations.add_member(session, org_id, user.id, body.role, who.role)
    await session.commit()
    return _member_out(membership, user)


@router.patch("/{org_id}/members/{user_id}", response_model=MemberOut,
              responses={409: {"model": ErrorOut, "description": "The last owner can't be demoted"}})
@audited("member", target=lambda user_id: user_id, details=lambda body: {"role": body.role.value})
async def update_member(org_id: uuid.UUID, user_id: uuid.UUID, body: MemberUpdate, session: SessionDep,
                        who: Annotated[Principal, Depends(Allow(P.MEMBERS_MANAGE))]) -> MemberOut:
    """Change a member's role (never above yours; an organization always keeps an owner)."""
    membership = await organizations.change_role(session, org_id, user_id, body.role, who.role)
    await session.commit()
    return _member_out(membership, await users.get_user(session, user_id))


@router.delete("/{org_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: {"model": ErrorOut, "description": "The last owner can't be removed"}})
@audited("member", target=lambda user_id: user_id)
async def remove_member(org_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep,
                        who: Annotated[Principal, Depends(Allow(P.MEMBERS_MANAGE))]) -> Response:
    """Remove a member (an organization always keeps an owner)."""
    await organizations.remove_member(session, org_id, user_id, who.role)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{org_id}/leave", status_code=status.HTTP_204_NO_CONTENT,
             responses={409: {"model": ErrorOut, "description": "You are the last owner"}})
@audited("member", target=lambda who: who.user_id)
async def leave_organization(org_id: uuid.UUID, session: SessionDep,
                             who: Annotated[Principal, Depends(Allow(P.ORG_READ, user_only=True))]) -> Response:
    """Leave an organization. The last owner can't: make someone else an owner, or delete it."""
    await organizations.remove_member(session, org_id, who.user_id, None)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
