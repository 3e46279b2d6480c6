"""The `agent_turn` job: answer a user message, calling the model and tools until a final answer.

Each step is durable before the next begins: the model's answer is stored as an assistant message,
each tool's result as a tool message, keyed by (job, step) so a step is written once. A turn is a
loop over what those rows say comes next, so a turn redelivered after its worker died resumes where
the rows end: a model call that was under way is made again (at most once per crash), a tool whose
result is stored is never run again, and no message is written twice.

Events on the job's stream: `token` (text deltas, coalesced over a few milliseconds), `tool_call`,
`tool_result`, `message` (every stored message), `usage` (per model call, with `timings`: milliseconds
per stage since the previous `usage` event or the turn's start), then the terminal event, whose result
holds the final message. Cancellation is checked between steps and while the model
streams (a partial answer is kept), and kills a running tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from core import timing
from core.db import session_scope
from core.errors import JobCancelled, PermanentJobError
from core.llm import LLMClient, Usage
from core.settings import get_settings
from pipelines.agents.store import get_agent
from pipelines.conversations import after_turn, agent_tools, store
from pipelines.conversations.context import ChatParams, build_context, chat_params, recall
from pipelines.jobs import rows as job_rows
from pipelines.jobs.events import publish_event
from pipelines.jobs.runner import JobContext
from pipelines.llm.configs import require_provider
from schemas.conversations import MessageOut
from schemas.enums import EventType
from schemas.tables import Agent, Conversation, Message

log = logging.getLogger(__name__)
CANCEL_CHECK_SECONDS = 0.25


class TokenStream:
    """Text deltas published as `token` events, those within `flush_ms` of each other as one."""

    def __init__(self, job: Any, step: int, flush_ms: float) -> None:
        self.job, self.step, self.flush_s = job, step, flush_ms / 1000
        self.parts: list[str] = []
        self.timer: asyncio.Task | None = None
        self.last = 0.0

    async def add(self, text: str) -> None:
        self.parts.append(text)
        if time.monotonic() - self.last >= self.flush_s:
            await self.flush()  # the first delta (and any after a pause) goes at once
        elif self.timer is None:
            self.timer = asyncio.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.flush_s)
        self.timer = None
        await self.flush()

    async def flush(self) -> None:
        if self.timer is not None and self.timer is not asyncio.current_task():
            self.timer.cancel()
            self.timer = None
        if self.parts:
            text, self.parts = "".join(self.parts), []
            self.last = time.monotonic()
            await publish_event(EventType.TOKEN, self.job, {"step": self.step, "text": text}, to_org=False)


@dataclass
class Turn:
    """A turn in progress: its job, rows, model and tools."""

    ctx: JobContext
    agent: Agent
    conversation: Conversation
    steps: list[Message]
    params: ChatParams
    client: LLMClient
    tools: agent_tools.TurnTools
    max_steps: int
    memories: list

    @property
    def job(self) -> Any:
        return self.ctx.job

    def scope(self) -> agent_tools.TurnScope:
        return agent_tools.TurnScope(self.job.id, self.job.org_id, self.agent, self.conversation,
                                     job_rows.job_principal(self.job))

    def llm_calls(self) -> int:
        return sum(1 for m in self.steps if m.role == "assistant")

    def pending_calls(self) -> list[dict[str, Any]]:
        """Tool calls of the last assistant message that have no stored result yet."""
        last_call = next((m for m in reversed(self.steps) if m.role == "assistant"), None)
        if last_call is None or not last_call.tool_calls:
            return []
        answered = {m.tool_call_id for m in self.steps if m.role == "tool" and m.seq > last_call.seq}
        return [c for c in last_call.tool_calls if c["id"] not in answered]

    def finished(self) -> bool:
        last = self.steps[-1]
        return last.role == "assistant" and not last.tool_calls


async def _publish_message(job: Any, message: Message) -> None:
    await publish_event(EventType.MESSAGE, job, {"message": MessageOut.from_row(message).model_dump(mode="json")})


async def _load(ctx: JobContext) -> Turn:
    job, payload = ctx.job, ctx.job.payload
    async with session_scope() as session:
        try:
            conversation = await store.get_conversation(session, job.org_id, uuid.UUID(payload["conversation_id"]))
            agent = await get_agent(session, job.org_id, conversation.agent_id)
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                raise PermanentJobError(f"{exc} (deleted before the turn ran)", code="conversation_gone") from exc
            raise
        config_id = (agent.llm or {}).get("config_id")
        provider = await require_provider(session, job.org_id, uuid.UUID(config_id) if config_id else None)
        steps = await store.turn_messages(session, job.id)
        tools = await agent_tools.turn_tools(session, agent)
        if not steps:
            raise PermanentJobError("the turn's user message is gone", code="message_gone")
        with timing.stage("recall"):
            vector = await store.message_embedding(session, steps[0].id)
            memories = await recall(session, job.org_id, agent, conversation.user_id, steps[0].content,
                                    agent.memory_top_k, query_vector=vector)
    params = chat_params(agent, provider)
    client = LLMClient(replace(provider, model=params.model or provider.model), on_usage=ctx.record_usage)
    return Turn(ctx, agent, conversation, steps, params, client, tools,
                payload.get("max_steps") or agent.max_steps, memories)


async def agent_turn(ctx: JobContext) -> dict[str, Any]:
    """Run (or resume) a turn to its final answer or its step limit."""
    # Stages of this turn and of the searches it runs, for its `usage` events. The job runs in a task of
    # its own, so nothing else records into them.
    timing.timings_var.set(timing.Timings())
    with timing.stage("setup"):
        turn = await _load(ctx)
    stop_reason = "final"
    while not turn.finished():
        await _checkpoint(turn)
        if turn.pending_calls():
            if turn.llm_calls() >= turn.max_steps:
                await _refuse_calls(turn)
                stop_reason = "max_steps"
                break
            await _run_tools(turn)
            continue
        if turn.llm_calls() >= turn.max_steps:
            stop_reason = "max_steps"
            break
        await _call_model(turn)
    final = next((m for m in reversed(turn.steps) if m.role == "assistant" and not m.tool_calls), None)
    await after_turn.follow_up(turn.job, turn.agent, turn.conversation, turn.steps)
    usage = Usage.from_dict(ctx.usage_total())
    return {"conversation_id": str(turn.conversation.id), "message_id": str(final.id) if final else None,
            "content": final.content if final else None, "stop_reason": stop_reason, "steps": turn.llm_calls(),
            "tool_calls": sum(1 for m in turn.steps if m.role == "tool"),
            "message": MessageOut.from_row(final).model_dump(mode="json") if final else None,
            "usage": usage.as_dict()}


async def _checkpoint(turn: Turn) -> None:
    tools = bool(turn.pending_calls())
    with timing.stage("checkpoint_tools" if tools else "checkpoint"):
        await turn.ctx.progress(turn.llm_calls(), turn.max_steps, "tools" if tools else "thinking")


async def _call_model(turn: Turn) -> None:
    """One model call: its prompt built afresh (blocks may have changed), streamed, then stored."""
    step = turn.llm_calls() + 1
    with timing.stage("context"):
        async with session_scope() as session:
            agent = await get_agent(session, turn.job.org_id, turn.agent.id)
            conversation = await store.get_conversation(session, turn.job.org_id, turn.conversation.id)
            context = await build_context(session, agent, conversation, params=turn.params,
                                          memories=turn.memories, tools=turn.tools.definitions,
                                          keep_from_seq=turn.steps[0].seq)
    tokens = TokenStream(turn.job, step, get_settings().agent_token_flush_ms)
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    usage = Usage()
    finish_reason = None
    cancelled = False
    checked = time.monotonic()
    stream = turn.client.stream(context.chat_messages(), tools=turn.tools.definitions,
                                temperature=turn.params.temperature, max_tokens=turn.params.answer_tokens,
                                top_p=turn.params.top_p)
    asked = time.perf_counter()
    async with contextlib.aclosing(stream):
        async for event in stream:
            if event.type == "text":
                if not text:
                    timing.record("llm_first_token", (time.perf_counter() - asked) * 1000)
                text.append(event.text or "")
                await tokens.add(event.text or "")
            elif event.type == "tool_call":
                call = event.tool_call
                calls.append({"id": call.id or f"call_{step}_{len(calls) + 1}", "name": call.name,
                              "arguments": call.arguments})
            else:
                usage, finish_reason = event.usage or Usage(), event.finish_reason
            if time.monotonic() - checked >= CANCEL_CHECK_SECONDS:
                checked = time.monotonic()
                if await _cancel_requested(turn.job.id):
                    cancelled = True
                    break
    await tokens.flush()
    timing.record("llm", (time.perf_counter() - asked) * 1000)
    fields = dict(role="assistant", content="".join(text), tool_calls=(calls or None) if not cancelled else None,
                  prompt_tokens=usage.prompt_tokens or None, completion_tokens=usage.completion_tokens or None)
    if cancelled and not fields["content"]:
        raise JobCancelled()
    async with session_scope() as session:
        message, _ = await store.append_step(session, turn.conversation, turn.job.id, f"llm:{step}", **fields)
        await session.commit()
    turn.steps.append(message)
    await publish_event(EventType.USAGE, turn.job, {"step": step, **usage.as_dict(), "finish_reason": finish_reason,
                                                    "context_tokens": context.tokens["total"],
                                                    "timings": _stage_times()})
    for call in message.tool_calls or []:
        await publish_event(EventType.TOOL_CALL, turn.job, {"step": step, **call})
    await _publish_message(turn.job, message)
    if cancelled:
        raise JobCancelled()


def _stage_times() -> dict[str, float]:
    stages = timing.timings_var.get()
    return stages.take() if stages is not None else {}


async def _cancel_requested(job_id: uuid.UUID) -> bool:
    async with session_scope() as session:
        return await job_rows.cancel_requested(session, job_id)


async def _run_tools(turn: Turn) -> None:
    """Run the pending calls of the last model answer, at once; each result is stored as it comes."""
    pending = turn.pending_calls()
    results = await asyncio.gather(*[_run_call(turn, call) for call in pending], return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    turn.steps.sort(key=lambda m: m.seq)


async def _refuse_calls(turn: Turn) -> None:
    """The step limit came with calls still asked for: answer each with why it did not run (the
    history stays one a model accepts)."""
    for call in turn.pending_calls():
        await _store_result(turn, call, {"error": f"not run: the turn reached its step limit of {turn.max_steps}"},
                            ok=False)


def _result_text(result: dict[str, Any]) -> str:
    text = json.dumps(result, ensure_ascii=False, default=str)
    limit = get_settings().agent_tool_result_chars
    return text if len(text) <= limit else text[:limit] + f"… [cut: {len(text)} characters in all]"


async def _run_call(turn: Turn, call: dict[str, Any]) -> None:
    name = call["name"]
    try:
        arguments = agent_tools.parse_arguments(call["arguments"])
        if agent_tools.is_memory_tool(name):
            await _run_memory_call(turn, call, arguments)
            return
        if name in agent_tools.workspace.BUILTINS:
            result = await agent_tools.run_builtin_tool(turn.job.org_id, name, arguments)
        elif name in turn.tools.registered:
            result = await agent_tools.run_registered(turn.tools.registered[name], arguments,
                                                      lambda: _tool_checkpoint(turn))
        elif name in turn.tools.mcp:
            result = await agent_tools.run_mcp(turn.job.org_id, turn.tools.mcp[name], arguments,
                                               lambda: _tool_checkpoint(turn))
        else:
            raise agent_tools.ToolCallError(f"there is no tool called {name!r}")
    except agent_tools.ToolCallError as exc:
        await _store_result(turn, call, {"error": str(exc)}, ok=False)
        return
    await _store_result(turn, call, result, ok=result.get("reason", "exited") in ("exited", "returned")
                        and not result.get("exit_code"))


async def _tool_checkpoint(turn: Turn) -> None:
    if await _cancel_requested(turn.job.id):
        raise JobCancelled()


async def _run_memory_call(turn: Turn, call: dict[str, Any], arguments: dict[str, Any]) -> None:
    """A memory tool and its tool message in one transaction: both happen, or neither."""
    from pipelines.jobs import lifecycle

    async with session_scope() as session:
        await store.lock(session, turn.conversation.id)
        existing = await store.step_message(session, turn.job.id, f"tool:{call['id']}")
        if existing is None:
            try:
                async with session.begin_nested():
                    result, ok = await agent_tools.run_memory_tool(session, turn.scope(), call["name"], arguments,
                                                                   call["id"]), True
            except agent_tools.ToolCallError as exc:
                result, ok = {"error": str(exc)}, False
            message, _ = await store.append_step(session, turn.conversation, turn.job.id, f"tool:{call['id']}",
                                                 role="tool", content=_result_text(result), tool_call_id=call["id"],
                                                 name=call["name"])
            await lifecycle.commit(session)  # sends a block rewrite the write queued, after the commit
        else:
            message, result, ok = existing, None, not existing.content.startswith('{"error"')
    await _announce(turn, call, message, ok)


async def _store_result(turn: Turn, call: dict[str, Any], result: dict[str, Any], *, ok: bool) -> None:
    async with session_scope() as session:
        message, _ = await store.append_step(session, turn.conversation, turn.job.id, f"tool:{call['id']}",
                                             role="tool", content=_result_text(result), tool_call_id=call["id"],
                                             name=call["name"])
        await session.commit()
    await _announce(turn, call, message, ok)


async def _announce(turn: Turn, call: dict[str, Any], message: Message, ok: bool) -> None:
    turn.steps.append(message)
    await publish_event(EventType.TOOL_RESULT, turn.job, {"tool_call_id": call["id"], "name": call["name"],
                                                          "ok": ok, "content": message.content})
    await _publish_message(turn.job, message)
