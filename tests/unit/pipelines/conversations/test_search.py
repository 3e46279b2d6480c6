"""What narrows a message search: the default roles, and each scope a request names."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql

from pipelines.conversations.search import narrowing_clauses
from schemas.conversations import MessageSearchIn


def sql(clauses) -> list[str]:
    return [str(c.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})) for c in clauses]


def test_by_default_only_user_and_assistant_messages_are_searched():
    assert sql(narrowing_clauses(MessageSearchIn(query="q"))) == ["messages.role IN ('user', 'assistant')"]


def test_asked_roles_replace_the_default():
    assert sql(narrowing_clauses(MessageSearchIn(query="q", roles=["tool", "system", "tool"]))) == \
        ["messages.role IN ('system', 'tool')"]


def test_each_named_scope_narrows():
    agent, conversation = uuid.UUID(int=1), uuid.UUID(int=2)
    clauses = sql(narrowing_clauses(MessageSearchIn(query="q", agent_id=agent, user_id="alice",
                                                    conversation_id=conversation)))
    assert clauses[1:] == [f"messages.agent_id = '{agent}'", "messages.user_id = 'alice'",
                           f"messages.conversation_id = '{conversation}'"]


@pytest.mark.parametrize("body", [{"query": ""}, {"query": "q", "roles": []}, {"query": "q", "roles": ["robot"]},
                                  {"query": "q", "top_k": 101}, {"query": "q", "feedback": True}])
def test_a_search_the_api_cannot_run_is_refused(body):
    with pytest.raises(ValidationError):
        MessageSearchIn(**body)
