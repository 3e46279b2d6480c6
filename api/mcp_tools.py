"""AgentMem's MCP tools and resources, each one a call to the REST API.

Through REST, an MCP call is checked, charged, audited and answered exactly as the same REST request:
the key's organization and role, quotas and rate limits, `Idempotency-Key`, error codes. The API serves
these tools at `/mcp` with an in-process client per request that forwards the caller's credentials
(api/mcp.py); `agentmem mcp` serves them over stdio with an HTTP client to the API (cli/mcp_stdio.py).
A REST error becomes a tool result with `isError` and the API's `{"error": {"code", "message", …}}`.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

import anyio
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from core.settings import get_settings

# How a tool gets its REST client: in the API, one per request, carrying that request's credentials.
ClientFor = Callable[[Context], AbstractAsyncContextManager[httpx.AsyncClient]]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
INSTRUCTIONS = """AgentMem is long-term memory for AI agents. Store facts with add_memories and find them by
meaning with search_memories (scope them with user_id, agent_id or run_id). Writes that take work run as
jobs: pass wait_seconds to wait for one, or look it up later with get_job. Agents have core-memory blocks
(list_blocks, update_block) compiled into their prompt (resource agentmem://agents/{agent_id}/prompt);
send_message talks to an agent."""

ScopeId = Annotated[str | None, Field(min_length=1, max_length=255)]
WaitSeconds = Annotated[float, Field(ge=0, description="Seconds to wait for the job to finish (capped by the "
                                     "server, 60 by default); 0 answers at once with the job as queued.")]


class MemoryInput(BaseModel):
    """One memory to store."""

    model_config = ConfigDict(extra="forbid")
    content: str = Field(description="The text to remember: one fact or note.")
    metadata: dict[str, Any] | None = Field(default=None, description="Key-value pairs, filterable in search.")
    user_id: ScopeId = Field(default=None, description="The end user it is about (overrides the batch's).")
    agent_id: ScopeId = Field(default=None, description="The agent it belongs to (overrides the batch's).")
    run_id: ScopeId = Field(default=None, description="The session or run it came from (overrides the batch's).")
    role: Literal["user", "assistant", "system"] | None = Field(
        default=None, description="Who said it, when the memories are a conversation (with infer).")


class ApiError(Exception):
    """A REST answer of 400 or more, carrying the API's error object."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.status, self.error = status, error


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def rest(client: httpx.AsyncClient, method: str, path: str, *, body: Any = None,
               params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    """One REST call: its JSON answer, None for 204, or `ApiError` with the API's error object."""
    query = {k: v for k, v in (params or {}).items() if v is not None}
    response = await client.request(method, path, json=body, params=query, headers=headers)
    parsed = _body(response)
    if response.status_code >= 400:
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(error, dict):
            error = {"code": "http_error", "message": f"the API answered {response.status_code}: "
                     f"{response.text[:200]}", "details": {}, "request_id": None}
        raise ApiError(response.status_code, error)
    return parsed


def ok(value: Any) -> CallToolResult:
    """A tool's answer: the JSON as text for the model, and as structured content (lists as `items`)."""
    structured = value if isinstance(value, dict) else {"items": value}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(value, default=str))],
                          structured_content=structured)


def failed(status: int, error: dict[str, Any], **more: Any) -> CallToolResult:
    """A tool error: `isError` with the API's error object and its HTTP status."""
    payload = {"error": error, "status": status, **more}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload, default=str))],
                          structured_content=payload, is_error=True)


