"""Search memories by meaning: pgvector HNSW cosine search within an organization and scope."""

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.embedder import get_embedder
from schemas.memories import MemorySearchIn
from schemas.tables import Memory


async def search_memories(session: AsyncSession, org_id: uuid.UUID, query: MemorySearchIn) -> list[tuple[Memory, float]]:
    """Top-k live memories by cosine similarity to the query, filtered by scope and metadata."""
    [vector] = await get_embedder().embed([query.query])
    # Filters are applied during the HNSW scan (iterative scan) so a narrow scope still fills top_k.
    await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    await session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, 2 * query.top_k)}"))
    distance = Memory.embedding.cosine_distance(vector)
    stmt = select(Memory, distance.label("distance")).where(
        Memory.org_id == org_id, Memory.deleted_at.is_(None), Memory.embedding.is_not(None))
    for column, value in ((Memory.user_id, query.user_id), (Memory.agent_id, query.agent_id),
                          (Memory.run_id, query.run_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if query.metadata:
        stmt = stmt.where(Memory.meta.op("@>")(query.metadata))
    rows = (await session.execute(stmt.order_by(distance).limit(query.top_k))).all()
    hits = sorted(((memory, 1.0 - float(dist)) for memory, dist in rows), key=lambda h: -h[1])
    if query.min_score is not None:
        hits = [h for h in hits if h[1] >= query.min_score]
    return hits
