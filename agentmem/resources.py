"""The API's resources, written once for both clients: each method describes its request (`Call`) and the
transport runs it (`AgentMem`: the value; `AsyncAgentMem`: a coroutine, or an async iterator for lists).

Answers are the API's own pydantic models (schemas/); a call that queues work answers a `Job` (`AsyncJob`).
Lists are iterators that fetch the next page when the iteration reaches it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from agentmem.jobs import AsyncTurnStream, Follow, TurnStream, afollow_job, follow_job, wrap_job
from agentmem.transport import AsyncTransport, Call, SyncTransport
from schemas.agents import AgentOut, PromptOut
from schemas.blocks import BlockOut, BlockVersionOut
from schemas.conversations import ContextOut, ConversationOut, MessageOut, MessagePosted
from schemas.jobs import JobOut
from schemas.memories import MemoryHistoryOut, MemoryOut, MemoryUpdateOut
from schemas.schedules import ScheduleOut
from schemas.search import SearchOut
from schemas.tools import ToolOut
from schemas.webhooks import WebhookDeliveryOut, WebhookEventTypeOut, WebhookOut, WebhookSecretOut

Id = str | uuid.UUID


def _json(value: Any) -> Any:
    """A request body part as JSON: models as the fields they were given, containers walked."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _fields(**fields: Any) -> dict[str, Any]:
    """Keyword arguments as a body, those left at None out (the API's defaults apply)."""
    return {k: _json(v) for k, v in fields.items() if v is not None}


def _job(t: Any, data: JobOut) -> Any:
    return wrap_job(t, data)


class Resource:
    def __init__(self, transport: SyncTransport | AsyncTransport) -> None:
        self._t = transport

    def _chain(self, first: Call, then: Callable[[Any], Call]) -> Any:
        """Two requests, the second made from the first's answer (a coroutine for the async client)."""
        if self._t.is_async:
            async def run() -> Any:
                return await self._t(then(await self._t(first)))
            return run()
        return self._t(then(self._t(first)))


class Memories(Resource):
    """Memories: ingest as jobs, search, read, change, delete, history."""

    def add(self, items: Iterable[str | dict[str, Any] | BaseModel], *, user_id: str | None = None,
            agent_id: str | None = None, run_id: str | None = None, infer: bool | None = None,
            deduplicate: bool | None = None, idempotency_key: str | None = None) -> Any:
        """Queue memories (strings, or `{"content", "metadata", "user_id", …}` objects) for embedding: a `Job`.
        `infer=True` reads the items as a conversation and stores the facts an LLM finds in it."""
        body = _fields(items=[{"content": i} if isinstance(i, str) else i for i in items], user_id=user_id,
                       agent_id=agent_id, run_id=run_id, infer=infer, deduplicate=deduplicate)
        return self._t(Call("POST", "/memories", json=body, out=JobOut, then=_job, idempotency_key=idempotency_key,
                            replay_safe=True))

    def search(self, query: str, *, top_k: int | None = None, user_id: str | None = None,
               agent_id: str | None = None, run_id: str | None = None, cursor: str | None = None,
               **options: Any) -> Any:
        """Search by meaning and words: `SearchOut` (`hits`, each with `memory`, `score`, `explanation`).
        `options` are the other fields of the search body (`mode`, `filters`, `metadata`, `fusion`, …)."""
        body = _fields(query=query, top_k=top_k, user_id=user_id, agent_id=agent_id, run_id=run_id, cursor=cursor,
                       **options)
        return self._t(Call("POST", "/memories/search", json=body, out=SearchOut))

    def list(self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
             source_job_id: Id | None = None, page_size: int = 100) -> Any:
        """Every memory (of a scope, or stored by one ingest job), newest first, as an iterator of `MemoryOut`."""
        return self._t.pages(Call("GET", "/memories", out=MemoryOut, params={
            "user_id": user_id, "agent_id": agent_id, "run_id": run_id, "limit": page_size,
            "source_job_id": str(source_job_id) if source_job_id is not None else None}))

    def get(self, memory_id: Id) -> Any:
        """One memory (`MemoryOut`)."""
        return self._t(Call("GET", f"/memories/{memory_id}", out=MemoryOut))

    def update(self, memory_id: Id, **fields: Any) -> Any:
        """Change `content`, `metadata` or `expires_at`: `(MemoryOut, Job | None)`, the job re-embedding new
        content. Pass `expires_at=None` explicitly to remove an expiry."""
        return self._t(Call("PATCH", f"/memories/{memory_id}", json=_json(fields), out=MemoryUpdateOut,
                            then=lambda t, out: (out.memory, _job(t, out.job) if out.job else None)))

    def delete(self, memory_id: Id) -> Any:
        """Delete one memory (soft; its history stays)."""
        return self._t(Call("DELETE", f"/memories/{memory_id}"))

    def delete_scope(self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None,
                     idempotency_key: str | None = None) -> Any:
        """Delete every memory of a scope (at least one of the ids): a `Job`."""
        return self._t(Call("DELETE", "/memories", params={"user_id": user_id, "agent_id": agent_id,
                                                           "run_id": run_id},
                            out=JobOut, then=_job, idempotency_key=idempotency_key, replay_safe=True))

    def history(self, memory_id: Id, *, page_size: int = 100) -> Any:
        """A memory's versions, oldest first (`MemoryHistoryOut`)."""
        return self._t.pages(Call("GET", f"/memories/{memory_id}/history", out=MemoryHistoryOut,
                                  params={"limit": page_size}))


