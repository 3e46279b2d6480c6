"""One client for chat models behind any OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama …).

`LLMClient` wraps the `openai` package with what every job needs: retries with exponential backoff and
jitter on 429/5xx/timeouts/connection errors (honouring `Retry-After`), a per-process concurrency
limit per provider, requests and tokens per minute across all processes (core/llm_limits.py), a
timeout per call, token usage and its cost, streaming with tool calls assembled from their deltas,
and `chat_json` which validates the answer with pydantic and asks once for a repair. Every request
sent (and every one the limits held back) adds its figures to the shared metrics (core/llm_metrics.py).

The `openai` package's own retries are off (`max_retries=0`): ours are the only ones. Once they are
spent the call raises `LLMUnavailable`, a transient job error, so a job retries later through the broker.

A provider an organization configured is reached through `core.outbound.guarded_client`: its host
is checked on every connection (a refusal is `url_not_allowed`, permanent), redirects are not
followed, and its failures say nothing of what answered (core/llm_retry.py). Only the operator's
service-wide provider (`trusted`) uses the `openai` package's own client.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from pydantic import TypeAdapter, ValidationError

from core import llm_metrics
from core.errors import LLMOutputInvalid, LLMUnavailable, URLNotAllowed
from core.llm_limits import RateLimiter, Reservation, estimate_tokens
from core.llm_retry import UnusableAnswer, is_retryable, is_transport_error, map_error, parse_retry_after, retrying
from core.llm_types import ChatResult, ProviderSettings, StreamEvent, ToolCall, Usage
from core.outbound import guarded_client

__all__ = ["ChatResult", "LLMClient", "ProviderSettings", "StreamEvent", "ToolCall", "Usage", "is_retryable",
           "map_error", "openai_client", "parse_retry_after", "provider_semaphore"]

T = TypeVar("T")

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass
class _Sent:
    """An attempt that reached the provider: its answer, its count against the limits, when it started."""

    result: Any
    reservation: Reservation | None
    started: float
    model: str | None = None  # when not the provider's chat model (an embedding model)


# Per-process state, per event loop (an asyncio primitive or an HTTP pool belongs to one loop).
_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, asyncio.Semaphore]] = \
    weakref.WeakKeyDictionary()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ProviderSettings, openai.AsyncOpenAI]] = \
    weakref.WeakKeyDictionary()


def provider_semaphore(provider: ProviderSettings) -> asyncio.Semaphore:
    """The process's semaphore for this provider (keyed by name, base URL, model and the limit itself)."""
    per_loop = _semaphores.setdefault(asyncio.get_running_loop(), {})
    key = (provider.name, provider.base_url, provider.model, provider.max_concurrency)
    if key not in per_loop:
        per_loop[key] = asyncio.Semaphore(max(1, provider.max_concurrency))
    return per_loop[key]


def openai_client(provider: ProviderSettings, http_client: Any = None) -> openai.AsyncOpenAI:
    """The `openai` client for a provider: through the outbound policy unless it is `trusted` or given a client."""
    # Every argument is explicit so the package never falls back to OPENAI_* environment variables.
    common: dict[str, Any] = {"api_key": provider.api_key or "unused", "timeout": provider.timeout_seconds,
                              "max_retries": 0}
    if http_client is None and not provider.trusted:
        http_client = guarded_client(timeout=provider.timeout_seconds)
    if http_client is not None:
        common["http_client"] = http_client
    if provider.kind == "azure":
        return openai.AsyncAzureOpenAI(azure_endpoint=provider.base_url or "", api_version=provider.api_version,
                                       **common)
    return openai.AsyncOpenAI(base_url=provider.base_url or OPENAI_DEFAULT_BASE_URL, **common)


def _shared_openai(provider: ProviderSettings) -> openai.AsyncOpenAI:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    if provider not in per_loop:
        per_loop[provider] = openai_client(provider)
    return per_loop[provider]


