"""What the LLM client (core/llm.py) takes and gives: a provider's settings, usage and its cost, answers.

No I/O here: core/llm_limits.py and core/llm_metrics.py read these too, without the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import LLMOutputInvalid


@dataclass(frozen=True)
class ProviderSettings:
    """Where and how to reach one chat model."""

    kind: Literal["openai", "azure", "openai_compatible"]
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None
    max_concurrency: int = 4
    timeout_seconds: float = 60.0
    max_retries: int = 4
    name: str = "default"
    # Across all processes (core/llm_limits.py); None: no limit.
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    context_window: int | None = None
    # US dollars per million tokens; None counts as 0, and with both None no cost is reported.
    prompt_price_per_million: float | None = None
    completion_price_per_million: float | None = None
    # Set by the operator (AGENTMEM_LLM_*), not by an organization: not subject to the outbound policy.
    trusted: bool = False


@dataclass
class Usage:
    """Tokens spent, calls made, and what they cost at the provider's prices (0.0: no prices known)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def cost(self, provider: ProviderSettings) -> float:
        """US dollars these tokens cost at the provider's prices per million (a price not set counts as 0)."""
        return (self.prompt_tokens * (provider.prompt_price_per_million or 0.0)
                + self.completion_tokens * (provider.completion_price_per_million or 0.0)) / 1_000_000

    def add(self, other: Usage) -> Usage:
        """Add `other` to this usage in place; returns self."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls
        self.cost_usd += other.cost_usd
        return self

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape stored in `jobs.usage`; `cost_usd` only when something was priced."""
        shape: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                                 "total_tokens": self.total_tokens, "calls": self.calls}
        if self.cost_usd:
            shape["cost_usd"] = round(self.cost_usd, 9)  # nano-dollars: no float noise from the sums
        return shape

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        """Read back `as_dict` output (missing keys count as zero)."""
        data = data or {}
        return cls(prompt_tokens=int(data.get("prompt_tokens") or 0),
                   completion_tokens=int(data.get("completion_tokens") or 0), calls=int(data.get("calls") or 0),
                   cost_usd=float(data.get("cost_usd") or 0.0))


@dataclass
class ToolCall:
    """A function call the model asked for; `arguments` is the raw JSON text the model wrote."""

    id: str
    name: str
    arguments: str

    def parsed(self) -> dict[str, Any]:
        """The arguments as a dict; LLMOutputInvalid when the model wrote something else."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise LLMOutputInvalid(f"tool call {self.name!r} has arguments that are not JSON: {exc}",
                                   details={"tool": self.name, "arguments": self.arguments[:2000]}) from exc
        if not isinstance(value, dict):
            raise LLMOutputInvalid(f"tool call {self.name!r} has arguments that are not a JSON object",
                                   details={"tool": self.name, "arguments": self.arguments[:2000]})
        return value


@dataclass
class ChatResult:
    """One chat completion."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass
class StreamEvent:
    """One event of `LLMClient.stream`: a text delta, a complete tool call, or the end."""

    type: Literal["text", "tool_call", "done"]
    text: str | None = None
    tool_call: ToolCall | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
