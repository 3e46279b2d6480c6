"""Keyset pagination, newest first, over any table with `created_at` and `id`: one opaque cursor format."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import InvalidInput


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """Opaque keyset cursor for (created_at, id) descending pages."""
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor from `encode_cursor`; anything else is a 422 `invalid_cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor",
                           details={"cursor": cursor[:100]}) from exc


async def newest_first(session: AsyncSession, query: Select, model: Any, *, limit: int,
                       cursor: str | None) -> tuple[list[Any], str | None]:
    """One page of `query` ordered by (created_at, id) descending, and the cursor of the next page."""
    if cursor is not None:
        created, row_id = decode_cursor(cursor)
        query = query.where(or_(model.created_at < created, and_(model.created_at == created, model.id < row_id)))
    rows = list((await session.execute(
        query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1))).scalars())
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
