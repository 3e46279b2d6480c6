"""Agents: their instructions and prompt template, and the core-memory blocks attached to them.

A block can be attached to several agents (shared memory, as in Letta); among one agent's blocks a
label is unique, which the database enforces (`agent_blocks` mirrors each block's label). Attaching
and detaching take the agent's row lock, so positions are handed out without a race.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import NotFound
from pipelines.agents.prompts import validate_template
from pipelines.blocks import store as block_rows
from pipelines.llm.configs import get_config
from pipelines.pages import newest_first
from schemas.agents import AgentCreate, AgentUpdate
from schemas.tables import Agent, AgentBlock, Block, McpServer, Tool


async def get_agent(session: AsyncSession, org_id: uuid.UUID, agent_id: uuid.UUID, *,
                    for_update: bool = False) -> Agent:
    """A live agent of the organization (NotFound otherwise)."""
    query = select(Agent).where(Agent.id == agent_id, Agent.org_id == org_id, Agent.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    agent = (await session.execute(query)).scalar_one_or_none()
    if agent is None:
        raise NotFound(f"agent {agent_id} not found", details={"agent_id": str(agent_id)})
    return agent


async def blocks_of(session: AsyncSession, agent_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Block]]:
    """Each agent's attached live blocks, in attachment order."""
    if not agent_ids:
        return {}
    rows = (await session.execute(
        select(AgentBlock.agent_id, Block).join(Block, Block.id == AgentBlock.block_id)
        .where(AgentBlock.agent_id.in_(agent_ids), Block.deleted_at.is_(None))
        .order_by(AgentBlock.agent_id, AgentBlock.position))).all()
    found: dict[uuid.UUID, list[Block]] = defaultdict(list)
    for agent_id, block in rows:
        found[agent_id].append(block)
    return found


CHAT_SETTINGS = ("llm", "max_steps", "memory_top_k", "memory_extraction", "tool_ids", "mcp_server_ids")


def chat_columns(fields: dict) -> dict:
    """API fields → column values (`llm` stored without its unset keys, the enum as its value)."""
    out = dict(fields)
    if isinstance(out.get("llm"), dict):
        out["llm"] = {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in out["llm"].items() if v is not None}
    if out.get("memory_extraction") is not None:
        out["memory_extraction"] = str(out["memory_extraction"])
    return out


async def check_chat(session: AsyncSession, org_id: uuid.UUID, tool_ids: list[uuid.UUID] | None,
                     config_id: uuid.UUID | None, mcp_server_ids: list[uuid.UUID] | None = None) -> None:
    """Refuse tools, MCP servers and an LLM config that are not the organization's own live ones (404)."""
    if config_id is not None:
        await get_config(session, org_id, config_id)
    if mcp_server_ids:
        found = set((await session.execute(select(McpServer.id).where(
            McpServer.id.in_(mcp_server_ids), McpServer.org_id == org_id, McpServer.deleted_at.is_(None)))).scalars())
        missing = [str(s) for s in mcp_server_ids if s not in found]
        if missing:
            raise NotFound(f"MCP server {missing[0]} not found in your organization", code="mcp_server_not_found",
                           details={"mcp_server_ids": missing})
    if not tool_ids:
        return
    found = set((await session.execute(select(Tool.id).where(
        Tool.id.in_(tool_ids), Tool.org_id == org_id, Tool.deleted_at.is_(None)))).scalars())
    missing = [str(t) for t in tool_ids if t not in found]
    if missing:
        raise NotFound(f"tool {missing[0]} not found in your organization", code="tool_not_found",
                       details={"tool_ids": missing})


