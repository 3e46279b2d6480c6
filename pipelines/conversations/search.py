"""Conversation search: an organization's messages, found by meaning and by words.

Messages are a search corpus like memories (an embedding, a generated `fts` column), and are ranked by
memory search's own pipeline (`pipelines/memories/search.rank`): nearest neighbours by HNSW iterative
scan, or an exact scan of a small scope; BM25 over full-text search; convex fusion and pseudo-relevance
feedback in `hybrid`, with the service's search settings. A message whose embedding is not computed yet
(a finished turn embeds its messages in the background) is found by its words only.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from core.settings import get_settings
from pipelines.agents.store import get_agent
from pipelines.conversations.store import get_conversation
from pipelines.memories.corpus import Corpus
from pipelines.memories.feedback import feedback_for
from pipelines.memories.search import MAX_CANDIDATES, Plan, load_rows, rank
from schemas.conversations import MessageSearchIn
from schemas.tables import Message

MESSAGES = Corpus(Message, tracks_model=True)
# What a reader means by "what was said": tool results and system notes only when asked for.
DEFAULT_ROLES = ("user", "assistant")


def narrowing_clauses(query: MessageSearchIn) -> list[ColumnElement[bool]]:
    """What narrows a message search within its organization: roles, agent, user, conversation."""
    clauses = [Message.role.in_(DEFAULT_ROLES if query.roles is None else sorted(set(query.roles)))]
    if query.agent_id is not None:
        clauses.append(Message.agent_id == query.agent_id)
    if query.user_id is not None:
        clauses.append(Message.user_id == query.user_id)
    if query.conversation_id is not None:
        clauses.append(Message.conversation_id == query.conversation_id)
    return clauses


async def search_messages(session: AsyncSession, org_id: uuid.UUID, query: MessageSearchIn, *,
                          scope: list | None = None) -> list[tuple[Message, float]]:
    """The organization's live messages best matching the query, best first, each with its mode's score.

    An `agent_id` or `conversation_id` that names no live agent or conversation of the organization is
    NotFound (`not_found`, `conversation_not_found`). `scope` (SQL clauses on `Message`) narrows further,
    beyond what a request can say.
    """
    if query.agent_id is not None:
        await get_agent(session, org_id, query.agent_id)
    if query.conversation_id is not None:
        await get_conversation(session, org_id, query.conversation_id)
    clauses = MESSAGES.org_clauses(org_id) + narrowing_clauses(query) + list(scope or [])
    # The default roles are most of an organization's messages: its (cached) size bounds their number
    # closely enough, so such a search is not counted row by row.
    whole_org = (query.roles is None and not scope
                 and query.agent_id is None and query.user_id is None and query.conversation_id is None)
    depth = min(MAX_CANDIDATES, max(query.top_k, get_settings().search_candidates))
    hits, _ = await rank(session, MESSAGES, org_id, query.query, query.mode, clauses, whole_org=whole_org,
                         depth=depth, plan=Plan(feedback=feedback_for(query.mode)))
    page = await load_rows(session, MESSAGES, hits[:query.top_k])
    return [(hit.row, hit.score(query.mode)) for hit in page]
