"""Core-memory blocks: labelled texts with a hard limit, versioned, rewritten shorter by a job when full."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited, note_for_audit
from api.routing import CheckedRoute
from core.errors import InvalidInput
from pipelines.blocks import rewrite as block_rewrite, store as blocks
from pipelines.jobs import lifecycle, rows as jobs
from pipelines.llm.configs import require_provider
from schemas.blocks import (
    BlockCreate,
    BlockOut,
    BlockRevert,
    BlockRewriteIn,
    BlockUpdate,
    BlockVersionOut,
    RewriteStrategy,
)
from schemas.common import ErrorOut, Page
from schemas.enums import JobKind
from schemas.jobs import JobOut
from schemas.permissions import Permission as P, Principal
from schemas.tables import Block

log = logging.getLogger(__name__)
router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/blocks", tags=["blocks"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.BLOCKS_READ))]
Writer = Annotated[Principal, Depends(Allow(P.BLOCKS_WRITE))]
NOT_FOUND = {404: {"model": ErrorOut, "description": "No such block in your organization"}}
CONFLICT = {409: {"model": ErrorOut, "description": "`version_conflict` (a stale `If-Match`; "
                                                    "`details.current_version`), `block_read_only` or "
                                                    "`block_label_taken`"}}


def _if_match(if_match: Annotated[str | None, Header(
        alias="If-Match", max_length=40, description='The block version you read (its ETag, e.g. `"3"`): the '
        'change applies only to that version, else 409 `version_conflict`. Omitted or `*`: any version.')] = None,
) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    raw = if_match.strip().removeprefix("W/").strip('"')
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidInput('If-Match must be one block version as its ETag, e.g. "3"', code="invalid_if_match",
                           details={"if_match": if_match[:40]})
    return int(raw)


IfMatch = Annotated[int | None, Depends(_if_match)]


async def commit_write(session: AsyncSession, who: Principal, block: Block, response: Response) -> BlockOut:
    """Commit a block write, with the rewrite job it calls for (if any) in the same transaction."""
    response.headers["ETag"] = f'"{block.version}"'
    job_id = await block_rewrite.rewrite_after_write(session, who, block)
    await lifecycle.commit(session)
    return BlockOut.from_row(block, job_id)


async def _check_strategy(session: AsyncSession, org_id: uuid.UUID, strategy: RewriteStrategy | None) -> None:
    if strategy is RewriteStrategy.SUMMARIZE:
        await require_provider(session, org_id)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BlockOut,
             responses={422: {"model": ErrorOut,
                              "description": "Invalid input, `block_too_long`, or "
                                             "`llm_not_configured` for `rewrite_strategy: summarize`"}})
@audited("block", target=lambda result: result.id, details=lambda result: {"label": result.label})
async def create_block(body: BlockCreate, session: SessionDep, who: Writer, response: Response) -> BlockOut:
    """Create a block (version 1). Attach it to agents with `POST /api/v1/agents/{id}/blocks/{block_id}`.

    A value longer than `limit` is refused with 422 `block_too_long`. A value past the rewrite
    threshold (`AGENTMEM_BLOCK_REWRITE_THRESHOLD` of the limit) queues a `block_rewrite` job, named by
    `rewrite_job_id`. The `ETag` header is the version.
    """
    await _check_strategy(session, who.org_id, body.rewrite_strategy)
    block = await blocks.create_block(session, who.org_id, body, actor=who.actor)
    return await commit_write(session, who, block, response)


@router.get("", response_model=Page[BlockOut])
async def list_blocks(session: SessionDep, who: Reader,
                      label: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
                      user_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
                      agent_id: uuid.UUID | None = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50,
                      cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[BlockOut]:
    """List blocks newest first, optionally by label, by user, or attached to an agent."""
    rows, next_cursor = await blocks.list_blocks(session, who.org_id, label=label, user_id=user_id,
                                                 agent_id=agent_id, limit=limit, cursor=cursor)
    return Page[BlockOut](items=[BlockOut.from_row(b) for b in rows], next_cursor=next_cursor)


@router.get("/{block_id}", response_model=BlockOut, responses=NOT_FOUND)
async def get_block(block_id: uuid.UUID, session: SessionDep, who: Reader, response: Response) -> BlockOut:
    """Read one block; the `ETag` header is its version."""
    block = await blocks.get_block(session, who.org_id, block_id)
    response.headers["ETag"] = f'"{block.version}"'
    return BlockOut.from_row(block)


@router.patch("/{block_id}", response_model=BlockOut, responses={**NOT_FOUND, **CONFLICT})
@audited("block", target=lambda block_id: block_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_block(block_id: uuid.UUID, body: BlockUpdate, session: SessionDep, who: Writer, response: Response,
                       expected: IfMatch = None) -> BlockOut:
    """Change a block; every change is a new version.

    Send `If-Match: "<version>"` (the ETag you read) so a concurrent change is never overwritten: a
    stale version is 409 `version_conflict` with `details.current_version`. Without `If-Match` the
    change applies to whatever version is current (still versioned). A value longer than the limit
    is 422 `block_too_long` and nothing is written. A read-only block refuses every change but
    `read_only: false` (409 `block_read_only`). Past the rewrite threshold a `block_rewrite` job is
    queued (`rewrite_job_id`).
    """
    await _check_strategy(session, who.org_id, body.rewrite_strategy)
    block, _ = await blocks.update_block(session, who.org_id, block_id, body, expected_version=expected,
                                               actor=who.actor)
    return await commit_write(session, who, block, response)


@router.delete("/{block_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={**NOT_FOUND, **CONFLICT})
@audited("block", target=lambda block_id: block_id, failed_too=True)
async def delete_block(block_id: uuid.UUID, session: SessionDep, who: Writer, expected: IfMatch = None) -> Response:
    """Delete a block (soft): it is detached from every agent; `If-Match` as for `PATCH`."""
    await blocks.delete_block(session, who.org_id, block_id, expected_version=expected, actor=who.actor)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{block_id}/versions", response_model=Page[BlockVersionOut], responses=NOT_FOUND)
async def list_block_versions(block_id: uuid.UUID, session: SessionDep, who: Reader,
                              limit: Annotated[int, Query(ge=1, le=500)] = 100,
                              cursor: Annotated[str | None, Query(max_length=20)] = None) -> Page[BlockVersionOut]:
    """A block's versions, oldest first: each the block as it was after a create, update, revert or rewrite,
    with who made it (or the `block_rewrite` job) and why."""
    rows, next_cursor = await blocks.list_versions(session, who.org_id, block_id, limit=limit, cursor=cursor)
    return Page[BlockVersionOut](items=[BlockVersionOut.from_row(v) for v in rows], next_cursor=next_cursor)


@router.post("/{block_id}/revert", response_model=BlockOut, responses={**NOT_FOUND, **CONFLICT})
@audited("block", target=lambda block_id: block_id, failed_too=True,
         details=lambda body: {"reverted_to": body.version})
async def revert_block(block_id: uuid.UUID, body: BlockRevert, session: SessionDep, who: Writer, response: Response,
                       expected: IfMatch = None) -> BlockOut:
    """Bring back an earlier version's label, value, limit and description as a new version (history is never
    rewritten). `If-Match` as for `PATCH`; 404 for a version the block never had."""
    block = await blocks.revert_block(session, who.org_id, block_id, body.version, expected_version=expected,
                                      actor=who.actor)
    return await commit_write(session, who, block, response)


@router.post("/{block_id}/rewrite", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "`block_read_only`, or the "
                                                                             "Idempotency-Key reused"},
                        422: {"model": ErrorOut, "description": "Invalid input, or `llm_not_configured` for "
                                                                "`summarize`"},
                        429: {"model": ErrorOut, "description": "Rate limit or a job quota reached"}})
@audited("job", target=lambda result: result.id,
         details=lambda block_id, strategy: {"block_id": str(block_id), "strategy": strategy.value})
async def rewrite_block(block_id: uuid.UUID, body: BlockRewriteIn, session: SessionDep, who: Writer,
                        response: Response, key: IdempotencyKey = None) -> JobOut:
    """Queue a `block_rewrite` job that rewrites the block shorter, to about `target_chars`.

    Strategies: `summarize` (the organization's LLM), `preserve_important` (the most central sentences,
    offline), `preserve_recent` (the newest sentences and lines, offline), `auto`. The job applies its
    text only to the version it read: if the block changes meanwhile it reads it again and starts over,
    so no write is ever lost. The text before stays in the versions. Follow the job at
    `GET /api/v1/jobs/{id}/events`.
    """
    block = await blocks.get_block(session, who.org_id, block_id)
    strategy = block_rewrite.requested_strategy(block, body.strategy)
    if not await jobs.key_used(session, who.org_id, key):  # a replay gets its job back regardless
        await block_rewrite.check_request(session, block, strategy)
    payload = block_rewrite.rewrite_payload(block, strategy=strategy, target_chars=body.target_chars,
                                            trigger="requested")
    job, _ = await lifecycle.submit(session, who, kind=JobKind.BLOCK_REWRITE, payload=payload,
                                    total=block_rewrite.STEPS, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    note_for_audit(strategy=strategy)
    return JobOut.from_row(job)
