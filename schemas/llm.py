"""LLM provider configuration API models. The API key goes in, never out: responses say only whether one is set."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from schemas.inputs import check_http_url, display_name

ConfigName = display_name(100)
ProviderKind = Literal["openai", "azure", "openai_compatible"]


def provider_problem(kind: str, base_url: str | None, api_version: str | None) -> str | None:
    """What is missing for this kind of provider, or None if the combination is usable."""
    if kind == "azure" and not api_version:
        return "an azure provider needs `api_version` (e.g. 2024-10-21)"
    if kind == "azure" and not base_url:
        return "an azure provider needs `base_url`: the resource endpoint, https://<resource>.openai.azure.com"
    if kind == "openai_compatible" and not base_url:
        return ("an openai_compatible provider needs `base_url`, e.g. https://llm.example.com/v1 "
                "(a server on a private address must be allowed with AGENTMEM_OUTBOUND_ALLOW)")
    return None


# Limits and prices of a configuration: the same bounds on create and update (update also takes null: none).
PRICE = {"ge": 0, "le": 1_000_000, "allow_inf_nan": False}
LIMIT_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "requests_per_minute": ({"ge": 1, "le": 10_000_000}, "Most calls per minute to this configuration, counted "
                            "across all worker processes; a call over it waits for the next minute, at most "
                            "`timeout_seconds`, then fails `llm_unavailable` (retried). Unset: no limit."),
    "tokens_per_minute": ({"ge": 1, "le": 2_000_000_000}, "Most tokens per minute (prompt and completion: "
                          "estimated before a call, corrected by the usage the provider reports), across all worker "
                          "processes. Unset: no limit."),
    "context_window": ({"ge": 512, "le": 10_000_000}, "The model's context window in tokens: an agent turn's "
                       "prompt is fitted into it. Unset: the agent's, else `AGENTMEM_AGENT_CONTEXT_WINDOW`."),
    "prompt_price_per_million": (PRICE, "US dollars per million prompt tokens. With either price set, jobs report "
                                 "`usage.cost_usd` (a price left unset counts as 0)."),
    "completion_price_per_million": (PRICE, "US dollars per million completion tokens."),
}


def _limit_field(name: str) -> Any:
    bounds, description = LIMIT_FIELDS[name]
    return Field(default=None, description=description, **bounds)


def _check_url(value: str | None) -> str | None:
    value = check_http_url(value)
    return None if value is None else value.rstrip("/")


class LlmConfigCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ConfigName = Field(description="Unique in the organization, compared by look (case, width, accents, "
                                         "look-alike letters); invisible and direction-changing characters "
                                         "are refused.")
    provider: ProviderKind = Field(default="openai_compatible",
                                   description="`openai`, `azure` (needs `api_version`) or `openai_compatible`.")
    model: str = Field(min_length=1, max_length=200, description="Chat model name (for Azure, the deployment).")
    base_url: str | None = Field(default=None, max_length=500, description="http(s) endpoint; optional for `openai`.")
    api_key: SecretStr | None = Field(default=None, max_length=1000,
                                      description="Stored encrypted; never returned (see `api_key_hint`).")
    api_version: str | None = Field(default=None, max_length=50, description="Azure OpenAI API version.")
    max_concurrency: int = Field(default=4, ge=1, le=256, description="Calls in flight per worker process.")
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    max_retries: int = Field(default=4, ge=0, le=10, description="Retries of a call on 429 / 5xx / timeouts.")
    requests_per_minute: int | None = _limit_field("requests_per_minute")
    tokens_per_minute: int | None = _limit_field("tokens_per_minute")
    context_window: int | None = _limit_field("context_window")
    prompt_price_per_million: float | None = _limit_field("prompt_price_per_million")
    completion_price_per_million: float | None = _limit_field("completion_price_per_million")
    is_default: bool = Field(default=False, description="The organization's default (replaces the previous one).")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @model_validator(mode="after")
    def _complete(self) -> LlmConfigCreate:
        problem = provider_problem(self.provider, self.base_url, self.api_version)
        if problem:
            raise ValueError(problem)
        return self


class LlmConfigUpdate(BaseModel):
    """Fields to change; omitted ones stay. `api_key: null` removes the stored key, and null for a limit or a price
    removes it."""

    model_config = ConfigDict(extra="forbid")
    name: ConfigName | None = None
    provider: ProviderKind | None = None
    model: str | None = Field(default=None, min_length=1, max_length=200)
    base_url: str | None = Field(default=None, max_length=500)
    api_key: SecretStr | None = Field(default=None, max_length=1000)
    api_version: str | None = Field(default=None, max_length=50)
    max_concurrency: int | None = Field(default=None, ge=1, le=256)
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    max_retries: int | None = Field(default=None, ge=0, le=10)
    requests_per_minute: int | None = _limit_field("requests_per_minute")
    tokens_per_minute: int | None = _limit_field("tokens_per_minute")
    context_window: int | None = _limit_field("context_window")
    prompt_price_per_million: float | None = _limit_field("prompt_price_per_million")
    completion_price_per_million: float | None = _limit_field("completion_price_per_million")
    is_default: bool | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @model_validator(mode="after")
    def _not_null(self) -> LlmConfigUpdate:
        # null means "remove" only where removing makes sense.
        for name in ("name", "provider", "model", "max_concurrency", "timeout_seconds", "max_retries", "is_default"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` can't be null")
        return self


class LlmConfigOut(BaseModel):
    """A provider configuration as the API shows it: no API key, only whether one is set and its last characters."""

    id: uuid.UUID
    name: str
    provider: ProviderKind
    model: str
    base_url: str | None
    api_version: str | None
    api_key_set: bool
    api_key_hint: str | None = Field(description="The key's last four characters, e.g. `…abcd`.")
    max_concurrency: int
    timeout_seconds: float
    max_retries: int
    requests_per_minute: int | None = Field(description=LIMIT_FIELDS["requests_per_minute"][1])
    tokens_per_minute: int | None = Field(description=LIMIT_FIELDS["tokens_per_minute"][1])
    context_window: int | None = Field(description=LIMIT_FIELDS["context_window"][1])
    prompt_price_per_million: float | None = Field(description=LIMIT_FIELDS["prompt_price_per_million"][1])
    completion_price_per_million: float | None = Field(description=LIMIT_FIELDS["completion_price_per_million"][1])
    is_default: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> LlmConfigOut:
        return cls(id=row.id, name=row.name, provider=row.provider, model=row.chat_model, base_url=row.base_url,
                   api_version=row.api_version, api_key_set=row.api_key_encrypted is not None,
                   api_key_hint=row.api_key_hint if row.api_key_encrypted is not None else None,
                   max_concurrency=row.max_concurrency, timeout_seconds=row.timeout_seconds,
                   max_retries=row.max_retries, is_default=row.is_default, created_at=row.created_at,
                   updated_at=row.updated_at, **{name: getattr(row, name) for name in LIMIT_FIELDS})


class LlmDefaultIn(BaseModel):
    """Which configuration becomes the organization's default."""

    model_config = ConfigDict(extra="forbid")
    config_id: uuid.UUID = Field(description="A configuration of your organization.")
