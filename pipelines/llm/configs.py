"""LLM provider configurations of an organization, and the choice of provider a job uses.

Each organization may keep several configurations, one of them its default. A job asks
`require_provider` for the configuration it was given, else the organization's default, else the
service-wide provider from settings (`AGENTMEM_LLM_*`). API keys are stored encrypted (core.crypto).
A configuration's `base_url` must pass the outbound policy (core/outbound.py) when it is stored, and
again on every connection; the service-wide one is the operator's and is trusted.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import decrypt_secret, encrypt_secret, secret_hint
from core.db import flush_or_raise
from core.errors import AppError, Conflict, InvalidInput, LLMNotConfigured, NotFound
from core.llm import ProviderSettings
from core.outbound import check_url
from core.settings import get_settings
from schemas.inputs import name_key
from schemas.llm import LIMIT_FIELDS, LlmConfigCreate, LlmConfigUpdate, provider_problem
from schemas.tables import LlmConfig

LIVE = LlmConfig.deleted_at.is_(None)
HOW_TO_CONFIGURE = ("create one with POST /api/v1/llm/configs (\"is_default\": true), or set AGENTMEM_LLM_MODEL "
                    "(and AGENTMEM_LLM_BASE_URL / AGENTMEM_LLM_API_KEY) for the whole service")


def _name_taken(name: str) -> Conflict:
    return Conflict(f"an LLM config called {name!r} exists", code="llm_config_name_taken", details={"name": name})


async def _unset_default(session: AsyncSession, org_id: uuid.UUID, keep: uuid.UUID | None = None) -> None:
    query = update(LlmConfig).where(LlmConfig.org_id == org_id, LlmConfig.is_default.is_(True), LIVE)
    if keep is not None:
        query = query.where(LlmConfig.id != keep)
    await session.execute(query.values(is_default=False, updated_at=func.now()))


async def _name_free(session: AsyncSession, org_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None) -> None:
    query = select(LlmConfig.id).where(LlmConfig.org_id == org_id, LIVE, LlmConfig.name_key == name_key(name))
    if exclude is not None:
        query = query.where(LlmConfig.id != exclude)
    if (await session.execute(query)).first():
        raise _name_taken(name)


async def _flush(session: AsyncSession, name: str) -> None:
    # The unique indexes decide races the checks above could not see.
    await flush_or_raise(session, {
        "uq_llm_configs_name": _name_taken(name),
        None: Conflict("another default LLM config was set at the same moment; try again",
                       code="llm_config_default_conflict")})


def _set_key(row: LlmConfig, api_key: str | None) -> None:
    row.api_key_encrypted = encrypt_secret(api_key) if api_key else None
    row.api_key_hint = secret_hint(api_key) if api_key else None


async def create_config(session: AsyncSession, org_id: uuid.UUID, data: LlmConfigCreate) -> LlmConfig:
    """A new configuration; as the default it replaces the previous default in the same transaction."""
    if data.base_url is not None:
        await check_url(data.base_url)
    await _name_free(session, org_id, data.name)
    if data.is_default:
        await _unset_default(session, org_id)
    row = LlmConfig(org_id=org_id, name=data.name, name_key=name_key(data.name), provider=data.provider,
                    base_url=data.base_url, chat_model=data.model, api_version=data.api_version,
                    max_concurrency=data.max_concurrency, timeout_seconds=data.timeout_seconds,
                    max_retries=data.max_retries, is_default=data.is_default,
                    **{name: getattr(data, name) for name in LIMIT_FIELDS})
    _set_key(row, data.api_key.get_secret_value() if data.api_key else None)
    session.add(row)
    await _flush(session, data.name)
    await session.refresh(row)
    return row


async def list_configs(session: AsyncSession, org_id: uuid.UUID) -> list[LlmConfig]:
    """The organization's live configurations, the default first, then by name."""
    return list((await session.execute(select(LlmConfig).where(LlmConfig.org_id == org_id, LIVE).order_by(
        LlmConfig.is_default.desc(), func.lower(LlmConfig.name), LlmConfig.id))).scalars())