class Jobs(Resource):
    """Jobs: read, list, cancel, follow."""

    def get(self, job_id: Id) -> Any:
        """A `Job` by id."""
        return self._t(Call("GET", f"/jobs/{job_id}", out=JobOut, then=_job))

    def list(self, *, status: str | None = None, kind: str | None = None, page_size: int = 100) -> Any:
        """Your organization's jobs, newest first, as `Job`s."""
        return self._t.pages(Call("GET", "/jobs", out=JobOut, then=_job,
                                  params={"status": status, "kind": kind, "limit": page_size}))

    def cancel(self, job_id: Id) -> Any:
        """Cancel a job: the `Job` as it is now (`cancel_requested` while a running one reaches a checkpoint)."""
        return self._t(Call("POST", f"/jobs/{job_id}/cancel", out=JobOut, then=_job))

    def events(self, job_id: Id, *, last_event_id: str | None = None, timeout: float | None = None) -> Any:
        """A job's events until its terminal one, resuming after dropped connections (see `Job.events`)."""
        follow = Follow(last_event_id, max_failures=self._t.max_retries,
                        deadline=None if timeout is None else time.monotonic() + timeout)
        return (afollow_job if self._t.is_async else follow_job)(self._t, job_id, follow)  # type: ignore[arg-type]

    def organization_events(self, *, last_event_id: str | None = None) -> Any:
        """Every job event of your organization, live, forever (for dashboards): an iterator that reconnects
        after `Last-Event-ID` when the connection drops. Break out of it to stop."""
        follow = Follow(last_event_id, max_failures=self._t.max_retries, deadline=None, endless=True)
        follower = afollow_job if self._t.is_async else follow_job
        return follower(self._t, None, follow, "/events")  # type: ignore[arg-type]


