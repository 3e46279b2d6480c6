"""Core-memory blocks: create, read, change, revert, delete, each change a new version.

Every write takes the block's row lock, checks the caller's expected version (`If-Match`), bumps
`version` and records the block as it now is in `block_versions`, in the same transaction: the
history is complete and its numbering gap-free. Rewrite jobs write through `apply_rewrite`, a
compare-and-swap on the version they read, so a change made meanwhile is never overwritten.
A value longer than the block's limit is refused (`block_too_long`), never truncated; the database
refuses it too (a CHECK constraint).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, InvalidInput, NotFound
from core.settings import get_settings
from pipelines.pages import newest_first
from schemas.blocks import BlockCreate, BlockUpdate, BlockVersionReason, RewriteStrategy
from schemas.tables import AgentBlock, Block, BlockVersion

# PATCH field → column.
_COLUMNS = {"label": "label", "value": "value", "limit": "char_limit", "description": "description",
            "read_only": "read_only", "user_id": "user_id", "rewrite_strategy": "rewrite_strategy",
            "metadata": "meta"}


def label_taken(label: str, agent_id: uuid.UUID | None = None) -> Conflict:
    """The 409 for a label already used by another block of an agent."""
    where = f" of agent {agent_id}" if agent_id else " of an agent this block is attached to"
    return Conflict(f"another block{where} is labelled {label!r}: labels are unique among an agent's blocks",
                    code="block_label_taken", details={"label": label, **({"agent_id": str(agent_id)}
                                                                         if agent_id else {})})


def _check_fits(value: str, limit: int) -> None:
    settings = get_settings()
    if limit > settings.block_max_limit:
        raise InvalidInput(f"a block's limit may be at most {settings.block_max_limit} characters",
                           details={"limit": limit, "max_limit": settings.block_max_limit})
    if len(value) > limit:
        raise InvalidInput(f"the value has {len(value)} characters, over the block's limit of {limit}; nothing "
                           "was written (shorten it, raise the limit, or rewrite the block)", code="block_too_long",
                           details={"chars": len(value), "limit": limit})


def check_version(block: Block, expected: int | None) -> None:
    """Refuse a write made against another version than the current one (409 `version_conflict`)."""
    if expected is not None and expected != block.version:
        raise Conflict(f"block {block.id} is at version {block.version}, not {expected}: read it again and "
                       "re-apply your change", code="version_conflict",
                       details={"block_id": str(block.id), "current_version": block.version,
                                "expected_version": expected})


def _check_writable(block: Block, change: dict[str, Any]) -> None:
    if block.read_only and change.get("read_only") is not False:
        raise Conflict(f"block {block.id} is read-only: send `read_only: false` to change it", code="block_read_only",
                       details={"block_id": str(block.id)})


async def get_block(session: AsyncSession, org_id: uuid.UUID, block_id: uuid.UUID, *,
                    for_update: bool = False) -> Block:
    """A live block of the organization (NotFound otherwise), optionally with its row lock."""
    query = select(Block).where(Block.id == block_id, Block.org_id == org_id, Block.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    block = (await session.execute(query)).scalar_one_or_none()
    if block is None:
        raise NotFound(f"block {block_id} not found", details={"block_id": str(block_id)})
    return block


async def record_version(session: AsyncSession, block: Block, reason: BlockVersionReason, *, actor: str | None,
                         job_id: uuid.UUID | None = None, meta: dict[str, Any] | None = None) -> None:
    """Store the block as it is now as its version `block.version` (the caller holds its row lock)."""
    session.add(BlockVersion(block_id=block.id, org_id=block.org_id, version=block.version, reason=reason.value,
                             label=block.label, value=block.value, char_limit=block.char_limit,
                             description=block.description, read_only=block.read_only, meta=meta or {},
                             actor=actor, job_id=job_id))
    await session.flush()


async def create_block(session: AsyncSession, org_id: uuid.UUID, data: BlockCreate, *, actor: str | None) -> Block:
    """Insert a block as version 1."""
    limit = data.limit or get_settings().block_default_limit
    _check_fits(data.value, limit)
    block = Block(org_id=org_id, label=data.label, value=data.value, char_limit=limit, description=data.description,
                  read_only=data.read_only, user_id=data.user_id, rewrite_strategy=data.rewrite_strategy.value,
                  meta=data.metadata)
    session.add(block)
    await session.flush()
    await session.refresh(block)
    await record_version(session, block, BlockVersionReason.CREATE, actor=actor)
    return block


async def _write(session: AsyncSession, block: Block, values: dict[str, Any], reason: BlockVersionReason, *,
                 actor: str | None, meta: dict[str, Any] | None = None) -> Block:
    """Apply `values` to a locked block as its next version."""
    if "label" in values and values["label"] != block.label:
        try:
            async with session.begin_nested():
                await session.execute(update(AgentBlock).where(AgentBlock.block_id == block.id)
                                      .values(label=values["label"]))
        except IntegrityError:
            raise label_taken(values["label"]) from None
    row = (await session.execute(
        update(Block).where(Block.id == block.id)
        .values(**values, version=Block.version + 1, updated_at=text("now()"))
        .returning(Block).execution_options(populate_existing=True))).scalar_one()
    await record_version(session, row, reason, actor=actor, meta=meta)
    return row


async def update_block(session: AsyncSession, org_id: uuid.UUID, block_id: uuid.UUID, change: BlockUpdate, *,
                       expected_version: int | None, actor: str | None) -> tuple[Block, bool]:
    """Apply a change as a new version; (block, changed). Unchanged fields make no version."""
    block = await get_block(session, org_id, block_id, for_update=True)
    check_version(block, expected_version)
    fields = change.model_dump(exclude_unset=True)
    _check_writable(block, fields)
    values = {_COLUMNS[name]: (value.value if isinstance(value, RewriteStrategy) else value)
              for name, value in fields.items()}
    values = {column: value for column, value in values.items() if getattr(block, column) != value}
    if not values:
        return block, False
    _check_fits(values.get("value", block.value), values.get("char_limit", block.char_limit))
    return await _write(session, block, values, BlockVersionReason.UPDATE, actor=actor), True


async def revert_block(session: AsyncSession, org_id: uuid.UUID, block_id: uuid.UUID, version: int, *,
                       expected_version: int | None, actor: str | None) -> Block:
    """Bring back an old version's label, value, limit and description, as a new version."""
    block = await get_block(session, org_id, block_id, for_update=True)
    check_version(block, expected_version)
    _check_writable(block, {})
    old = (await session.execute(select(BlockVersion).where(
        BlockVersion.block_id == block.id, BlockVersion.version == version))).scalar_one_or_none()
    if old is None:
        raise NotFound(f"block {block_id} has no version {version}",
                       details={"block_id": str(block_id), "version": version, "current_version": block.version})
    _check_fits(old.value, old.char_limit)
    values = {"label": old.label, "value": old.value, "char_limit": old.char_limit, "description": old.description}
    return await _write(session, block, values, BlockVersionReason.REVERT, actor=actor,
                        meta={"reverted_to": version})


