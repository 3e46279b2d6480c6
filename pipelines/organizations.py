"""Organizations: every row of AgentMem belongs to one."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tables import Organization


async def ensure_organization(session: AsyncSession, name: str) -> Organization:
    """The organization called `name`, created if missing (safe under concurrent callers)."""
    await session.execute(pg_insert(Organization).values(id=uuid.uuid4(), name=name)
                          .on_conflict_do_nothing(index_elements=["name"]))
    return (await session.execute(select(Organization).where(Organization.name == name))).scalar_one()