async def get_config(session: AsyncSession, org_id: uuid.UUID, config_id: uuid.UUID) -> LlmConfig:
    """A live configuration of the organization, or NotFound (also for other organizations' configurations)."""
    row = (await session.execute(select(LlmConfig).where(
        LlmConfig.id == config_id, LlmConfig.org_id == org_id, LIVE))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"LLM config {config_id} not found", details={"config_id": str(config_id)})
    return row


async def update_config(session: AsyncSession, org_id: uuid.UUID, config_id: uuid.UUID,
                        data: LlmConfigUpdate) -> LlmConfig:
    """Change the fields given; `api_key: null` removes the key; `is_default: true` takes over the default."""
    row = await get_config(session, org_id, config_id)
    given = data.model_fields_set
    if "base_url" in given and data.base_url is not None:
        await check_url(data.base_url)
    if "name" in given and name_key(data.name) != row.name_key:
        await _name_free(session, org_id, data.name, exclude=row.id)
    provider = data.provider if "provider" in given else row.provider
    base_url = data.base_url if "base_url" in given else row.base_url
    api_version = data.api_version if "api_version" in given else row.api_version
    problem = provider_problem(provider, base_url, api_version)
    if problem:
        raise InvalidInput(problem, details={"config_id": str(row.id)})
    if data.is_default and not row.is_default:
        await _unset_default(session, org_id, keep=row.id)
    for field, column in (("name", "name"), ("provider", "provider"), ("model", "chat_model"),
                          ("base_url", "base_url"), ("api_version", "api_version"),
                          ("max_concurrency", "max_concurrency"), ("timeout_seconds", "timeout_seconds"),
                          ("max_retries", "max_retries"), ("is_default", "is_default"),
                          *((name, name) for name in LIMIT_FIELDS)):
        if field in given:
            setattr(row, column, getattr(data, field))
    if "name" in given:
        row.name_key = name_key(data.name)
    if "api_key" in given:
        _set_key(row, data.api_key.get_secret_value() if data.api_key else None)
    row.updated_at = func.now()
    await _flush(session, row.name if "name" not in given else data.name)
    await session.refresh(row)
    return row


async def delete_config(session: AsyncSession, org_id: uuid.UUID, config_id: uuid.UUID) -> LlmConfig:
    """Soft-delete a configuration (its name becomes free; a deleted default leaves the organization without one)."""
    row = await get_config(session, org_id, config_id)
    row.deleted_at = func.now()
    row.is_default = False
    row.updated_at = func.now()
    await session.flush()
    await session.refresh(row)
    return row


async def get_default(session: AsyncSession, org_id: uuid.UUID) -> LlmConfig:
    """The organization's default configuration; NotFound `no_default_llm_config` says what jobs use instead."""
    row = (await session.execute(select(LlmConfig).where(
        LlmConfig.org_id == org_id, LlmConfig.is_default.is_(True), LIVE))).scalar_one_or_none()
    if row is not None:
        return row
    if get_settings().llm_model:
        raise NotFound("your organization has no default LLM config: jobs that name none use the service-wide "
                       "provider; choose one with PUT /api/v1/llm/configs/default", code="no_default_llm_config",
                       details={"fallback": "service"})
    raise NotFound("your organization has no default LLM config, and the service has no provider of its own: jobs "
                   f"that name none fail with llm_not_configured; {HOW_TO_CONFIGURE}", code="no_default_llm_config",
                   details={"fallback": "none"})


async def set_default(session: AsyncSession, org_id: uuid.UUID, config_id: uuid.UUID) -> LlmConfig:
    """Make a configuration the organization's default; the previous one stops being it in the same transaction."""
    # Lock the organization's configurations (in id order, so two calls never wait on each other crosswise):
    # concurrent calls then run one after the other and the last wins, rather than one failing with a conflict.
    await session.execute(select(LlmConfig.id).where(LlmConfig.org_id == org_id, LIVE)
                          .order_by(LlmConfig.id).with_for_update())
    row = await get_config(session, org_id, config_id)
    if row.is_default:
        return row
    await _unset_default(session, org_id, keep=row.id)
    row.is_default = True
    row.updated_at = func.now()
    await _flush(session, row.name)
    await session.refresh(row)
    return row


