"""API keys of your organization: create (the secret is shown once), list, revoke."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.accounts import api_keys
from pipelines.accounts.key_cache import key_cache
from schemas.common import ErrorOut
from schemas.organizations import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/api-keys", tags=["api keys"], responses=error_responses(
    401, 403, 422, 429, 503, e403="Needs `keys:manage`; or the key's role is above yours (`role_too_high`), "
         "or its permissions are not all yours (`scope_not_held`)"))
KeyManager = Annotated[Principal, Depends(Allow(P.KEYS_MANAGE))]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
@audited("api_key", target=lambda result: result.id,
         details=lambda result: {"role": result.role.value, "prefix": result.prefix})
async def create_api_key(body: ApiKeyCreate, session: SessionDep, who: KeyManager) -> ApiKeyCreated:
    """Create a key for your organization with a role (at most yours) and optional scopes (at most yours: a
    key narrowed to some scopes can only create keys narrowed to those, or fewer).

    The response holds the secret (`key`) this one time; only its hash is stored.
    """
    row, material = await api_keys.create_key(session, who.org_id, name=body.name, role=body.role,
                                              scopes=body.scopes, expires_at=body.expires_at, created_by=who.actor,
                                              granter=who)
    await session.commit()
    return ApiKeyCreated(**ApiKeyOut.model_validate(row).model_dump(), key=material.secret)


@router.get("", response_model=list[ApiKeyOut])
async def list_api_keys(session: SessionDep, who: KeyManager, include_revoked: bool = False) -> list[ApiKeyOut]:
    """Your organization's keys (prefix, name, role, scopes, created, last used, expiry) — never the secrets."""
    return [ApiKeyOut.model_validate(k) for k in await api_keys.list_keys(session, who.org_id,
                                                                         include_revoked=include_revoked)]


@router.delete("/{key_id}", response_model=ApiKeyOut, responses={404: {"model": ErrorOut}})
# As its creation is recorded (the path would say `key`), failed or not.
@audited("api_key", target=lambda key_id: key_id, failed_too=True)
async def revoke_api_key(key_id: uuid.UUID, session: SessionDep, who: KeyManager) -> ApiKeyOut:
    """Revoke a key; the next request made with it is refused with `api_key_revoked`. Keys of a role above
    yours are not yours to revoke (`role_too_high`)."""
    row = await api_keys.revoke_key(session, who.org_id, key_id, revoker=who.role)
    await session.commit()
    key_cache().invalidate(f"key:{row.prefix}")  # here at once; other processes when PostgreSQL notifies them
    return ApiKeyOut.model_validate(row)
