"""Conversation search (POST /api/v1/messages/search): messages found by words and by meaning, narrowed by
agent, user, conversation and role; never another organization's, never deleted ones; bad requests refused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from core.db import session_scope
from pipelines.conversations.search import search_messages
from schemas.conversations import MessageSearchIn
from schemas.permissions import Role
from schemas.tables import Message
from tests.support.tenants import Tenant

PEANUTS = "I am allergic to peanuts."
PLUMBER = "The plumber Zdravko comes on Tuesday."           # never embedded: found by its words only
SISTER = "My sister lives in Lisbon and works as an architect."
GARAGE = "Zdravko also fixed the light in the garage."
TOOL_RESULT = "Zdravko: calendar entry created for Tuesday."
DELETED = "Zdravko asked me to forget this message."
ELSEWHERE = "Zdravko told the other organization that I am allergic to peanuts."


@dataclass
class World:
    """An organization's agents, conversations and messages, by name."""

    agents: dict[str, str] = field(default_factory=dict)
    conversations: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)  # content → id


async def embed(stack, texts: list[str]) -> list[list[float]]:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(stack.model_url + "/v1/embeddings",
                                     json={"model": "all-MiniLM-L6-v2", "input": texts})
    response.raise_for_status()
    return [item["embedding"] for item in response.json()["data"]]


def as_text(vector: list[float]) -> str:
    return "[" + ",".join(map(str, vector)) + "]"