def _provider_of(row: LlmConfig) -> ProviderSettings:
    try:
        api_key = decrypt_secret(row.api_key_encrypted) if row.api_key_encrypted else None
    except AppError as exc:
        raise LLMNotConfigured(f"the API key of LLM config {row.name!r} can't be decrypted (the encryption key "
                               f"changed since it was stored): set it again with PATCH /api/v1/llm/configs/{row.id}",
                               details={"config_id": str(row.id)}) from exc
    return ProviderSettings(kind=row.provider, model=row.chat_model, base_url=row.base_url, api_key=api_key,
                            api_version=row.api_version, max_concurrency=row.max_concurrency,
                            timeout_seconds=row.timeout_seconds, max_retries=row.max_retries,
                            name=_provider_name(row.name, api_key),
                            **{name: getattr(row, name) for name in LIMIT_FIELDS})


def _provider_name(name: str, api_key: str | None) -> str:
    # Concurrency limits are per provider name: two configurations with the same name in different
    # organizations but different keys (different rate limits at the provider) must not share one.
    if not api_key:
        return name
    return f"{name}#{hashlib.sha256(api_key.encode()).hexdigest()[:8]}"


def service_provider() -> ProviderSettings | None:
    """The service-wide provider from `AGENTMEM_LLM_*`, or None when no model is set."""
    settings = get_settings()
    if not settings.llm_model:
        return None
    kind = settings.llm_provider or ("openai_compatible" if settings.llm_base_url else "openai")
    problem = provider_problem(kind, settings.llm_base_url, settings.llm_api_version)
    if problem:
        raise LLMNotConfigured(f"the service-wide LLM provider is incomplete: {problem} (AGENTMEM_LLM_*)")
    return ProviderSettings(kind=kind, model=settings.llm_model, base_url=settings.llm_base_url,
                            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
                            api_version=settings.llm_api_version, max_concurrency=settings.llm_max_concurrency,
                            timeout_seconds=settings.llm_timeout_seconds, max_retries=settings.llm_max_retries,
                            requests_per_minute=settings.llm_requests_per_minute,
                            tokens_per_minute=settings.llm_tokens_per_minute,
                            context_window=settings.llm_context_window,
                            prompt_price_per_million=settings.llm_prompt_price_per_million,
                            completion_price_per_million=settings.llm_completion_price_per_million,
                            name="service-default", trusted=True)


async def provider_for(session: AsyncSession, org_id: uuid.UUID,
                       config_id: uuid.UUID | None = None) -> ProviderSettings | None:
    """The provider to use: the given config (LLMNotConfigured if it isn't the org's), else the org's default,
    else the service-wide one; None when there is none."""
    if config_id is not None:
        row = (await session.execute(select(LlmConfig).where(
            LlmConfig.id == config_id, LlmConfig.org_id == org_id, LIVE))).scalar_one_or_none()
        if row is None:
            raise LLMNotConfigured(f"LLM config {config_id} not found in this organization (deleted?): "
                                   "name another, or none to use the default", details={"config_id": str(config_id)})
        return _provider_of(row)
    row = (await session.execute(select(LlmConfig).where(
        LlmConfig.org_id == org_id, LlmConfig.is_default.is_(True), LIVE))).scalar_one_or_none()
    if row is not None:
        return _provider_of(row)
    return service_provider()


async def require_provider(session: AsyncSession, org_id: uuid.UUID,
                           config_id: uuid.UUID | None = None) -> ProviderSettings:
    """`provider_for`, raising LLMNotConfigured (422, a permanent job failure) when there is no provider."""
    provider = await provider_for(session, org_id, config_id)
    if provider is None:
        raise LLMNotConfigured(f"no LLM provider is configured for this organization: {HOW_TO_CONFIGURE}")
    return provider
