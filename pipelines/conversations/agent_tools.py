"""The tools an agent's model may call in a turn, and running one call.

- Memory tools (always there), after Letta's: `core_memory_append` and `core_memory_replace` write
  the agent's blocks as new versions (a write past the block's rewrite threshold queues a rewrite),
  `memory_insert` stores a memory in the conversation's scope, `memory_search` and
  `conversation_search` recall memories and past messages.
- The file tools (`file_save`, `file_read`, `file_search`) on the organization's workspace, and
  `web_search` when the operator configured a search endpoint.
- The registered tools the agent lists (`tool_ids`), run in the sandbox.
- The cached tools of the MCP servers the agent lists (`mcp_server_ids`), as `mcp__<server>__<tool>`,
  called through the worker's pooled stdio process or over streamable HTTP (pipelines/mcp/call.py).

A memory tool's write commits in the same transaction as the tool message recording its result, so a
turn resumed after a crash sees either both or neither: the write happens once. A call the model got
wrong (unknown tool, bad arguments, a block over its limit) is no failure of the turn: its result
says what was wrong, and the model may try again.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.embedder import get_embedder
from core.errors import AppError, PermanentJobError
from pipelines.agents.store import blocks_of
from pipelines.blocks import rewrite, store as blocks
from pipelines.conversations.context import recall
from pipelines.mcp import call as mcp_call
from pipelines.mcp.servers import LIVE as LIVE_MCP
from pipelines.memories.store import add_many, content_hash
from pipelines.tools import execute, registry, workspace
from schemas.blocks import BlockUpdate
from schemas.conversations import MessageSearchIn
from schemas.permissions import Principal
from schemas.tables import Agent, Conversation, McpServer, Message, Tool

MEMORY_NAMESPACE = uuid.UUID("3b0f6a52-6b6e-4b8e-9a36-1f6d1b1c7e21")
SEARCH_TOP_K = 5
_TEXT = {"type": "string", "minLength": 1, "maxLength": 20_000}
_TOP_K = {"type": "integer", "minimum": 1, "maximum": 20, "description": "How many results (default 5)."}

MEMORY_TOOLS: dict[str, dict[str, Any]] = {
    "core_memory_append": {
        "description": "Append text to one of your core memory blocks (shown in your system prompt), on a new line.",
        "parameters": {"type": "object", "properties": {
            "label": {"type": "string", "description": "The block's label."}, "content": _TEXT},
            "required": ["label", "content"], "additionalProperties": False}},
    "core_memory_replace": {
        "description": "Replace text in one of your core memory blocks: `old_content` must occur in it exactly; "
                       "an empty `new_content` deletes it.",
        "parameters": {"type": "object", "properties": {
            "label": {"type": "string"}, "old_content": _TEXT,
            "new_content": {"type": "string", "maxLength": 20_000}},
            "required": ["label", "old_content", "new_content"], "additionalProperties": False}},
    "memory_insert": {
        "description": "Store a fact in long-term memory (recalled in later conversations when relevant).",
        "parameters": {"type": "object", "properties": {"content": _TEXT}, "required": ["content"],
                       "additionalProperties": False}},
    "memory_search": {
        "description": "Search long-term memory by meaning and words.",
        "parameters": {"type": "object", "properties": {"query": _TEXT, "top_k": _TOP_K}, "required": ["query"],
                       "additionalProperties": False}},
    "conversation_search": {
        "description": "Search past messages of your conversations with this user by meaning and words.",
        "parameters": {"type": "object", "properties": {"query": _TEXT, "top_k": _TOP_K}, "required": ["query"],
                       "additionalProperties": False}},
}


class ToolCallError(Exception):
    """The call can't be carried out as the model wrote it; the message goes back to the model."""


# What a model may call a function: OpenAI's rule, which MCP names (server and tool) must fit together.
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class TurnTools:
    """What a turn may call: the request's `tools`, the registered tools behind them by name, and the MCP
    tools by function name (server id, tool name)."""

    definitions: list[dict[str, Any]]
    registered: dict[str, Tool]
    mcp: dict[str, tuple[uuid.UUID, str]] = field(default_factory=dict)


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