async def make_agent(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/agents", json={"name": f"agent-{uuid.uuid4().hex[:8]}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def seed(stack, db, client: httpx.AsyncClient, org_id: uuid.UUID,
               conversations: dict[str, tuple[str, str | None, list[tuple[str, str, bool]]]]) -> World:
    """conversations: name → (agent name, user_id, [(role, content, embedded)]), written straight to the tables."""
    world = World()
    for agent, _, _ in conversations.values():
        if agent not in world.agents:
            world.agents[agent] = await make_agent(client)
    for name, (agent, user_id, messages) in conversations.items():
        conversation_id = world.conversations[name] = str(uuid.uuid4())
        await db("INSERT INTO conversations (id, org_id, agent_id, user_id, last_seq) "
                 "VALUES (:id, :org, :agent, :user, :n)",
                 id=conversation_id, org=org_id, agent=world.agents[agent], user=user_id, n=len(messages))
        vectors = iter(await embed(stack, [content for _, content, embedded in messages if embedded] or ["-"]))
        for seq, (role, content, embedded) in enumerate(messages, start=1):
            message_id = world.messages[content] = str(uuid.uuid4())
            # As a turn stores them: the vector with the model that made it (the stack's).
            await db("INSERT INTO messages (id, org_id, conversation_id, agent_id, user_id, seq, role, content, "
                     "embedding, embedding_model) VALUES (:id, :org, :conversation, :agent, :user, :seq, :role, "
                     ":content, CAST(:vector AS vector), :model)",
                     id=message_id, org=org_id, conversation=conversation_id, agent=world.agents[agent], user=user_id,
                     seq=seq, role=role, content=content, vector=as_text(next(vectors)) if embedded else None,
                     model="all-MiniLM-L6-v2" if embedded else None)
    return world


@pytest.fixture
async def world(stack, db, tenant, owner) -> World:
    world = await seed(stack, db, owner, tenant.org_id, {
        "alice-a": ("a", "alice", [("user", PEANUTS, True), ("assistant", "Noted: no peanuts in any recipe.", True),
                                   ("user", PLUMBER, False), ("tool", TOOL_RESULT, True), ("user", DELETED, True)]),
        "bob-a": ("a", "bob", [("user", SISTER, True), ("assistant", "Lisbon is lovely in spring.", True)]),
        "alice-b": ("b", "alice", [("user", GARAGE, True)]),
    })
    await db("UPDATE messages SET deleted_at = now() WHERE id = :id", id=world.messages[DELETED])
    return world


@pytest.fixture
async def elsewhere(stack, db, other_tenant, as_role) -> World:
    """The other organization's conversation: it shares words and meaning with `world`'s."""
    return await seed(stack, db, as_role(Role.OWNER, of=other_tenant), other_tenant.org_id,
                      {"other": ("x", "alice", [("user", ELSEWHERE, True)])})


async def search(client: httpx.AsyncClient, **body) -> list[str]:
    response = await client.post("/api/v1/messages/search", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["mode"] == body.get("mode", "hybrid")
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True)
    return [hit["message"]["content"] for hit in result["hits"]]


async def test_words_find_messages_even_before_they_are_embedded(owner, world):
    assert set(await search(owner, query="Zdravko", mode="text")) == {PLUMBER, GARAGE}
    # Hybrid too: the text side alone finds the message that has no embedding yet.
    assert PLUMBER in await search(owner, query="Zdravko Tuesday")
    assert PLUMBER not in await search(owner, query="Zdravko Tuesday", mode="vector")


async def test_meaning_finds_a_paraphrase_that_shares_no_word(owner, world):
    question = "What food makes me sick?"
    assert (await search(owner, query=question, mode="vector"))[0] == PEANUTS
    assert PEANUTS not in await search(owner, query=question, mode="text")
    assert (await search(owner, query=question))[0] == PEANUTS


async def test_hits_carry_the_whole_message(owner, world):
    response = await owner.post("/api/v1/messages/search", json={"query": "peanuts", "mode": "text", "top_k": 1})
    [hit] = response.json()["hits"]
    assert hit["message"]["id"] == world.messages[PEANUTS]
    assert hit["message"]["conversation_id"] == world.conversations["alice-a"]
    assert (hit["message"]["seq"], hit["message"]["role"]) == (1, "user")
    assert hit["score"] > 0


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
async def test_search_is_narrowed_to_a_conversation_a_user_or_an_agent(owner, world, mode):
    query = "Zdravko Lisbon peanuts garage"
    alice_a = {PEANUTS, PLUMBER, "Noted: no peanuts in any recipe."}
    found = await search(owner, query=query, mode=mode, conversation_id=world.conversations["alice-a"])
    assert found and set(found) <= alice_a
    found = await search(owner, query=query, mode=mode, user_id="bob")
    assert found and set(found) <= {SISTER, "Lisbon is lovely in spring."}
    found = await search(owner, query=query, mode=mode, agent_id=world.agents["b"])
    assert found == [GARAGE]
    found = await search(owner, query=query, mode=mode, agent_id=world.agents["a"], user_id="alice")
    assert found and set(found) <= alice_a


async def test_tool_and_system_messages_only_when_their_role_is_asked_for(owner, world):
    assert TOOL_RESULT not in await search(owner, query="calendar entry", mode="text")
    assert await search(owner, query="calendar entry", mode="text", roles=["tool"]) == [TOOL_RESULT]
    assert set(await search(owner, query="Zdravko", mode="text", roles=["tool", "user"])) == \
        {PLUMBER, GARAGE, TOOL_RESULT}


async def test_another_organizations_messages_never_appear(owner, world, elsewhere, as_role, other_tenant):
    for mode in ("hybrid", "vector", "text"):
        found = await search(owner, query="Zdravko allergic to peanuts", mode=mode, top_k=100)
        assert ELSEWHERE not in found and PEANUTS in found
    theirs = as_role(Role.OWNER, of=other_tenant)
    for mode in ("hybrid", "vector", "text"):
        assert await search(theirs, query="Zdravko allergic to peanuts", mode=mode, top_k=100) == [ELSEWHERE]
    # Naming this organization's conversation or agent is, for them, naming nothing.
    response = await theirs.post("/api/v1/messages/search",
                                 json={"query": "peanuts", "conversation_id": world.conversations["alice-a"]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "conversation_not_found"
    response = await theirs.post("/api/v1/messages/search", json={"query": "peanuts", "agent_id": world.agents["a"]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_deleted_messages_and_conversations_never_appear(owner, world, db):
    for mode in ("hybrid", "vector", "text"):
        assert DELETED not in await search(owner, query="forget this message", mode=mode, top_k=100)
    # Deleting a conversation deletes its messages (as the store does); naming it is then a 404.
    await db("UPDATE conversations SET deleted_at = now() WHERE id = :id", id=world.conversations["alice-b"])
    await db("UPDATE messages SET deleted_at = now() WHERE conversation_id = :id", id=world.conversations["alice-b"])
    assert await search(owner, query="Zdravko", mode="text") == [PLUMBER]
    response = await owner.post("/api/v1/messages/search",
                                json={"query": "Zdravko", "conversation_id": world.conversations["alice-b"]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "conversation_not_found"


async def test_unknown_conversation_or_agent_is_a_404_naming_it(owner, world):
    missing = str(uuid.uuid4())
    response = await owner.post("/api/v1/messages/search", json={"query": "Zdravko", "conversation_id": missing})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "conversation_not_found" and error["details"]["conversation_id"] == missing
    response = await owner.post("/api/v1/messages/search", json={"query": "Zdravko", "agent_id": missing})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    deleted = world.agents["b"]
    assert (await owner.delete(f"/api/v1/agents/{deleted}")).status_code == 204
    response = await owner.post("/api/v1/messages/search", json={"query": "Zdravko", "agent_id": deleted})
    assert response.status_code == 404 and response.json()["error"]["details"]["agent_id"] == deleted


STATE = """SELECT 'message', (to_jsonb(m) - 'embedding' - 'fts')::text FROM messages m WHERE m.org_id = :org
UNION ALL SELECT 'conversation', to_jsonb(c)::text FROM conversations c WHERE c.org_id = :org ORDER BY 1, 2"""


@pytest.mark.parametrize("body, field", [
    ({"query": ""}, "query"),
    ({"query": "x" * 2001}, "query"),
    ({"query": "Zdravko", "roles": []}, "roles"),
    ({"query": "Zdravko", "roles": ["robot"]}, "roles"),
    ({"query": "Zdravko", "mode": "fuzzy"}, "mode"),
    ({"query": "Zdravko", "top_k": 0}, "top_k"),
    ({"query": "Zdravko", "conversation_id": "not-a-uuid"}, "conversation_id"),
    ({"query": "Zdravko", "cursor": "abc"}, "cursor"),
])
async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(owner, world, db, tenant, body, field):
    before = await db(STATE, org=tenant.org_id)
    response = await owner.post("/api/v1/messages/search", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert any(field in [str(part) for part in detail["loc"]] for detail in error["details"]["errors"]), error
    assert await db(STATE, org=tenant.org_id) == before


async def test_a_viewer_may_search_and_a_key_without_the_scope_may_not(world, as_role, owner):
    assert set(await search(as_role(Role.VIEWER), query="Zdravko", mode="text")) == {PLUMBER, GARAGE}
    response = await owner.post("/api/v1/api-keys", json={"name": "memories only", "role": "viewer",
                                                          "scopes": ["memories:read"]})
    assert response.status_code == 201, response.text
    narrow = as_role(headers={"Authorization": f"Bearer {response.json()['key']}"})
    refused = await narrow.post("/api/v1/messages/search", json={"query": "Zdravko"})
    assert refused.status_code == 403, refused.text


async def test_a_callers_scope_clauses_narrow_the_search_further(world, tenant: Tenant):
    # The agent's `conversation_search` tool adds clauses a request can't say (here: past its first messages).
    async with session_scope() as session:
        hits = await search_messages(session, tenant.org_id, MessageSearchIn(query="Zdravko peanuts", mode="text"),
                                     scope=[Message.seq > 1])
    assert {message.content for message, _ in hits} == {PLUMBER, "Noted: no peanuts in any recipe."}
