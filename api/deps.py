"""Request dependencies: the database session, the acting principal, the Idempotency-Key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import sessionmaker
from core.settings import get_settings
from pipelines.organizations import ensure_organization


async def get_session() -> AsyncIterator[AsyncSession]:
    """One session per request; routes commit what they mean to keep."""
    async with sessionmaker()() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    """Who is acting, and for which organization. Every query filters by `org_id`."""

    org_id: uuid.UUID
    name: str


_default_org: uuid.UUID | None = None


async def current_principal() -> Principal:
    """Until authentication lands, every request acts as the default organization: the one place that changes."""
    global _default_org
    if _default_org is None:
        async with sessionmaker()() as session:
            org = await ensure_organization(session, get_settings().default_org_name)
            await session.commit()
        _default_org = org.id
    return Principal(org_id=_default_org, name=get_settings().default_org_name)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255, min_length=1,
    description="Repeat a request safely: the same key and body return the same job; "
                "the same key with another body is a 409.")]
