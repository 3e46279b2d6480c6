"""Messages across conversations: search by meaning and by words."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.admission import SearchSlot
from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import not_audited
from api.routing import CheckedRoute
from pipelines.conversations import search
from schemas.common import ErrorOut
from schemas.conversations import MessageHit, MessageOut, MessageSearchIn, MessageSearchOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/messages", tags=["conversations"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.CONVERSATIONS_READ))]


@router.post("/search", response_model=MessageSearchOut, responses={404: {
    "model": ErrorOut, "description": "`agent_id` (`not_found`) or `conversation_id` (`conversation_not_found`) "
                                      "names no live agent or conversation of the organization"}})
@not_audited
async def search_messages(slot: SearchSlot, body: MessageSearchIn, session: SessionDep,
                          who: Reader) -> MessageSearchOut:
    """Find what was said in the organization's conversations, by meaning and by words.

    The same search as memories': `mode` `hybrid` (default) fuses `vector` (embedding cosine similarity)
    and `text` (full-text, BM25), with the service's tuned weights. Narrow by `agent_id`, `user_id` and
    `conversation_id`; `roles` defaults to `user` and `assistant` (add `tool` or `system` to search tool
    results and system notes too). Deleted messages and conversations never appear. A message is
    found by its words as soon as it is written, by its meaning once its embedding is computed (shortly
    after the agent's turn ends).

    Under a burst, a few searches run at once and a few more wait briefly; the rest are refused at
    once with `503 overloaded` and `Retry-After` (see `AGENTMEM_SEARCH_CONCURRENCY`).
    """
    hits = await search.search_messages(session, who.org_id, body)
    return MessageSearchOut(mode=body.mode, hits=[MessageHit(message=MessageOut.from_row(message), score=score)
                                                  for message, score in hits])