async def turn_tools(session: AsyncSession, agent: Agent) -> TurnTools:
    """The memory tools, the built-ins that are on and the agent's live registered tools (a deleted one drops out)."""
    definitions = [_function(name, spec["description"], spec["parameters"]) for name, spec in MEMORY_TOOLS.items()]
    definitions += [_function(b.name, b.description, b.json_schema) for b in workspace.enabled_builtins()]
    registered: dict[str, Tool] = {}
    if agent.tool_ids:
        rows = (await session.execute(select(Tool).where(Tool.id.in_(agent.tool_ids), Tool.org_id == agent.org_id,
                                                         registry.LIVE).order_by(Tool.name))).scalars()
        for row in rows:
            if row.name in MEMORY_TOOLS or row.name in workspace.BUILTINS:
                continue  # the built-in keeps its name
            registered[row.name] = row
            definitions.append(_function(row.name, row.description or row.name,
                                         row.json_schema or {"type": "object", "properties": {}}))
    turn = TurnTools(definitions, registered)
    await _add_mcp_tools(session, agent, turn)
    return turn


def mcp_function_name(server: str, tool: str) -> str | None:
    """How a model calls an MCP tool, or None when the names don't fit a function name."""
    name = f"mcp__{server}__{tool}"
    return name if FUNCTION_NAME.match(name) else None


async def _add_mcp_tools(session: AsyncSession, agent: Agent, turn: TurnTools) -> None:
    if not agent.mcp_server_ids:
        return
    rows = (await session.execute(select(McpServer).where(
        McpServer.id.in_(agent.mcp_server_ids), McpServer.org_id == agent.org_id, LIVE_MCP)
        .order_by(McpServer.name))).scalars()
    for row in rows:
        for tool in row.tools or []:
            name = mcp_function_name(row.name, tool["name"])
            if name is None:
                continue
            turn.mcp[name] = (row.id, tool["name"])
            description = tool.get("description") or tool.get("title") or tool["name"]
            turn.definitions.append(_function(name, f"[MCP server {row.name}] {description}"[:1024],
                                              tool.get("input_schema") or {"type": "object", "properties": {}}))


async def run_mcp(org_id: uuid.UUID, target: tuple[uuid.UUID, str], arguments: dict[str, Any],
                  checkpoint: Any) -> dict[str, Any]:
    """An MCP tool's call for the model: its output, or what went wrong (a timeout, a dead server)."""
    return await mcp_call.call_for_agent(org_id, target[0], target[1], arguments, checkpoint)


