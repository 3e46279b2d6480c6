"""Text-side pseudo-relevance feedback (RM3): the words of the first pass's best hits find a memory
that shares none of the query's words."""

from __future__ import annotations

from tests.integration.test_search import contents, search, store

STARTER = "My sourdough starter needs its levain fed with rye flour every morning."
ACETONE = "The sourdough starter smelled of acetone, so I fed the levain rye flour twice."
BAG = "Bought a big bag of rye flour for the levain."
BIKE = "The bike needs a new chain before the race."
QUERY = "How is my sourdough starter doing?"


async def test_text_feedback_adds_the_words_of_the_best_hits_to_the_query(client, scope):
    await store(client, scope, [{"content": c} for c in (STARTER, ACETONE, BAG, BIKE)])
    plain = contents(await search(client, query=QUERY, user_id=scope, mode="text", text_feedback=False))
    assert set(plain) == {STARTER, ACETONE}
    expanded = contents(await search(client, query=QUERY, user_id=scope, mode="text",
                                     text_feedback={"docs": 2, "terms": 5, "weight": 0.5}))
    assert set(expanded[:2]) == {STARTER, ACETONE}  # the query's own words still count most
    assert BAG in expanded and BIKE not in expanded
    hybrid = await search(client, query=QUERY, user_id=scope, text_feedback={"docs": 2, "terms": 5, "weight": 0.5})
    bag = next(h for h in hybrid["hits"] if h["memory"]["content"] == BAG)
    assert bag["explanation"]["text_score"] is not None


async def test_text_feedback_is_refused_in_vector_mode(client):
    response = await client.post("/api/v1/memories/search", json={"query": "q", "mode": "vector",
                                                                   "text_feedback": True})
    assert response.status_code == 422
