"""The `block_rewrite` job: shorten a block that grew past its threshold, without losing a concurrent write.

The job reads the block at version v, computes a shorter text (`pipelines.blocks.strategies`: an LLM's
rewrite, or offline the most central or the newest sentences) aiming at `AGENTMEM_BLOCK_REWRITE_TARGET`
of the limit, and applies it with a compare-and-swap on v. When someone wrote meanwhile the swap
changes nothing, and the job reads the block again and starts over from the new text (a progress
event says so), up to `AGENTMEM_BLOCK_REWRITE_ATTEMPTS` times; then it fails with `block_busy`, to be
retried later. A block already back under its threshold, deleted or made read-only meanwhile ends the
job as a no-op with the reason in its result. The text before the rewrite stays in the block's
versions. A redelivered job that already applied its rewrite finds its version and returns it.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import session_scope
from core.embedder import get_embedder
from core.errors import Conflict, Forbidden, LLMNotConfigured, LLMOutputInvalid, TooManyRequests, TransientJobError
from core.llm import LLMClient, ProviderSettings
from core.settings import get_settings
from pipelines.blocks import store as blocks, strategies as rewriting
from pipelines.jobs import lifecycle
from pipelines.jobs.runner import JobContext
from pipelines.llm.configs import provider_for, require_provider
from pipelines.summaries.abstractive import max_tokens_for
from schemas.blocks import RewriteStrategy
from schemas.enums import JobKind, JobStatus
from schemas.permissions import Principal
from schemas.tables import Block, BlockVersion, Job

log = logging.getLogger(__name__)

STEPS = 2  # read and rewrite, then apply


def target_for(block: Block, requested: int | None, share: float) -> int:
    """Characters a rewrite aims for: the requested length or `share` of the limit, never above the limit."""
    return max(1, min(block.char_limit, requested or math.floor(block.char_limit * share)))


def requested_strategy(block: Block, strategy: RewriteStrategy | None) -> RewriteStrategy:
    """The strategy a rewrite request means: the one named, else the block's (`off` there means `auto`)."""
    chosen = strategy or RewriteStrategy(block.rewrite_strategy)
    return RewriteStrategy.AUTO if chosen is RewriteStrategy.OFF else chosen


async def check_request(session: AsyncSession, block: Block, strategy: RewriteStrategy) -> None:
    """Refuse a rewrite of a read-only block (409), or `summarize` without an LLM provider (422)."""
    if block.read_only:
        raise Conflict(f"block {block.id} is read-only: rewrites leave it alone", code="block_read_only",
                       details={"block_id": str(block.id)})
    if strategy is RewriteStrategy.SUMMARIZE:
        await require_provider(session, block.org_id)


def rewrite_payload(block: Block, *, strategy: RewriteStrategy, target_chars: int | None, trigger: str) -> dict:
    """The job payload: which block, how, and why (`threshold`: a write filled it; `requested`: asked for)."""
    return {"block_id": str(block.id), "strategy": strategy.value, "target_chars": target_chars,
            "trigger": trigger}


async def queued_rewrite(session: AsyncSession, org_id: uuid.UUID, block_id: uuid.UUID) -> Job | None:
    """A threshold rewrite of the block that has not started yet: it will read the newest text anyway."""
    return (await session.execute(select(Job).where(
        Job.org_id == org_id, Job.kind == JobKind.BLOCK_REWRITE.value, Job.status == JobStatus.QUEUED.value,
        Job.payload["block_id"].astext == str(block_id), Job.payload["trigger"].astext == "threshold")
        .limit(1))).scalar_one_or_none()


async def rewrite_after_write(session: AsyncSession, who: Principal, block: Block) -> uuid.UUID | None:
    """The rule for a write that leaves a block past its rewrite threshold: a `block_rewrite` job.

    Submitted on the caller's session (sent when it commits, with the write); one not yet started is
    reused, since it will read this write too. A job quota that refuses it keeps the write: the next
    write asks again. Returns the job's id, or None when no rewrite is due or none could be queued.
    """
    if not blocks.needs_rewrite(block):
        return None
    queued = await queued_rewrite(session, who.org_id, block.id)
    if queued is not None:
        return queued.id
    payload = rewrite_payload(block, strategy=RewriteStrategy(block.rewrite_strategy), target_chars=None,
                              trigger="threshold")
    try:
        job, _ = await lifecycle.submit(session, who, kind=JobKind.BLOCK_REWRITE, payload=payload, total=STEPS,
                                        key=None)
    except (TooManyRequests, Forbidden) as exc:
        log.warning("block %s is over its rewrite threshold but no job was queued: %s", block.id, exc)
        return None
    return job.id