class Blocks(Resource):
    """Core-memory blocks: versioned labelled texts; `if_match` is the version you read (409 when stale)."""

    @staticmethod
    def _if_match(version: int | None) -> dict[str, str]:
        return {"If-Match": f'"{version}"'} if version is not None else {}

    def create(self, label: str, value: str = "", **fields: Any) -> Any:
        """Create a block (`limit`, `description`, `read_only`, `user_id`, `rewrite_strategy`, `metadata`)."""
        return self._t(Call("POST", "/blocks", json=_fields(label=label, value=value, **fields), out=BlockOut))

    def list(self, *, label: str | None = None, user_id: str | None = None, agent_id: Id | None = None,
             page_size: int = 100) -> Any:
        return self._t.pages(Call("GET", "/blocks", out=BlockOut, params={
            "label": label, "user_id": user_id, "agent_id": agent_id, "limit": page_size}))

    def get(self, block_id: Id) -> Any:
        return self._t(Call("GET", f"/blocks/{block_id}", out=BlockOut))

    def update(self, block_id: Id, *, if_match: int | None = None, **fields: Any) -> Any:
        """A new version; `rewrite_job_id` names the rewrite job when the value passed the threshold."""
        return self._t(Call("PATCH", f"/blocks/{block_id}", json=_json(fields), out=BlockOut,
                            headers=self._if_match(if_match)))

    def delete(self, block_id: Id, *, if_match: int | None = None) -> Any:
        return self._t(Call("DELETE", f"/blocks/{block_id}", headers=self._if_match(if_match)))

    def versions(self, block_id: Id, *, page_size: int = 100) -> Any:
        return self._t.pages(Call("GET", f"/blocks/{block_id}/versions", out=BlockVersionOut,
                                  params={"limit": page_size}))

    def revert(self, block_id: Id, version: int, *, if_match: int | None = None) -> Any:
        return self._t(Call("POST", f"/blocks/{block_id}/revert", json={"version": version}, out=BlockOut,
                            headers=self._if_match(if_match)))

    def rewrite(self, block_id: Id, *, strategy: str | None = None, target_chars: int | None = None,
                idempotency_key: str | None = None) -> Any:
        """Queue a rewrite of the block, shorter: a `Job`."""
        return self._t(Call("POST", f"/blocks/{block_id}/rewrite", json=_fields(strategy=strategy,
                                                                                 target_chars=target_chars),
                            out=JobOut, then=_job, idempotency_key=idempotency_key, replay_safe=True))


class Conversations(Resource):
    """Conversations with agents and their messages; a `user` message starts an agent turn (a job)."""

    def create(self, agent_id: Id, *, user_id: str | None = None, title: str | None = None,
               metadata: dict[str, Any] | None = None) -> Any:
        return self._t(Call("POST", f"/agents/{agent_id}/conversations",
                            json=_fields(user_id=user_id, title=title, metadata=metadata), out=ConversationOut))

    def list(self, agent_id: Id, *, user_id: str | None = None, page_size: int = 100) -> Any:
        return self._t.pages(Call("GET", f"/agents/{agent_id}/conversations", out=ConversationOut,
                                  params={"user_id": user_id, "limit": page_size}))

    def get(self, conversation_id: Id) -> Any:
        return self._t(Call("GET", f"/conversations/{conversation_id}", out=ConversationOut))

    def update(self, conversation_id: Id, **fields: Any) -> Any:
        return self._t(Call("PATCH", f"/conversations/{conversation_id}", json=_json(fields), out=ConversationOut))

    def delete(self, conversation_id: Id) -> Any:
        return self._t(Call("DELETE", f"/conversations/{conversation_id}"))

    def messages(self, conversation_id: Id, *, order: str = "asc", page_size: int = 100) -> Any:
        """The conversation's messages in order (`MessageOut`), with their tool calls."""
        return self._t.pages(Call("GET", f"/conversations/{conversation_id}/messages", out=MessageOut,
                                  params={"order": order, "limit": page_size}))

    def send(self, conversation_id: Id, content: str, *, role: str = "user", stream: bool = False,
             respond: bool | None = None, max_steps: int | None = None, name: str | None = None,
             tool_call_id: str | None = None, idempotency_key: str | None = None) -> Any:
        """Post a message. A `user` message is answered by an agent turn: its `Job` (with `.message`, the stored
        message), or with `stream=True` a `TurnStream` of its events. Other roles are stored: `MessageOut`."""
        body = _fields(role=role, content=content, respond=respond, max_steps=max_steps, name=name,
                       tool_call_id=tool_call_id)
        if stream:
            return (AsyncTurnStream if self._t.is_async else TurnStream)(self._t, str(conversation_id), body,
                                                                         idempotency_key)
        return self._t(Call("POST", f"/conversations/{conversation_id}/messages", json=body, out=MessagePosted,
                            then=_posted, idempotency_key=idempotency_key, replay_safe=True))


def _posted(t: Any, posted: MessagePosted) -> Any:
    if posted.job is None:
        return posted.message
    job = _job(t, posted.job)
    job.message, job.conversation_id = posted.message, posted.message.conversation_id
    return job


