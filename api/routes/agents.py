"""Agents: instructions, a prompt template, and the core-memory blocks attached to them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.agents import prompts, store as agents
from schemas.agents import AgentCreate, AgentOut, AgentUpdate, PromptBlock, PromptOut
from schemas.blocks import BlockOut
from schemas.common import ErrorOut, Page
from schemas.permissions import Permission as P, Principal
from schemas.tables import Agent

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/agents", tags=["agents"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.AGENTS_READ))]
Writer = Annotated[Principal, Depends(Allow(P.AGENTS_WRITE))]
BlockReader = Annotated[Principal, Depends(Allow(P.BLOCKS_READ))]
NOT_FOUND = {404: {"model": ErrorOut, "description": "No such agent (or block) in your organization"}}
TEMPLATE_INVALID = {422: {"model": ErrorOut, "description": "Invalid input, or `template_invalid` (a syntax error "
                                                            "in `prompt_template`, `details.line`)"}}
LABEL_TAKEN = {409: {"model": ErrorOut, "description": "`block_label_taken`: the agent has a block with that label"}}


async def _out(session: AsyncSession, agent: Agent) -> AgentOut:
    attached = await agents.blocks_of(session, [agent.id])
    return AgentOut.from_row(agent, attached.get(agent.id, []))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AgentOut,
             responses={**NOT_FOUND, **LABEL_TAKEN, **TEMPLATE_INVALID})
@audited("agent", target=lambda result: result.id, details=lambda result: {"name": result.name})
async def create_agent(body: AgentCreate, session: SessionDep, who: Writer) -> AgentOut:
    """Create an agent, optionally with blocks attached (`block_ids`, in prompt order).

    `prompt_template` is a Jinja2 template (sandboxed) of the agent's system prompt; leave it out
    for the default. It is checked now: a syntax error is 422 `template_invalid` with `details.line`.
    """
    agent = await agents.create_agent(session, who.org_id, body)
    out = await _out(session, agent)
    await session.commit()
    return out


@router.get("", response_model=Page[AgentOut])
async def list_agents(session: SessionDep, who: Reader,
                      name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50,
                      cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[AgentOut]:
    """List agents newest first (optionally by exact name), each with its blocks."""
    rows, next_cursor = await agents.list_agents(session, who.org_id, name=name, limit=limit, cursor=cursor)
    attached = await agents.blocks_of(session, [a.id for a in rows])
    return Page[AgentOut](items=[AgentOut.from_row(a, attached.get(a.id, [])) for a in rows],
                          next_cursor=next_cursor)


@router.get("/{agent_id}", response_model=AgentOut, responses=NOT_FOUND)
async def get_agent(agent_id: uuid.UUID, session: SessionDep, who: Reader) -> AgentOut:
    """Read an agent with its blocks."""
    return await _out(session, await agents.get_agent(session, who.org_id, agent_id))


@router.patch("/{agent_id}", response_model=AgentOut, responses={**NOT_FOUND, **TEMPLATE_INVALID})
@audited("agent", target=lambda agent_id: agent_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_agent(agent_id: uuid.UUID, body: AgentUpdate, session: SessionDep, who: Writer) -> AgentOut:
    """Change an agent. `prompt_template: null` goes back to the default template; a new one is checked
    first (422 `template_invalid`)."""
    agent = await agents.update_agent(session, who.org_id, agent_id, body)
    out = await _out(session, agent)
    await session.commit()
    return out


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses=NOT_FOUND)
@audited("agent", target=lambda agent_id: agent_id, failed_too=True)
async def delete_agent(agent_id: uuid.UUID, session: SessionDep, who: Writer) -> Response:
    """Delete an agent (soft). Its blocks are detached, not deleted."""
    await agents.delete_agent(session, who.org_id, agent_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{agent_id}/blocks", response_model=list[BlockOut], responses=NOT_FOUND)
async def list_agent_blocks(agent_id: uuid.UUID, session: SessionDep, who: BlockReader) -> list[BlockOut]:
    """The agent's blocks, in prompt order."""
    agent = await agents.get_agent(session, who.org_id, agent_id)
    return [BlockOut.from_row(b) for b in (await agents.blocks_of(session, [agent.id])).get(agent.id, [])]


@router.post("/{agent_id}/blocks/{block_id}", response_model=AgentOut, responses={**NOT_FOUND, **LABEL_TAKEN})
@audited("agent", target=lambda agent_id: agent_id, failed_too=True,
         details=lambda block_id: {"block_id": str(block_id)})
async def attach_block(agent_id: uuid.UUID, block_id: uuid.UUID, session: SessionDep, who: Writer) -> AgentOut:
    """Attach a block at the end of the agent's blocks (attaching it again changes nothing). A block can be
    shared by several agents; labels are unique among one agent's blocks (409 `block_label_taken`)."""
    await agents.attach_block(session, who.org_id, agent_id, block_id)
    out = await _out(session, await agents.get_agent(session, who.org_id, agent_id))
    await session.commit()
    return out


@router.delete("/{agent_id}/blocks/{block_id}", response_model=AgentOut, responses=NOT_FOUND)
@audited("agent", target=lambda agent_id: agent_id, failed_too=True,
         details=lambda block_id: {"block_id": str(block_id)})
async def detach_block(agent_id: uuid.UUID, block_id: uuid.UUID, session: SessionDep, who: Writer) -> AgentOut:
    """Detach a block from the agent (the block itself stays); 404 when it isn't attached."""
    await agents.detach_block(session, who.org_id, agent_id, block_id)
    out = await _out(session, await agents.get_agent(session, who.org_id, agent_id))
    await session.commit()
    return out


@router.get("/{agent_id}/prompt", response_model=PromptOut,
            responses={**NOT_FOUND, 422: {"model": ErrorOut, "description": "`template_error`: the template failed "
                                                                            "while rendering (`details.line`)"}})
async def compile_prompt(agent_id: uuid.UUID, session: SessionDep, who: Reader) -> PromptOut:
    """The agent's system prompt: `system` and its blocks rendered through its template (or the default,
    which writes each block as `<label>` … `</label>` with its description, size and limit).

    Templates render in a sandbox, bounded in time and size; a failure is 422 `template_error` with
    the template's line in `details.line`.
    """
    agent = await agents.get_agent(session, who.org_id, agent_id)
    attached = (await agents.blocks_of(session, [agent.id])).get(agent.id, [])
    text, kind = await asyncio.to_thread(prompts.compile_prompt, agent, attached)
    return PromptOut(agent_id=agent.id, template=kind, prompt=text, chars=len(text),
                     blocks=[PromptBlock(id=b.id, label=b.label, version=b.version) for b in attached])