async def rewrite_block(ctx: JobContext) -> dict[str, Any]:
    """Rewrite the job's block shorter, compare-and-swap on the version read; a no-op when no longer needed."""
    job, settings = ctx.job, get_settings()
    block_id = uuid.UUID(job.payload["block_id"])
    async with session_scope() as session:
        applied = (await session.execute(
            select(BlockVersion).where(BlockVersion.job_id == job.id))).scalar_one_or_none()
    if applied is not None:  # a redelivered message: the rewrite is already in
        return _result(applied.meta, version=applied.version, attempts=applied.meta.get("attempt"))
    attempts = max(1, settings.block_rewrite_attempts)
    for attempt in range(1, attempts + 1):
        await ctx.progress(0, STEPS, f"attempt {attempt}: reading the block")
        async with session_scope() as session:
            block = (await session.execute(select(Block).where(
                Block.id == block_id, Block.org_id == job.org_id))).scalar_one_or_none()
            strategy = RewriteStrategy(job.payload["strategy"])
            provider = (await provider_for(session, job.org_id)
                        if strategy in (RewriteStrategy.AUTO, RewriteStrategy.SUMMARIZE) else None)
        target = target_for(block, job.payload.get("target_chars"), settings.block_rewrite_target) if block else 0
        skipped = _skip_reason(block, job.payload.get("trigger"), target)
        if skipped is not None:
            await ctx.progress(STEPS, STEPS, f"nothing to do: {skipped}")
            return {"block_id": str(block_id), "applied": False, "reason": skipped, "attempts": attempt,
                    "version": block.version if block else None}
        if strategy is RewriteStrategy.AUTO:
            strategy = RewriteStrategy.SUMMARIZE if provider else RewriteStrategy.PRESERVE_IMPORTANT
        if strategy is RewriteStrategy.SUMMARIZE and provider is None:
            raise LLMNotConfigured("the organization's LLM provider was removed after the rewrite was queued")
        await ctx.progress(1, STEPS, f"attempt {attempt}: rewriting version {block.version} ({len(block.value)} "
                                     f"characters) with {strategy.value} to at most {target}")
        value, details = await _compute(ctx, strategy, provider, block, target)
        meta = {"strategy": strategy.value, "based_on": block.version, "chars_before": len(block.value),
                "chars_after": len(value), "target_chars": target, "attempt": attempt, **details}
        async with session_scope() as session:
            row = await blocks.apply_rewrite(session, block.id, based_on=block.version, value=value, job_id=job.id,
                                             meta=meta)
            await session.commit()
        if row is not None:
            await ctx.progress(STEPS, STEPS, f"applied as version {row.version} ({len(value)} characters)")
            return _result(meta, version=row.version, attempts=attempt)
        await ctx.progress(1, STEPS, f"block changed after version {block.version} was read; reading it again")
    raise TransientJobError(f"block {block_id} changed under each of {attempts} rewrite attempts; will try later",
                            code="block_busy")


def _skip_reason(block: Block | None, trigger: str | None, target: int) -> str | None:
    if block is None or block.deleted_at is not None:
        return "block_deleted"
    if block.read_only:
        return "block_read_only"
    if trigger == "threshold" and block.rewrite_strategy == RewriteStrategy.OFF.value:
        return "rewrites_off"
    if trigger == "threshold" and not blocks.over_threshold(block):
        return "under_threshold"
    if len(block.value) <= target:
        return "within_target"
    return None


def _result(meta: dict[str, Any], *, version: int, attempts: int | None) -> dict[str, Any]:
    return {"applied": True, "version": version, "attempts": attempts,
            **{key: value for key, value in meta.items() if key != "attempt"}}


async def _compute(ctx: JobContext, strategy: RewriteStrategy, provider: ProviderSettings | None, block: Block,
                   target: int) -> tuple[str, dict[str, Any]]:
    if strategy is RewriteStrategy.PRESERVE_RECENT:
        return rewriting.preserve_recent(block.value, target), {}
    if strategy is RewriteStrategy.PRESERVE_IMPORTANT:
        units = rewriting.units_of(block.value)
        vectors = await get_embedder().embed([u.text for u in units]) if units else []
        return rewriting.preserve_important(units, vectors, target), {"sentences_in": len(units)}
    assert provider is not None
    return await _summarize(ctx, provider, block, target)


async def _summarize(ctx: JobContext, provider: ProviderSettings, block: Block,
                     target: int) -> tuple[str, dict[str, Any]]:
    """The model's rewrite; asked once more if too long, then cut at a sentence if still too long."""
    client = LLMClient(provider, on_usage=ctx.record_usage)
    messages = rewriting.rewrite_messages(block.label, block.description, block.value, target)
    answer = await _ask(client, provider, messages, target)
    details: dict[str, Any] = {"model": provider.model, "llm_calls": 1}
    if len(answer) > target:
        answer = await _ask(client, provider, rewriting.shorten_messages(messages, answer, target), target)
        details["llm_calls"] = 2
        if len(answer) > target:
            answer = rewriting.trim_to(answer, target)
            details["trimmed"] = True
    return answer, details


async def _ask(client: LLMClient, provider: ProviderSettings, messages: list[dict[str, str]], target: int) -> str:
    result = await client.chat(messages, temperature=0.0, max_tokens=max_tokens_for(target))
    text = (result.content or "").strip()
    if not text:
        raise LLMOutputInvalid(f"the model {provider.model!r} returned an empty rewrite",
                               details={"finish_reason": result.finish_reason})
    return text