class Agents(Resource):
    """Agents, their blocks, their prompt, and `chat`."""

    def create(self, name: str, **fields: Any) -> Any:
        """Create an agent (`system`, `block_ids`, `tool_ids`, `llm`, `memory_top_k`, … as in `AgentCreate`)."""
        return self._t(Call("POST", "/agents", json=_fields(name=name, **fields), out=AgentOut))

    def list(self, *, name: str | None = None, page_size: int = 100) -> Any:
        return self._t.pages(Call("GET", "/agents", out=AgentOut, params={"name": name, "limit": page_size}))

    def get(self, agent_id: Id) -> Any:
        return self._t(Call("GET", f"/agents/{agent_id}", out=AgentOut))

    def update(self, agent_id: Id, **fields: Any) -> Any:
        return self._t(Call("PATCH", f"/agents/{agent_id}", json=_json(fields), out=AgentOut))

    def delete(self, agent_id: Id) -> Any:
        return self._t(Call("DELETE", f"/agents/{agent_id}"))

    def blocks(self, agent_id: Id) -> Any:
        """The agent's blocks in prompt order (a list)."""
        return self._t(Call("GET", f"/agents/{agent_id}/blocks", out=list[BlockOut]))

    def attach_block(self, agent_id: Id, block_id: Id) -> Any:
        return self._t(Call("POST", f"/agents/{agent_id}/blocks/{block_id}", out=AgentOut))

    def detach_block(self, agent_id: Id, block_id: Id) -> Any:
        return self._t(Call("DELETE", f"/agents/{agent_id}/blocks/{block_id}", out=AgentOut))

    def prompt(self, agent_id: Id) -> Any:
        """The agent's compiled system prompt (`PromptOut`)."""
        return self._t(Call("GET", f"/agents/{agent_id}/prompt", out=PromptOut))

    def context(self, agent_id: Id, *, conversation_id: Id | None = None, query: str | None = None) -> Any:
        """Exactly what the agent's next turn would send (`ContextOut`)."""
        return self._t(Call("GET", f"/agents/{agent_id}/context", out=ContextOut,
                            params={"conversation_id": conversation_id, "query": query}))

    def chat(self, agent_id: Id, message: str, *, conversation_id: Id | None = None, user_id: str | None = None,
             stream: bool = False, max_steps: int | None = None, idempotency_key: str | None = None) -> Any:
        """Say something to an agent, in `conversation_id` or a new conversation (with `user_id`).

        `stream=True`: a `TurnStream` to iterate (`token` events carry `data.text`, then `tool_call`,
        `tool_result`, `message`, `usage`, `succeeded`); its `conversation_id`, `job_id` and `text` fill in as it
        goes. Otherwise the turn's `Job`, with `.conversation_id` and `.message`; `job.wait()` and its
        `result["message"]` is the answer."""
        body = _fields(content=message, max_steps=max_steps)
        if stream:
            cls = AsyncTurnStream if self._t.is_async else TurnStream
            return cls(self._t, str(conversation_id) if conversation_id else None, body, idempotency_key,
                       agent_id=agent_id, conversation=_fields(user_id=user_id))
        def post(conversation: Id) -> Call:
            return Call("POST", f"/conversations/{conversation}/messages", json=body, out=MessagePosted,
                        then=_posted, idempotency_key=idempotency_key, replay_safe=True)

        if conversation_id is not None:
            return self._t(post(conversation_id))
        return self._chain(Call("POST", f"/agents/{agent_id}/conversations", json=_fields(user_id=user_id),
                                out=ConversationOut), lambda conversation: post(conversation.id))