async def delete_block(session: AsyncSession, org_id: uuid.UUID, block_id: uuid.UUID, *,
                       expected_version: int | None, actor: str | None) -> None:
    """Soft-delete a block and detach it from every agent; its versions stay."""
    block = await get_block(session, org_id, block_id, for_update=True)
    check_version(block, expected_version)
    _check_writable(block, {})
    await session.execute(AgentBlock.__table__.delete().where(AgentBlock.block_id == block.id))
    row = (await session.execute(
        update(Block).where(Block.id == block.id)
        .values(version=Block.version + 1, deleted_at=text("now()"), updated_at=text("now()"))
        .returning(Block).execution_options(populate_existing=True))).scalar_one()
    await record_version(session, row, BlockVersionReason.DELETE, actor=actor)


async def apply_rewrite(session: AsyncSession, block_id: uuid.UUID, *, based_on: int, value: str,
                        job_id: uuid.UUID, meta: dict[str, Any]) -> Block | None:
    """Compare-and-swap a rewritten value onto the version it was computed from; None if the block moved on."""
    row = (await session.execute(
        update(Block).where(Block.id == block_id, Block.version == based_on, Block.deleted_at.is_(None),
                            Block.read_only.is_(False), Block.char_limit >= len(value))
        .values(value=value, version=Block.version + 1, updated_at=text("now()"))
        .returning(Block).execution_options(populate_existing=True))).scalar_one_or_none()
    if row is not None:
        await record_version(session, row, BlockVersionReason.REWRITE, actor=None, job_id=job_id, meta=meta)
    return row


async def list_blocks(session: AsyncSession, org_id: uuid.UUID, *, label: str | None, user_id: str | None,
                      agent_id: uuid.UUID | None, limit: int, cursor: str | None) -> tuple[list[Block], str | None]:
    """A page of live blocks, newest first, optionally by label, user or agent attached to."""
    query = select(Block).where(Block.org_id == org_id, Block.deleted_at.is_(None))
    if label is not None:
        query = query.where(Block.label == label)
    if user_id is not None:
        query = query.where(Block.user_id == user_id)
    if agent_id is not None:
        query = query.where(Block.id.in_(select(AgentBlock.block_id).where(
            AgentBlock.agent_id == agent_id, AgentBlock.org_id == org_id)))
    return await newest_first(session, query, Block, limit=limit, cursor=cursor)


async def list_versions(session: AsyncSession, org_id: uuid.UUID, block_id: uuid.UUID, *, limit: int,
                        cursor: str | None) -> tuple[list[BlockVersion], str | None]:
    """A page of a block's versions, oldest first; a deleted block's stay readable. NotFound for other orgs."""
    exists = (await session.execute(select(Block.id).where(Block.id == block_id, Block.org_id == org_id))).first()
    if exists is None:
        raise NotFound(f"block {block_id} not found", details={"block_id": str(block_id)})
    query = select(BlockVersion).where(BlockVersion.block_id == block_id, BlockVersion.org_id == org_id)
    if cursor is not None:
        if not cursor.isdigit() or len(cursor) > 9:
            raise InvalidInput("cursor is not one this API issued", code="invalid_cursor",
                               details={"cursor": cursor[:100]})
        query = query.where(BlockVersion.version > int(cursor))
    rows = list((await session.execute(query.order_by(BlockVersion.version).limit(limit + 1))).scalars())
    next_cursor = str(rows[limit - 1].version) if len(rows) > limit else None
    return rows[:limit], next_cursor


def over_threshold(block: Block) -> bool:
    """Whether the block is fuller than the rewrite threshold."""
    return len(block.value) > get_settings().block_rewrite_threshold * block.char_limit


def needs_rewrite(block: Block) -> bool:
    """Whether a write left the block in need of an automatic rewrite."""
    return (not block.read_only and block.rewrite_strategy != RewriteStrategy.OFF.value and over_threshold(block))
