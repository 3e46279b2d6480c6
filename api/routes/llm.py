"""LLM provider configurations of your organization: the chat models its memory jobs call."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.llm import configs as llm_configs
from schemas.common import ErrorOut
from schemas.llm import LlmConfigCreate, LlmConfigOut, LlmConfigUpdate, LlmDefaultIn
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/llm/configs", tags=["llm"], responses=error_responses(
    401, 403, 422, 429, 503, e403="Needs `llm:manage` (admins and owners)"))
LlmManager = Annotated[Principal, Depends(Allow(P.LLM_MANAGE))]
NOT_FOUND = {404: {"model": ErrorOut, "description": "No such configuration in your organization"}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=LlmConfigOut,
             responses={409: {"model": ErrorOut, "description": "The name is taken"}})
@audited("llm_config", target=lambda result: result.id,
         details=lambda result: {"name": result.name, "is_default": result.is_default})
async def create_llm_config(body: LlmConfigCreate, session: SessionDep, who: LlmManager) -> LlmConfigOut:
    """Add a provider: OpenAI, Azure OpenAI (`api_version` required) or any OpenAI-compatible endpoint.

    The API key is stored encrypted and never returned; responses show `api_key_set` and its last
    four characters. With `is_default: true` it replaces the organization's previous default.
    `base_url` must lead to public addresses (`422 url_not_allowed` names the rule that refused it,
    `422 url_unresolvable` a host name without an address) unless the operator allows it with
    `AGENTMEM_OUTBOUND_ALLOW`.
    """
    row = await llm_configs.create_config(session, who.org_id, body)
    await session.commit()
    return LlmConfigOut.from_row(row)


@router.get("", response_model=list[LlmConfigOut])
async def list_llm_configs(session: SessionDep, who: LlmManager) -> list[LlmConfigOut]:
    """Your organization's provider configurations, the default first."""
    return [LlmConfigOut.from_row(r) for r in await llm_configs.list_configs(session, who.org_id)]


# Declared before "/{config_id}": "default" is no configuration id.
@router.get("/default", response_model=LlmConfigOut, responses={404: {
    "model": ErrorOut, "description": "`no_default_llm_config`: none is the default; `details.fallback` says "
    "what jobs use instead: `service` (the service-wide provider) or `none`"}})
async def get_default_llm_config(session: SessionDep, who: LlmManager) -> LlmConfigOut:
    """Your organization's default provider configuration: the one jobs use when they name none.

    Without one, `404 no_default_llm_config`, and `details.fallback` says what those jobs use instead:
    `service`, the service-wide provider the operator configured, or `none` (they fail with
    `llm_not_configured`).
    """
    return LlmConfigOut.from_row(await llm_configs.get_default(session, who.org_id))


@router.put("/default", response_model=LlmConfigOut, responses=NOT_FOUND)
@audited("llm_config", target=lambda body: body.config_id, failed_too=True, details=lambda: {"is_default": True})
async def set_default_llm_config(body: LlmDefaultIn, session: SessionDep, who: LlmManager) -> LlmConfigOut:
    """Make a configuration your organization's default; the previous default stops being it in the same
    transaction. Setting the current default again changes nothing."""
    row = await llm_configs.set_default(session, who.org_id, body.config_id)
    await session.commit()
    return LlmConfigOut.from_row(row)


@router.get("/{config_id}", response_model=LlmConfigOut, responses=NOT_FOUND)
async def get_llm_config(config_id: uuid.UUID, session: SessionDep, who: LlmManager) -> LlmConfigOut:
    """One provider configuration (without its API key)."""
    return LlmConfigOut.from_row(await llm_configs.get_config(session, who.org_id, config_id))


@router.patch("/{config_id}", response_model=LlmConfigOut,
              responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "The name is taken"}})
@audited("llm_config", target=lambda config_id: config_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_llm_config(config_id: uuid.UUID, body: LlmConfigUpdate, session: SessionDep,
                            who: LlmManager) -> LlmConfigOut:
    """Change some fields. Omitted fields stay; `"api_key": null` removes the stored key. A new `base_url` is
    checked as on creation."""
    row = await llm_configs.update_config(session, who.org_id, config_id, body)
    await session.commit()
    return LlmConfigOut.from_row(row)


@router.delete("/{config_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses=NOT_FOUND)
@audited("llm_config", target=lambda config_id: config_id, failed_too=True)
async def delete_llm_config(config_id: uuid.UUID, session: SessionDep, who: LlmManager) -> Response:
    """Delete a configuration. Deleting the default leaves jobs on the service-wide provider, if any."""
    await llm_configs.delete_config(session, who.org_id, config_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