class Tools(Resource):
    """Tools: code with a JSON Schema of its arguments, run in the sandbox as a job."""

    def create(self, name: str, language: str, source: str, **fields: Any) -> Any:
        """Register a tool (`description`, `json_schema`, `tags`, `timeout_seconds`, `limits`)."""
        return self._t(Call("POST", "/tools", json=_fields(name=name, language=language, source=source, **fields),
                            out=ToolOut))

    def list(self, *, tag: str | None = None) -> Any:
        """The built-in tools, then yours by name (a list)."""
        return self._t(Call("GET", "/tools", params={"tag": tag}, out=list[ToolOut]))

    def get(self, tool_id: Id) -> Any:
        return self._t(Call("GET", f"/tools/{tool_id}", out=ToolOut))

    def update(self, tool_id: Id, **fields: Any) -> Any:
        return self._t(Call("PATCH", f"/tools/{tool_id}", json=_json(fields), out=ToolOut))

    def delete(self, tool_id: Id) -> Any:
        return self._t(Call("DELETE", f"/tools/{tool_id}"))

    def execute(self, tool_id: Id, arguments: dict[str, Any] | None = None, *,
                idempotency_key: str | None = None) -> Any:
        """Run a tool: a `Job` (its `progress` events carry output; its `result` the exit and output)."""
        return self._t(Call("POST", f"/tools/{tool_id}/execute", json={"arguments": _json(arguments or {})},
                            out=JobOut, then=_job, idempotency_key=idempotency_key, replay_safe=True))


class Schedules(Resource):
    """Maintenance tasks run on a cron expression or an interval."""

    def create(self, name: str, task: str, **fields: Any) -> Any:
        """Schedule a task (`cron` with `timezone`, or `interval_seconds`; `params`, `enabled`, `catch_up`)."""
        return self._t(Call("POST", "/schedules", json=_fields(name=name, task=task, **fields), out=ScheduleOut))

    def list(self, *, platform: bool = False) -> Any:
        return self._t(Call("GET", "/schedules", params={"platform": platform or None}, out=list[ScheduleOut]))

    def get(self, schedule_id: Id) -> Any:
        return self._t(Call("GET", f"/schedules/{schedule_id}", out=ScheduleOut))

    def update(self, schedule_id: Id, **fields: Any) -> Any:
        return self._t(Call("PATCH", f"/schedules/{schedule_id}", json=_json(fields), out=ScheduleOut))

    def delete(self, schedule_id: Id) -> Any:
        return self._t(Call("DELETE", f"/schedules/{schedule_id}"))


class Webhooks(Resource):
    """Webhooks: endpoints receiving signed events, their delivery log, redelivery."""

    def create(self, url: str, event_types: list[str], **fields: Any) -> Any:
        """Register an endpoint: `WebhookSecretOut`, whose `secret` is shown this once."""
        return self._t(Call("POST", "/webhooks", json=_fields(url=url, event_types=event_types, **fields),
                            out=WebhookSecretOut))

    def list(self, *, page_size: int = 100) -> Any:
        return self._t.pages(Call("GET", "/webhooks", out=WebhookOut, params={"limit": page_size}))

    def get(self, webhook_id: Id) -> Any:
        return self._t(Call("GET", f"/webhooks/{webhook_id}", out=WebhookOut))

    def update(self, webhook_id: Id, **fields: Any) -> Any:
        return self._t(Call("PATCH", f"/webhooks/{webhook_id}", json=_json(fields), out=WebhookOut))

    def delete(self, webhook_id: Id) -> Any:
        return self._t(Call("DELETE", f"/webhooks/{webhook_id}"))

    def event_types(self) -> Any:
        return self._t(Call("GET", "/webhooks/event-types", out=list[WebhookEventTypeOut]))

    def rotate_secret(self, webhook_id: Id) -> Any:
        return self._t(Call("POST", f"/webhooks/{webhook_id}/rotate-secret", out=WebhookSecretOut))

    def test(self, webhook_id: Id, *, idempotency_key: str | None = None) -> Any:
        """Send a signed `webhook.test` event now: a `Job`."""
        return self._t(Call("POST", f"/webhooks/{webhook_id}/test", out=JobOut, then=_job,
                            idempotency_key=idempotency_key, replay_safe=True))

    def deliveries(self, webhook_id: Id, *, page_size: int = 100) -> Any:
        return self._t.pages(Call("GET", f"/webhooks/{webhook_id}/deliveries", out=WebhookDeliveryOut,
                                  params={"limit": page_size}))

    def redeliver(self, webhook_id: Id, delivery_id: Id, *, idempotency_key: str | None = None) -> Any:
        """Send a logged attempt's event again: a `Job`."""
        return self._t(Call("POST", f"/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", out=JobOut,
                            then=_job, idempotency_key=idempotency_key, replay_safe=True))