async def create_agent(session: AsyncSession, org_id: uuid.UUID, data: AgentCreate) -> Agent:
    """Insert an agent (its template checked first) with the given blocks attached in order."""
    if data.prompt_template is not None:
        validate_template(data.prompt_template)
    chat = chat_columns(data.model_dump(exclude_none=True, include=set(CHAT_SETTINGS)))
    await check_chat(session, org_id, data.tool_ids, data.llm.config_id if data.llm else None, data.mcp_server_ids)
    agent = Agent(org_id=org_id, name=data.name, description=data.description, system=data.system,
                  prompt_template=data.prompt_template, meta=data.metadata, **chat)
    session.add(agent)
    await session.flush()
    await session.refresh(agent)
    for block_id in data.block_ids:
        await attach_block(session, org_id, agent.id, block_id)
    return agent


async def list_agents(session: AsyncSession, org_id: uuid.UUID, *, name: str | None, limit: int,
                      cursor: str | None) -> tuple[list[Agent], str | None]:
    """A page of live agents, newest first, optionally by exact name."""
    query = select(Agent).where(Agent.org_id == org_id, Agent.deleted_at.is_(None))
    if name is not None:
        query = query.where(Agent.name == name)
    return await newest_first(session, query, Agent, limit=limit, cursor=cursor)


async def update_agent(session: AsyncSession, org_id: uuid.UUID, agent_id: uuid.UUID, change: AgentUpdate) -> Agent:
    """Change an agent's fields; a new template is checked before anything is written."""
    agent = await get_agent(session, org_id, agent_id, for_update=True)
    fields = change.model_dump(exclude_unset=True)
    if fields.get("prompt_template") is not None:
        validate_template(fields["prompt_template"])
    if "metadata" in fields:
        fields["meta"] = fields.pop("metadata")
    await check_chat(session, org_id, fields.get("tool_ids"), change.llm.config_id if change.llm else None,
                     fields.get("mcp_server_ids"))
    fields = chat_columns(fields)
    return (await session.execute(
        update(Agent).where(Agent.id == agent.id).values(**fields, updated_at=text("now()"))
        .returning(Agent).execution_options(populate_existing=True))).scalar_one()


async def delete_agent(session: AsyncSession, org_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    """Soft-delete an agent and detach its blocks (the blocks themselves stay)."""
    agent = await get_agent(session, org_id, agent_id, for_update=True)
    await session.execute(AgentBlock.__table__.delete().where(AgentBlock.agent_id == agent.id))
    await session.execute(update(Agent).where(Agent.id == agent.id)
                          .values(deleted_at=text("now()"), updated_at=text("now()")))


async def attach_block(session: AsyncSession, org_id: uuid.UUID, agent_id: uuid.UUID, block_id: uuid.UUID) -> bool:
    """Attach a block at the end of the agent's blocks; False if it already was. 409 on a label clash."""
    agent = await get_agent(session, org_id, agent_id, for_update=True)
    block = await block_rows.get_block(session, org_id, block_id, for_update=True)
    position = (await session.execute(select(func.coalesce(func.max(AgentBlock.position), 0) + 1)
                                      .where(AgentBlock.agent_id == agent.id))).scalar_one()
    try:
        async with session.begin_nested():
            inserted = (await session.execute(
                pg_insert(AgentBlock).values(agent_id=agent.id, block_id=block.id, org_id=org_id, label=block.label,
                                             position=position)
                .on_conflict_do_nothing(index_elements=["agent_id", "block_id"])
                .returning(AgentBlock.block_id))).scalar_one_or_none()
    except IntegrityError:
        raise block_rows.label_taken(block.label, agent.id) from None
    return inserted is not None


async def detach_block(session: AsyncSession, org_id: uuid.UUID, agent_id: uuid.UUID, block_id: uuid.UUID) -> None:
    """Detach a block from an agent (NotFound when it isn't attached); the block stays."""
    agent = await get_agent(session, org_id, agent_id, for_update=True)
    removed = (await session.execute(
        AgentBlock.__table__.delete().where(AgentBlock.agent_id == agent.id, AgentBlock.block_id == block_id)
        .returning(AgentBlock.block_id))).scalar_one_or_none()
    if removed is None:
        raise NotFound(f"block {block_id} is not attached to agent {agent_id}",
                       details={"agent_id": str(agent_id), "block_id": str(block_id)})
