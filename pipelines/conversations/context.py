"""What a turn sends the model: the agent's compiled prompt, memories recalled for the message, the
rolling summary of older messages, and the most recent messages that fit the model's context budget.

The budget is the context window less the tokens kept for the answer. The system prompt, recalled
memories, summary and tool definitions are counted first; then messages are taken newest first while
they fit, an assistant message that called tools together with the tool results answering it (a
model refuses one without the other). The current turn's messages are always sent. Older messages are
never dropped silently: those the rolling summary covers (`summary_upto`) are sent as the summary, and
any it does not cover yet are sent condensed beside it until the `summarize_conversation` job catches up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from core.llm import ProviderSettings
from core.settings import get_settings
from pipelines.agents import prompts
from pipelines.agents.store import blocks_of
from pipelines.conversations import store
from pipelines.conversations.tokens import message_tokens, text_tokens, tools_tokens
from pipelines.memories.search import search_memories
from schemas.search import MAX_QUERY_CHARS, MemorySearchIn
from schemas.tables import Agent, Conversation, Memory, Message

CONDENSED_CHARS = 300  # of each not-yet-summarized message sent beside the summary


@dataclass
class ChatParams:
    """The model and sampling a turn uses, and its token budget."""

    model: str | None
    temperature: float | None
    top_p: float | None
    answer_tokens: int
    context_window: int

    @property
    def budget(self) -> int:
        """Tokens the prompt may take."""
        return max(256, self.context_window - self.answer_tokens)


def chat_params(agent: Agent, provider: ProviderSettings | None) -> ChatParams:
    """The agent's settings over its provider's over the service's defaults."""
    settings, llm = get_settings(), agent.llm or {}
    window = llm.get("context_window") or getattr(provider, "context_window", None) or settings.agent_context_window
    answer = llm.get("max_tokens") or settings.agent_answer_tokens
    return ChatParams(model=llm.get("model") or (provider.model if provider else None),
                      temperature=llm.get("temperature"), top_p=llm.get("top_p"),
                      answer_tokens=min(answer, window // 2), context_window=window)


@dataclass
class Recalled:
    """A memory recalled into the prompt."""

    id: uuid.UUID
    content: str
    score: float
    created_at: Any = None

    @property
    def tokens(self) -> int:
        return text_tokens(self.content) + 2


@dataclass
class TurnContext:
    """The prompt of one LLM call of a turn, and how it was put together."""

    system: str
    memories: list[Recalled]
    summary: str | None
    messages: list[Message]
    omitted: int
    tokens: dict[str, int] = field(default_factory=dict)

    def chat_messages(self) -> list[dict[str, Any]]:
        """The request's `messages`, in the OpenAI chat format."""
        return [{"role": "system", "content": self.system}, *[wire_message(m) for m in self.messages]]


def wire_message(m: Message) -> dict[str, Any]:
    """One stored message in the OpenAI chat format."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name and m.role in ("user", "system"):
        out["name"] = m.name
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [{"id": c["id"], "type": "function",
                              "function": {"name": c["name"], "arguments": c["arguments"]}} for c in m.tool_calls]
        out["content"] = m.content or None
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
    return out


def memory_scope(agent_id: uuid.UUID, user_id: str | None) -> list:
    """The memories a conversation may recall: its user's, and the agent's own that belong to no user.

    An agent's memories about one user never reach a conversation with another.
    """
    agent_own = and_(Memory.agent_id == str(agent_id), Memory.user_id.is_(None))
    return [or_(Memory.user_id == user_id, agent_own)] if user_id else [agent_own]


async def recall(session: AsyncSession, org_id: uuid.UUID, agent: Agent, user_id: str | None, query: str,
                 top_k: int, query_vector: list[float] | None = None) -> list[Recalled]:
    """The memories most relevant to `query` (hybrid search) in the conversation's memory scope;
    `query_vector`: its embedding, if known (the user message's, embedded when it was posted)."""
    if top_k <= 0 or not query.strip():
        return []
    search = MemorySearchIn(query=query[:MAX_QUERY_CHARS], top_k=top_k)
    hits, _, _ = await search_memories(session, org_id, search, scope=memory_scope(agent.id, user_id),
                                       query_vector=query_vector)
    return [Recalled(h.row.id, h.row.content, round(h.score("hybrid"), 4), h.row.created_at)
            for h in hits if h.row is not None]


def _memories_section(memories: list[Recalled]) -> str:
    lines = [f"- ({m.created_at:%Y-%m-%d}) {m.content}" if m.created_at else f"- {m.content}" for m in memories]
    return ("<recalled_memories>\nMemories that may bear on the user's message, most relevant first:\n"
            + "\n".join(lines) + "\n</recalled_memories>")


def _summary_section(summary: str | None, upto: int, pending: list[Message], allowance: int) -> str | None:
    parts = []
    if summary:
        parts.append(f"Summary of messages 1-{upto}:\n{summary}")
    if pending:
        lines, used = [], 0
        # Newest first, so what is cut for the allowance is the oldest; sent in order.
        for m in reversed(pending):
            line = f"{m.role}: {' '.join(m.content.split())[:CONDENSED_CHARS]}"
            if used + text_tokens(line) > allowance and lines:
                lines.append(f"(… {len(pending) - len(lines)} earlier messages)")
                break
            lines.append(line)
            used += text_tokens(line)
        parts.append(f"Messages {pending[0].seq}-{pending[-1].seq}, condensed:\n" + "\n".join(reversed(lines)))
    if not parts:
        return None
    return "<conversation_summary>\n" + "\n\n".join(parts) + "\n</conversation_summary>"


def _groups(messages: list[Message]) -> list[list[Message]]:
    """Messages newest first, grouped: an assistant message that called tools with the results that answer it."""
    groups: list[list[Message]] = []
    pending: list[Message] = []
    for m in reversed(messages):
        if m.role == "tool":
            pending.append(m)
            continue
        if pending and m.role == "assistant" and m.tool_calls:
            groups.append([m, *reversed(pending)])
        else:
            # Tool results whose call is older than the history read can't be sent alone: left out.
            groups.append([m])
        pending = []
    return groups


async def build_context(session: AsyncSession, agent: Agent, conversation: Conversation | None, *,
                        params: ChatParams, memories: list[Recalled], tools: list[dict[str, Any]],
                        keep_from_seq: int | None = None, upto_seq: int | None = None) -> TurnContext:
    """The next LLM call's prompt. Messages from `keep_from_seq` on (the current turn's) are always sent;
    `upto_seq` bounds the history (none: all of it)."""
    settings = get_settings()
    blocks = (await blocks_of(session, [agent.id])).get(agent.id, [])
    compiled, _ = prompts.compile_prompt(agent, blocks)
    sections = [compiled.strip()]
    if memories:
        sections.append(_memories_section(memories))
    history: list[Message] = []
    summary_upto = conversation.summary_upto if conversation else 0
    if conversation is not None:
        history = await store.recent_messages(session, conversation.id, after_seq=summary_upto, upto_seq=upto_seq,
                                              limit=settings.agent_history_max_messages)
    base = text_tokens("\n\n".join(sections)) + tools_tokens(tools)
    allowance = int(params.budget * settings.agent_summary_share)
    summary_tokens = text_tokens(conversation.summary) if conversation and conversation.summary else 0
    room = params.budget - base - summary_tokens
    included: list[list[Message]] = []
    for group in _groups(history):
        cost = sum(m.tokens for m in group)
        must = keep_from_seq is not None and group[-1].seq >= keep_from_seq
        if not must and cost > room:
            break
        included.append(group)
        room -= cost
    kept = [m for group in reversed(included) for m in group]
    first_kept = kept[0].seq if kept else (upto_seq or (conversation.last_seq if conversation else 0)) + 1
    pending: list[Message] = []
    omitted = 0
    if conversation is not None:
        omitted = await store.count_before(session, conversation.id, after_seq=0, before_seq=first_kept)
        if first_kept - 1 > summary_upto:
            pending = [m for m in await store.messages_between(session, conversation.id, after_seq=summary_upto,
                                                               before_seq=first_kept) if m.role in ("user", "assistant")
                       and m.content.strip()]
    summary_text = _summary_section(conversation.summary if conversation else None, summary_upto, pending, allowance)
    if summary_text:
        sections.append(summary_text)
    system = "\n\n".join(sections) + "\n"
    message_total = sum(m.tokens for m in kept)
    system_tokens = message_tokens("system", system)
    tokens = {"system": text_tokens(compiled), "memories": sum(m.tokens for m in memories),
              "summary": text_tokens(summary_text), "messages": message_total,
              "total": system_tokens + message_total + tools_tokens(tools), "budget": params.budget,
              "context_window": params.context_window}
    return TurnContext(system=system, memories=memories, summary=summary_text, messages=kept, omitted=omitted,
                       tokens=tokens)