def parse_arguments(text: str) -> dict[str, Any]:
    """A call's arguments as an object, or ToolCallError saying why not."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ToolCallError(f"the arguments are not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise ToolCallError("the arguments must be a JSON object")
    return value


def _check(schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    try:
        registry.check_arguments(schema, arguments)
    except AppError as exc:
        raise ToolCallError(exc.message) from None


@dataclass
class TurnScope:
    """Who a turn acts for: its job, agent, conversation, and the principal its writes are recorded under."""

    job_id: uuid.UUID
    org_id: uuid.UUID
    agent: Agent
    conversation: Conversation
    who: Principal


async def _block(session: AsyncSession, scope: TurnScope, label: str) -> Any:
    for block in (await blocks_of(session, [scope.agent.id])).get(scope.agent.id, []):
        if block.label == label:
            return block
    raise ToolCallError(f"you have no core memory block labelled {label!r}")


async def _write_block(session: AsyncSession, scope: TurnScope, block: Any, value: str) -> dict[str, Any]:
    try:
        row, _ = await blocks.update_block(session, scope.org_id, block.id, BlockUpdate(value=value),
                                           expected_version=None, actor=scope.who.actor)
    except AppError as exc:
        raise ToolCallError(exc.message) from None
    rewrite_job = await rewrite.rewrite_after_write(session, scope.who, row)
    out = {"label": row.label, "version": row.version, "chars": len(row.value), "limit": row.char_limit}
    if rewrite_job is not None:
        out["rewrite_job_id"] = str(rewrite_job)
    return out


async def run_memory_tool(session: AsyncSession, scope: TurnScope, name: str, arguments: dict[str, Any],
                          call_id: str) -> dict[str, Any]:
    """Carry out a memory tool on `session` (the caller commits it with the tool message)."""
    _check(MEMORY_TOOLS[name]["parameters"], arguments)
    if name == "core_memory_append":
        block = await _block(session, scope, arguments["label"])
        value = f"{block.value}\n{arguments['content']}" if block.value else arguments["content"]
        return await _write_block(session, scope, block, value)
    if name == "core_memory_replace":
        block = await _block(session, scope, arguments["label"])
        if arguments["old_content"] not in block.value:
            raise ToolCallError(f"`old_content` does not occur in block {block.label!r}")
        return await _write_block(session, scope, block,
                                  block.value.replace(arguments["old_content"], arguments["new_content"], 1))
    if name == "memory_insert":
        return await _insert_memory(session, scope, arguments["content"], call_id)
    top_k = arguments.get("top_k") or SEARCH_TOP_K
    if name == "memory_search":
        found = await recall(session, scope.org_id, scope.agent, scope.conversation.user_id, arguments["query"],
                             top_k)
        return {"memories": [{"content": m.content, "score": m.score,
                              "created_at": m.created_at.isoformat() if m.created_at else None} for m in found]}
    return await _search_conversations(session, scope, arguments["query"], top_k)


async def _insert_memory(session: AsyncSession, scope: TurnScope, content: str, call_id: str) -> dict[str, Any]:
    [vector] = await get_embedder().embed([content])
    digest = content_hash(content)
    memory_id = uuid.uuid5(MEMORY_NAMESPACE, f"{scope.job_id}:{call_id}")
    row = dict(id=memory_id, org_id=scope.org_id, user_id=scope.conversation.user_id,
               agent_id=str(scope.agent.id), run_id=None, content=content,
               meta={"source": "agent", "conversation_id": str(scope.conversation.id)},
               content_hash=digest, embedding=vector, embedded_hash=digest, source_job_id=None, source_index=None)
    await add_many(session, [row], job_id=scope.job_id, actor=scope.who.actor, meta={"source": "agent_tool"},
                   conflict=None)
    return {"memory_id": str(memory_id), "stored": True}


async def _search_conversations(session: AsyncSession, scope: TurnScope, query: str, top_k: int) -> dict[str, Any]:
    from pipelines.conversations.search import search_messages  # the search module imports this package's store

    conversation = scope.conversation
    search = MessageSearchIn(query=query[:2000], agent_id=scope.agent.id, top_k=top_k)
    clauses = [Message.user_id == conversation.user_id] if conversation.user_id else [Message.user_id.is_(None)]
    # Not this turn's own messages: the model has them already.
    clauses.append(Message.job_id.is_distinct_from(scope.job_id))
    hits = await search_messages(session, scope.org_id, search, scope=clauses)
    return {"messages": [{"role": m.role, "content": m.content, "conversation_id": str(m.conversation_id),
                          "created_at": m.created_at.isoformat(), "score": round(score, 4)} for m, score in hits]}


def run_file_tool(org_id: uuid.UUID, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A file tool on the organization's workspace (blocking: run it in a thread)."""
    _check(workspace.BUILTINS[name].json_schema, arguments)
    try:
        workspace.check_arguments(name, arguments)
        return workspace.run_builtin(org_id, name, arguments)
    except (AppError, PermanentJobError) as exc:
        raise ToolCallError(exc.message) from None


async def run_registered(row: Tool, arguments: dict[str, Any], checkpoint: Any) -> dict[str, Any]:
    """A registered tool in the sandbox; what it printed and how it ended."""
    _check(row.json_schema or {}, arguments)
    result = await execute.run_in_sandbox(row, arguments, sink=lambda stream, text: None, checkpoint=checkpoint)
    keep = ("reason", "exit_code", "signal", "stdout", "stderr", "stdout_truncated", "stderr_truncated",
            "duration_ms")
    return {k: result[k] for k in keep if k in result}


def is_memory_tool(name: str) -> bool:
    """Whether the call is carried out in the database, with its tool message."""
    return name in MEMORY_TOOLS


async def run_builtin_tool(org_id: uuid.UUID, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A built-in tool the model called: a file tool off the event loop, `web_search` (if it is on) on it."""
    if not workspace.builtin_enabled(name):
        raise ToolCallError(f"there is no tool called {name!r}")
    if name != "web_search":
        return await asyncio.to_thread(run_file_tool, org_id, name, arguments)
    _check(workspace.BUILTINS[name].json_schema, arguments)
    try:
        return await execute.run_builtin(org_id, name, arguments)
    except (AppError, PermanentJobError) as exc:
        raise ToolCallError(exc.message) from None