async def wait_for_job(client: httpx.AsyncClient, job: dict[str, Any], wait_seconds: float) -> dict[str, Any]:
    """The job once it has finished, or as it stands after `wait_seconds` (capped by the setting)."""
    limit = min(wait_seconds, get_settings().mcp_max_wait_seconds)
    if limit <= 0 or job.get("status") in TERMINAL:
        return job
    path = f"/api/v1/jobs/{job['id']}"
    # The event stream ends with the job's terminal event: no polling. Whatever it says, the row is the truth.
    with anyio.move_on_after(limit):
        async with client.stream("GET", path + "/events", headers={"Accept": "text/event-stream"}) as response:
            if response.status_code == 200:
                async for _ in response.aiter_bytes():
                    pass
    return await rest(client, "GET", path)


def job_result(job: dict[str, Any], **more: Any) -> CallToolResult:
    """A job's answer: a tool error when it failed or was cancelled, carrying the job's error code."""
    if job.get("status") in ("failed", "cancelled"):
        error = job.get("error") or {"code": job["status"], "message": f"the job was {job['status']}"}
        return failed(200, {"code": error.get("code"), "message": error.get("message"), "details": {},
                            "request_id": job.get("request_id")}, job=job, **more)
    return ok({"job": job, **more} if more else job)


async def resource_text(client: httpx.AsyncClient, path: str, field: str) -> str:
    """One field of a REST answer as a resource's text; REST errors become MCP errors with the API's error."""
    try:
        return (await rest(client, "GET", path))[field]
    except ApiError as exc:
        code = INVALID_PARAMS if exc.status in (404, 422) else INVALID_REQUEST if exc.status < 500 else INTERNAL_ERROR
        raise MCPError(code=code, message=str(exc), data={"error": exc.error, "status": exc.status}) from None