def _usage_of(raw: Any) -> Usage:
    if raw is None:
        return Usage(calls=1)
    return Usage(prompt_tokens=getattr(raw, "prompt_tokens", 0) or 0,
                 completion_tokens=getattr(raw, "completion_tokens", 0) or 0, calls=1)


def json_instruction(schema: Any) -> str:
    """The system-prompt text asking for JSON matching `schema`."""
    return ("Answer with one JSON object and nothing else (no prose, no code fences). It must validate "
            f"against this JSON Schema:\n{json.dumps(TypeAdapter(schema).json_schema(), separators=(',', ':'))}")


def _strip_fences(text: str) -> str:
    text = text.strip()
    # Models asked for bare JSON still wrap it in ```json fences often enough to be worth forgiving.
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


class LLMClient:
    """Chat, stream, structured output and embeddings against one provider; `usage` sums every call."""

    def __init__(self, provider: ProviderSettings, *, on_usage: Callable[[Usage], None] | None = None,
                 http_client: Any = None, limiter: RateLimiter | None = None) -> None:
        self.provider = provider
        self.usage = Usage()
        self._limiter = limiter or RateLimiter()
        # `on_usage` hears each call's usage as it happens (e.g. `JobContext.record_usage`), so a job that
        # fails half-way still accounts for what it spent.
        self._on_usage = on_usage
        self._openai = openai_client(provider, http_client) if http_client is not None else None

    @property
    def openai(self) -> openai.AsyncOpenAI:
        """The underlying `openai` client (shared per process and event loop unless one was injected)."""
        return self._openai or _shared_openai(self.provider)

    def _count(self, usage: Usage) -> None:
        self.usage.add(usage)
        if self._on_usage is not None:
            self._on_usage(usage)

    def _priced(self, usage: Usage) -> Usage:
        usage.cost_usd = usage.cost(self.provider)
        return usage

    async def _reserve(self, kind: str, tokens: int | None) -> Reservation | None:
        if tokens is None:  # embeddings: the chat model's limits are not theirs
            return None
        try:
            return await self._limiter.acquire(self.provider, tokens)
        except LLMUnavailable:
            await llm_metrics.record_call(kind, "rate_limited", provider=self.provider.kind, model=self.provider.model)
            raise

    async def _report(self, kind: str, outcome: str, sent: _Sent, usage: Usage | None = None) -> None:
        """Correct the attempt's token estimate with what it used, and add it to the shared metrics."""
        if sent.reservation is not None:
            # A failed attempt's tokens are given back; a provider that reports no usage leaves the estimate.
            used = (usage.total_tokens or sent.reservation.tokens) if usage is not None else 0
            await self._limiter.settle(sent.reservation, used)
        usage = usage or Usage()
        await llm_metrics.record_call(kind, outcome, time.monotonic() - sent.started, provider=self.provider.kind,
                                      model=sent.model or self.provider.model,
                                      prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                      cost_usd=usage.cost_usd)

    async def _call(self, make: Callable[[], Any], *, kind: str, tokens: int | None = None,
                    keep_permit: bool = False, usable: Callable[[Any], bool] | None = None,
                    model: str | None = None) -> _Sent:
        """Run `make()` under the provider's per-minute limits, semaphore and timeout, retrying transient failures.

        Each attempt counts against the limits with `tokens` estimated (None: not subject to them), and
        a failed one goes to the metrics here; the caller reports the one that succeeded (`_report`).
        With `keep_permit` the caller inherits the permit on success and must release it. A result
        `usable` rejects is no API answer: retried, then reported as an unreachable provider is.
        """
        provider = self.provider
        semaphore = provider_semaphore(provider)
        try:
            async for attempt in retrying(provider.max_retries):
                with attempt:
                    reservation = await self._reserve(kind, tokens)
                    # One permit per attempt, never held while sleeping between attempts.
                    await semaphore.acquire()
                    started = time.monotonic()
                    try:
                        # The openai timeout bounds each read; this bounds the whole call.
                        async with asyncio.timeout(provider.timeout_seconds):
                            result = await make()
                        if usable is not None and not usable(result):
                            raise UnusableAnswer(f"a {type(result).__name__} that is no API answer")
                    except BaseException as exc:
                        semaphore.release()
                        if isinstance(exc, Exception):  # a cancelled call is torn down: it awaits nothing more
                            await self._report(kind, "error", _Sent(None, reservation, started, model))
                        raise
                    if not keep_permit:
                        semaphore.release()
                    return _Sent(result, reservation, started, model)
        except (openai.APIError, TimeoutError, UnusableAnswer) as exc:
            raise map_error(exc, provider) from exc
        except URLNotAllowed as exc:  # the outbound policy refused the host when connecting: never retried
            raise URLNotAllowed(f"LLM provider {provider.name!r}: {exc.message}",
                                details={**(exc.details or {}), "provider": provider.name}) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def chat(self, messages: list[dict], *, tools: list[dict] | None = None, tool_choice: Any = None,
                   temperature: float = 0.0, max_tokens: int | None = None, json_mode: bool = False) -> ChatResult:
        """One chat completion; tool calls come back parsed into `ToolCall`s."""
        kwargs = self._chat_kwargs(messages, tools=tools, tool_choice=tool_choice, temperature=temperature,
                                   max_tokens=max_tokens, json_mode=json_mode)
        sent = await self._call(lambda: self.openai.chat.completions.create(**kwargs), kind="chat",
                                tokens=estimate_tokens(messages, max_tokens, tools),
                                usable=lambda r: isinstance(getattr(r, "choices", None), list))
        response = sent.result
        usage = self._priced(_usage_of(response.usage))
        self._count(usage)
        await self._report("chat", "ok", sent, usage)
        if not response.choices:
            raise LLMOutputInvalid(f"LLM provider {self.provider.name!r} returned no choices")
        choice = response.choices[0]
        calls = [ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
                 for c in (choice.message.tool_calls or []) if getattr(c, "function", None) is not None]
        return ChatResult(content=choice.message.content, tool_calls=calls, finish_reason=choice.finish_reason,
                          usage=usage)

    async def stream(self, messages: list[dict], *, tools: list[dict] | None = None,
                     temperature: float | None = 0.0, max_tokens: int | None = None,
                     top_p: float | None = None) -> AsyncIterator[StreamEvent]:
        """Stream a completion: text deltas as they come, each tool call once complete, then `done`.

        Opening the stream is retried like any call; a failure after the first event is not (the
        caller has already seen part of the answer) and raises LLMUnavailable. The stream holds one of
        the provider's permits until it ends: a caller that may stop early should wrap it in
        `contextlib.aclosing(...)` so the permit is given back at once.
        """
        kwargs = self._chat_kwargs(messages, tools=tools, tool_choice=None, temperature=temperature,
                                   max_tokens=max_tokens, json_mode=False, top_p=top_p)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        # The permit is held for the life of the stream (the connection is busy until it ends) and given
        # back when the stream finishes, fails or the caller closes the iterator.
        sent = await self._call(lambda: self.openai.chat.completions.create(**kwargs), kind="stream",
                                tokens=estimate_tokens(messages, max_tokens, tools), keep_permit=True)
        stream = sent.result
        semaphore = provider_semaphore(self.provider)
        try:
            parts: dict[int, dict[str, str]] = {}
            finish_reason: str | None = None
            usage: Usage | None = None
            chunks = 0
            try:
                async for chunk in stream:
                    chunks += 1
                    if chunk.usage is not None:
                        usage = _usage_of(chunk.usage)
                    for choice in chunk.choices[:1] if chunk.choices else []:
                        delta = choice.delta
                        if delta.content:
                            yield StreamEvent(type="text", text=delta.content)
                        for piece in delta.tool_calls or []:
                            part = parts.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                            part["id"] = piece.id or part["id"]
                            if piece.function is not None:
                                part["name"] = part["name"] or (piece.function.name or "")
                                part["arguments"] += piece.function.arguments or ""
                        finish_reason = choice.finish_reason or finish_reason
            except Exception as exc:
                await self._report("stream", "error", sent)
                if not is_transport_error(exc):
                    raise
                raise map_error(exc, self.provider) from exc
            finally:
                await stream.close()
            if not chunks:  # not one event: whatever answered, it was no streaming API
                await self._report("stream", "error", sent)
                raise map_error(UnusableAnswer("an empty stream"), self.provider)
            for index in sorted(parts):
                yield StreamEvent(type="tool_call", tool_call=ToolCall(**parts[index]))
            usage = self._priced(usage or Usage(calls=1))
            self._count(usage)
            # A stream its caller abandons reports nothing: the closing generator may await nothing more.
            await self._report("stream", "ok", sent, usage)
            yield StreamEvent(type="done", finish_reason=finish_reason, usage=usage)
        finally:
            semaphore.release()

    async def chat_json(self, messages: list[dict], schema: type[T], **kwargs: Any) -> T:
        """Ask for JSON matching `schema` and validate it; one repair attempt, then LLMOutputInvalid."""
        kwargs.setdefault("json_mode", True)
        adapter = TypeAdapter(schema)
        conversation = _with_system(messages, json_instruction(schema))
        result = await self.chat(conversation, **kwargs)
        try:
            return adapter.validate_json(_strip_fences(result.content or ""))
        except ValidationError as exc:
            first_error = exc
        repair = [*conversation, {"role": "assistant", "content": result.content or ""},
                  {"role": "user", "content": "Your answer was not valid:\n"
                   f"{_describe(first_error)}\nReply with the corrected JSON object only."}]
        result = await self.chat(repair, **kwargs)
        try:
            return adapter.validate_json(_strip_fences(result.content or ""))
        except ValidationError as exc:
            raise LLMOutputInvalid(
                f"LLM provider {self.provider.name!r} gave invalid JSON twice: {_describe(exc, limit=3)}",
                details={"errors": exc.errors(include_url=False, include_input=False)[:10],
                         "content": (result.content or "")[:2000]}) from exc

    async def embed(self, texts: list[str], model: str) -> list[list[float]]:
        """Embed `texts` with `model` at this provider, in input order."""
        if not texts:
            return []
        async def create() -> Any:
            try:
                return await self.openai.embeddings.create(model=model, input=texts)
            except (AttributeError, TypeError, ValueError) as exc:  # openai reading a body that is no embeddings
                raise UnusableAnswer(f"{type(exc).__name__}: {exc}") from exc

        # Not priced: the prices of a configuration are its chat model's.
        sent = await self._call(create, kind="embed", usable=lambda r: isinstance(getattr(r, "data", None), list),
                                model=model)
        response = sent.result
        usage = Usage(prompt_tokens=getattr(response.usage, "prompt_tokens", 0) or 0, calls=1)
        self._count(usage)
        await self._report("embed", "ok", sent, usage)
        return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]

    def _chat_kwargs(self, messages: list[dict], *, tools: list[dict] | None, tool_choice: Any,
                     temperature: float | None, max_tokens: int | None, json_mode: bool,
                     top_p: float | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.provider.model, "messages": messages}
        if temperature is not None:  # None: the model's own default
            kwargs["temperature"] = temperature
        if top_p is not None:
            kwargs["top_p"] = top_p
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if tools:
            kwargs["tools"] = tools
            if tool_choice is not None:
                kwargs["tool_choice"] = tool_choice
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs


def _with_system(messages: list[dict], instruction: str) -> list[dict]:
    """A copy of `messages` with `instruction` appended to the system prompt (or as a new one first)."""
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _describe(exc: ValidationError, limit: int = 10) -> str:
    lines = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "(root)"
        lines.append(f"- {where}: {error.get('msg')}")
    return "\n".join(lines)