def build_server(client_for: ClientFor) -> MCPServer:
    """The MCP server: AgentMem's tools and resources over the REST client `client_for` gives each call."""
    server = MCPServer("agentmem", title="AgentMem", version="0.1.0", instructions=INSTRUCTIONS)

    def tool(annotations: ToolAnnotations):
        def register(fn):
            # The docstring is what the caller's model reads: without the source's indentation.
            server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations)
            return fn

        return register

    async def call(ctx: Context, method: str, path: str, **kwargs: Any) -> CallToolResult:
        async with client_for(ctx) as client:
            try:
                return ok(await rest(client, method, path, **kwargs))
            except ApiError as exc:
                return failed(exc.status, exc.error)

    @tool(WRITE)
    async def add_memories(
        items: Annotated[list[MemoryInput], Field(min_length=1, description="The memories, 1 to 10,000.")],
        ctx: Context,
        user_id: Annotated[ScopeId, Field(description="The end user they are about.")] = None,
        agent_id: Annotated[ScopeId, Field(description="The agent they belong to.")] = None,
        run_id: Annotated[ScopeId, Field(description="The session or run they came from.")] = None,
        infer: Annotated[bool, Field(description="The items are a conversation: an LLM extracts the facts in it "
                                     "and merges them with what is stored (needs an LLM provider).")] = False,
        deduplicate: Annotated[bool, Field(description="Skip items already stored (exact or near "
                                           "duplicates).")] = False,
        idempotency_key: Annotated[str | None, Field(min_length=1, max_length=255, description="Repeat the call "
                                   "safely: the same key and items return the same job.")] = None,
        wait_seconds: WaitSeconds = 0,
    ) -> CallToolResult:
        """Store memories. They are embedded by a background job and become searchable when it succeeds.

        Answers with the job (`status` queued, running, succeeded, failed or cancelled); with
        `wait_seconds`, once it has finished or that time has passed. A failed job is a tool error
        with the job's error code."""
        body = {"items": [item.model_dump(exclude_none=True) for item in items], "user_id": user_id,
                "agent_id": agent_id, "run_id": run_id, "infer": infer, "deduplicate": deduplicate}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        async with client_for(ctx) as client:
            try:
                job = await rest(client, "POST", "/api/v1/memories", body={k: v for k, v in body.items()
                                                                           if v is not None}, headers=headers)
                return job_result(await wait_for_job(client, job, wait_seconds))
            except ApiError as exc:
                return failed(exc.status, exc.error)

    @tool(READ)
    async def search_memories(
        query: Annotated[str, Field(min_length=1, description="What to look for, in words: matched by meaning "
                                    "and by words.")],
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
        top_k: Annotated[int, Field(ge=1, le=100, description="Most hits to return.")] = 10,
        metadata: Annotated[dict[str, Any] | None, Field(description="Only memories whose metadata has each of "
                                                         "these keys with exactly this value.")] = None,
        mode: Annotated[Literal["hybrid", "vector", "text"], Field(description="`hybrid` (default): by meaning "
                        "and by words; `vector`: meaning only; `text`: words only.")] = "hybrid",
    ) -> CallToolResult:
        """Find stored memories relevant to a query, best first, each with its score."""
        body = {"query": query, "user_id": user_id, "agent_id": agent_id, "run_id": run_id, "top_k": top_k,
                "metadata": metadata, "mode": mode}
        return await call(ctx, "POST", "/api/v1/memories/search", body={k: v for k, v in body.items()
                                                                        if v is not None})

    @tool(READ)
    async def get_memory(memory_id: Annotated[uuid.UUID, Field(description="The memory's id.")],
                         ctx: Context) -> CallToolResult:
        """Read one memory: its content, metadata, scope and whether its embedding is ready."""
        return await call(ctx, "GET", f"/api/v1/memories/{memory_id}")

    @tool(READ)
    async def list_memories(
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Memories per page.")] = 50,
        cursor: Annotated[str | None, Field(max_length=500, description="`next_cursor` of the previous page.")]
        = None,
    ) -> CallToolResult:
        """List stored memories newest first, optionally within a user, agent or run. Pages: pass
        `next_cursor` back as `cursor`."""
        return await call(ctx, "GET", "/api/v1/memories", params={"user_id": user_id, "agent_id": agent_id,
                                                                 "run_id": run_id, "limit": limit, "cursor": cursor})

    @tool(ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                             open_world_hint=False))
    async def delete_memory(memory_id: Annotated[uuid.UUID, Field(description="The memory's id.")],
                            ctx: Context) -> CallToolResult:
        """Delete a memory: it leaves reads and search at once (its history stays readable)."""
        async with client_for(ctx) as client:
            try:
                await rest(client, "DELETE", f"/api/v1/memories/{memory_id}")
            except ApiError as exc:
                return failed(exc.status, exc.error)
        return ok({"deleted": True, "memory_id": str(memory_id)})

    @tool(READ)
    async def get_job(job_id: Annotated[uuid.UUID, Field(description="The job's id.")], ctx: Context,
                      wait_seconds: WaitSeconds = 0) -> CallToolResult:
        """A background job: status, progress, result or error. With `wait_seconds`, once it has finished
        or that time has passed."""
        async with client_for(ctx) as client:
            try:
                job = await rest(client, "GET", f"/api/v1/jobs/{job_id}")
                return ok(await wait_for_job(client, job, wait_seconds))
            except ApiError as exc:
                return failed(exc.status, exc.error)

    @tool(READ)
    async def list_blocks(
        ctx: Context,
        agent_id: Annotated[uuid.UUID | None, Field(description="Only the blocks attached to this agent.")] = None,
        label: Annotated[str | None, Field(min_length=1, max_length=100, description="Only blocks with this "
                                           "label (e.g. `persona`, `human`).")] = None,
        user_id: ScopeId = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Field(max_length=500)] = None,
    ) -> CallToolResult:
        """List core-memory blocks (labelled texts compiled into agents' prompts), newest first, with each
        block's `version` for update_block."""
        return await call(ctx, "GET", "/api/v1/blocks", params={
            "agent_id": str(agent_id) if agent_id else None, "label": label, "user_id": user_id, "limit": limit,
            "cursor": cursor})

    @tool(WRITE)
    async def update_block(
        block_id: Annotated[uuid.UUID, Field(description="The block's id.")],
        ctx: Context,
        value: Annotated[str | None, Field(description="The block's new text (replaces it whole).")] = None,
        label: Annotated[str | None, Field(min_length=1, max_length=100)] = None,
        description: Annotated[str | None, Field(max_length=10_000, description="What the block is for.")] = None,
        limit: Annotated[int | None, Field(ge=1, description="Most characters the value may hold.")] = None,
        expected_version: Annotated[int | None, Field(ge=1, description="The version you read: the change "
                                    "applies only to it, else a `version_conflict` error.")] = None,
    ) -> CallToolResult:
        """Change a core-memory block; every change is a new version. Send at least one field."""
        body = {k: v for k, v in {"value": value, "label": label, "description": description,
                                  "limit": limit}.items() if v is not None}
        headers = {"If-Match": f'"{expected_version}"'} if expected_version is not None else None
        return await call(ctx, "PATCH", f"/api/v1/blocks/{block_id}", body=body, headers=headers)

    @tool(WRITE)
    async def send_message(
        content: Annotated[str, Field(min_length=1, description="The user's message to the agent.")],
        ctx: Context,
        conversation_id: Annotated[uuid.UUID | None, Field(description="Continue this conversation.")] = None,
        agent_id: Annotated[uuid.UUID | None, Field(description="Or start a new conversation with this "
                                                    "agent.")] = None,
        user_id: Annotated[ScopeId, Field(description="With agent_id: the end user of the new conversation "
                                          "(the agent recalls and stores that user's memories).")] = None,
        idempotency_key: Annotated[str | None, Field(min_length=1, max_length=255)] = None,
        wait_seconds: Annotated[float, Field(ge=0, description="Seconds to wait for the answer (capped by the "
                                             "server); 0: answer at once with the turn's job.")] = 30,
    ) -> CallToolResult:
        """Send a message to an agent and get its answer: one agent turn, run as a job (it recalls memories,
        may call tools, and stores what it learns). Give `conversation_id`, or `agent_id` to start one.

        Answers with `conversation_id`, the stored `message`, the `job` and, once the turn has finished,
        `answer` (the agent's reply)."""
        if (conversation_id is None) == (agent_id is None):
            return failed(422, {"code": "invalid_input", "message": "give conversation_id, or agent_id to start "
                                "a conversation (not both)", "details": {}, "request_id": None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        async with client_for(ctx) as client:
            try:
                if conversation_id is None:
                    started = await rest(client, "POST", f"/api/v1/agents/{agent_id}/conversations",
                                         body={"user_id": user_id} if user_id else {})
                    conversation_id = started["id"]
                posted = await rest(client, "POST", f"/api/v1/conversations/{conversation_id}/messages",
                                    body={"content": content}, headers=headers)
                job = await wait_for_job(client, posted["job"], wait_seconds)
            except ApiError as exc:
                return failed(exc.status, exc.error)
        answer = (job.get("result") or {}).get("content") if job.get("status") == "succeeded" else None
        return job_result(job, conversation_id=str(conversation_id), message=posted["message"], answer=answer)

    @server.resource("agentmem://agents/{agent_id}/prompt", name="agent_prompt", title="An agent's system prompt",
                     mime_type="text/plain", description="The agent's compiled system prompt: its instructions "
                     "and core-memory blocks, as its next turn sends them.")
    async def agent_prompt(agent_id: str, ctx: Context) -> str:
        """The compiled prompt of an agent of the caller's organization."""
        try:
            uuid.UUID(agent_id)
        except ValueError:
            raise MCPError(code=INVALID_PARAMS, message=f"not_found: agent {agent_id[:64]!r} not found (ids are "
                           "UUIDs)", data={"status": 404}) from None
        async with client_for(ctx) as client:
            return await resource_text(client, f"/api/v1/agents/{agent_id}/prompt", "prompt")

    return server

