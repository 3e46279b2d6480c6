"""Search: each mode on a fixture where meaning finds what keywords miss and keywords find what meaning
misses; hybrid fusion, explanations, filters, cursor pages, and deleted memories never showing."""

from __future__ import annotations

import math
import statistics

import pytest

from core.timing import parse_header
from tests.support.sse import finish

# The embedding model reads the first 256 word pieces; the name at the end of this long memory is
# visible to full-text search and to the memory's last passage only: with `passages: false`, a keyword
# finds what meaning misses.
GARDEN = " ".join(
    ["The tomatoes on the balcony grew tall this summer and the basil wanted more water than usual."] * 14)
LONG = GARDEN + " The plumber Zdravko comes on Tuesday."
PEANUTS = "I am allergic to peanuts."
FIXTURE = [
    {"content": LONG, "metadata": {"topic": "garden", "rating": 4, "tags": ["home", "plants"]}},
    {"content": "Our neighbour Zoran lent us a ladder.", "metadata": {"topic": "neighbours", "rating": 2}},
    {"content": PEANUTS, "metadata": {"topic": "health", "rating": 5, "tags": ["medical"]}},
    {"content": "My sister lives in Lisbon and works as an architect.", "metadata": {"topic": "family", "rating": 3}},
    {"content": "The electrician Marko fixed the kitchen lights.", "metadata": {"topic": "home", "rating": 1}},
]


async def store(client, scope, items=FIXTURE) -> dict[str, str]:
    job = (await client.post("/api/v1/memories", json={"items": items, "user_id": scope})).json()
    assert (await finish(client, job["id"]))["status"] == "succeeded"
    listed = (await client.get("/api/v1/memories", params={"user_id": scope, "limit": 100})).json()["items"]
    return {m["content"]: m["id"] for m in listed}


async def search(client, **body) -> dict:
    response = await client.post("/api/v1/memories/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def contents(result: dict) -> list[str]:
    return [h["memory"]["content"] for h in result["hits"]]


async def test_meaning_finds_what_keywords_miss_and_keywords_find_what_meaning_misses(client, scope):
    await store(client, scope)
    meaning = "What food makes me sick?"  # shares no word with the peanut memory
    assert contents(await search(client, query=meaning, user_id=scope, mode="vector"))[0] == PEANUTS
    assert PEANUTS not in contents(await search(client, query=meaning, user_id=scope, mode="text"))
    assert contents(await search(client, query=meaning, user_id=scope, mode="hybrid"))[0] == PEANUTS

    keyword = "Zdravko"  # past the embedding's reach in the long memory
    by_text = await search(client, query=keyword, user_id=scope, mode="text")
    assert contents(by_text) == [LONG]
    # The memory's own embedding (its first passage) does not see the name; its last passage does.
    by_vector = contents(await search(client, query=keyword, user_id=scope, mode="vector", passages=False))
    assert by_vector[0] != LONG, "the embedding should not see the name at the end of the long memory"
    # rrf sees only ranks and puts the one text match first. The default (convex, tuned on questions)
    # weighs meaning four times more: the word lifts the memory, not necessarily to the top.
    assert contents(await search(client, query=keyword, user_id=scope, fusion="rrf"))[0] == LONG

    def fused_of_long(result: dict) -> float:
        return next(h["score"] for h in result["hits"] if h["memory"]["content"] == LONG)

    hybrid = await search(client, query=keyword, user_id=scope, passages=False)
    without_words = await search(client, query=keyword, user_id=scope, weights={"vector": 1, "text": 0},
                                 passages=False)
    assert fused_of_long(hybrid) > fused_of_long(without_words)


async def test_each_hit_explains_its_scores_ranks_and_fusion(client, scope):
    await store(client, scope)
    weights = {"vector": 1.0, "text": 0.5, "rrf_k": 40}
    result = await search(client, query="plumber Zdravko ladder", user_id=scope, top_k=5, weights=weights,
                          fusion="rrf")
    assert result["mode"] == "hybrid"
    for hit in result["hits"]:
        why = hit["explanation"]
        expected = sum(w / (40 + rank) for w, rank in ((1.0, why["vector_rank"]), (0.5, why["text_rank"])) if rank)
        assert why["fused_score"] == pytest.approx(expected) == pytest.approx(hit["score"])
        assert (why["vector_score"] is None) == (why["vector_rank"] is None)
        assert (why["text_score"] is None) == (why["text_rank"] is None)
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)
    both = [h for h in result["hits"] if h["explanation"]["text_rank"] and h["explanation"]["vector_rank"]]
    assert both, "a memory matching the words and the meaning is ranked by both sides"


async def test_server_timing_says_where_a_search_spent_its_time(client, scope):
    await store(client, scope)
    expected = {"vector": {"auth", "scope", "embed", "vector", "load", "app"},
                "text": {"auth", "scope", "text", "load", "app"},
                "hybrid": {"auth", "scope", "embed", "text", "vector", "load", "app"}}
    for mode, stages in expected.items():
        response = await client.post("/api/v1/memories/search", json={"query": "peanut allergy", "user_id": scope,
                                                                      "mode": mode})
        assert response.status_code == 200
        timings = parse_header(response.headers["server-timing"])
        assert stages <= set(timings), (mode, timings)
        assert mode == "text" or "embed" in timings  # the query is embedded only when meaning is searched
        assert ("text" in timings) == (mode != "vector")
        assert all(ms >= 0 for ms in timings.values())
        # The whole request took at least as long as any one stage of it.
        assert timings["app"] >= max(ms for name, ms in timings.items() if name != "app")


async def test_convex_fusion_mixes_standardized_scores(client, scope):
    await store(client, scope)
    # The fixture's five memories are every candidate, so the page holds both whole lists.
    result = await search(client, query="plumber Zdravko ladder", user_id=scope, top_k=10,
                          weights={"vector": 1.0, "text": 0.5, "adapt": 0})
    hits = [h["explanation"] for h in result["hits"]]

    def standardized(side: str) -> tuple[dict[int, float], float]:
        scores = {i: why[f"{side}_score"] for i, why in enumerate(hits) if why[f"{side}_score"] is not None}
        mean = statistics.fmean(scores.values())
        spread = statistics.pstdev(scores.values()) or 1.0
        z = {i: (v - mean) / spread for i, v in scores.items()}
        return z, min(z.values())

    (zv, floor_v), (zt, floor_t) = standardized("vector"), standardized("text")
    assert len(zv) == 5 and 1 <= len(zt) < 5
    for i, why in enumerate(hits):
        mixed = (1.0 * zv.get(i, floor_v) + 0.5 * zt.get(i, floor_t)) / 1.5
        assert why["fused_score"] == pytest.approx(0.5 * (1 + math.erf(mixed / math.sqrt(2))))
        assert 0 < why["fused_score"] < 1
    assert [h["score"] for h in result["hits"]] == sorted((h["score"] for h in result["hits"]), reverse=True)


async def test_weights_per_request_change_the_fusion(client, scope):
    await store(client, scope)
    text_only = await search(client, query="Zdravko", user_id=scope, weights={"vector": 0, "text": 1}, fusion="rrf")
    assert [h["explanation"]["fused_score"] > 0 for h in text_only["hits"]].count(True) == 1
    vector_only = await search(client, query="Zdravko", user_id=scope, weights={"vector": 1, "text": 0})
    ranked = [h for h in vector_only["hits"] if h["explanation"]["vector_rank"]]
    assert [h["memory"]["content"] for h in ranked] == contents(
        await search(client, query="Zdravko", user_id=scope, mode="vector"))


@pytest.mark.parametrize("filters, expected", [
    ({"field": "metadata.topic", "op": "eq", "value": "health"}, {PEANUTS}),
    ({"field": "metadata.topic", "op": "in", "value": ["health", "garden"]}, {PEANUTS, LONG}),
    ({"field": "metadata.topic", "op": "nin", "value": ["health", "garden", "home"]},
     {"Our neighbour Zoran lent us a ladder.", "My sister lives in Lisbon and works as an architect."}),
    ({"field": "metadata.rating", "op": "gte", "value": 4}, {PEANUTS, LONG}),
    ({"field": "metadata.tags", "op": "contains", "value": "medical"}, {PEANUTS}),
    ({"field": "metadata.topic", "op": "contains", "value": "eigh"}, {"Our neighbour Zoran lent us a ladder."}),
    ({"OR": [{"field": "metadata.rating", "op": "lt", "value": 2},
             {"AND": [{"field": "metadata.topic", "op": "eq", "value": "family"},
                      {"field": "metadata.rating", "op": "eq", "value": 3}]}]},
     {"The electrician Marko fixed the kitchen lights.", "My sister lives in Lisbon and works as an architect."}),
])
async def test_structured_filters_narrow_every_mode(client, scope, filters, expected):
    await store(client, scope)
    for mode in ("vector", "hybrid"):
        found = set(contents(await search(client, query="home and family", user_id=scope, mode=mode,
                                          filters=filters, top_k=20)))
        assert found == expected, mode


async def test_created_at_range_and_scope_filters(client, scope):
    await store(client, scope)
    later = scope + "-later"
    await store(client, later, [{"content": "The plumber Zdravko sent the invoice."}])
    first = (await client.get("/api/v1/memories", params={"user_id": later})).json()["items"][0]
    everything = {"field": "user_id", "op": "in", "value": [scope, later]}
    after = await search(client, query="Zdravko", mode="text", created_after=first["created_at"],
                         filters=everything)
    assert contents(after) == ["The plumber Zdravko sent the invoice."]
    before = await search(client, query="Zdravko", mode="text", filters={"AND": [
        everything, {"field": "created_at", "op": "lt", "value": first["created_at"]}]})
    assert contents(before) == [LONG]


async def test_cursor_pages_cover_the_ranking_once(client, scope):
    items = [{"content": f"Note {i}: the garden hose is in the shed number {i}."} for i in range(12)]
    await store(client, scope, items)
    whole = contents(await search(client, query="where is the garden hose", user_id=scope, top_k=12))
    pages, cursor = [], None
    while True:
        body = {"query": "where is the garden hose", "user_id": scope, "top_k": 5}
        body |= {"cursor": cursor} if cursor else {}
        page = await search(client, **body)
        pages.extend(contents(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == whole and len(pages) == 12


async def test_a_cursor_from_another_search_is_refused(client, scope):
    await store(client, scope)
    first = await search(client, query="Zdravko ladder Lisbon", user_id=scope, top_k=1)
    assert first["next_cursor"]
    reused = await client.post("/api/v1/memories/search", json={"query": "peanuts", "user_id": scope,
                                                                "top_k": 1, "cursor": first["next_cursor"]})
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "invalid_cursor"


async def test_deleted_memories_never_appear_in_any_mode(client, scope):
    ids = await store(client, scope)
    assert (await client.delete(f"/api/v1/memories/{ids[LONG]}")).status_code == 204
    for mode in ("vector", "text", "hybrid"):
        assert LONG not in contents(await search(client, query="Zdravko", user_id=scope, mode=mode))


async def test_a_query_of_stop_words_finds_nothing_by_text_but_still_by_meaning(client, scope):
    await store(client, scope)
    assert (await search(client, query="the and of", user_id=scope, mode="text"))["hits"] == []
    assert (await search(client, query="the and of", user_id=scope, mode="vector"))["hits"]


async def test_feedback_refines_the_query_on_request_in_vector_and_hybrid(client, scope):
    await store(client, scope)
    query = "what food makes me ill"
    plain = await search(client, query=query, user_id=scope, mode="vector")
    assert plain["refined"] is False  # vector mode is plain nearest neighbours unless asked
    cosine = {h["memory"]["id"]: h["score"] for h in plain["hits"]}
    refined = await search(client, query=query, user_id=scope, mode="vector", feedback={"docs": 2, "weight": 1.0})
    assert refined["refined"] is True
    moved = {h["memory"]["id"]: h["score"] for h in refined["hits"]}
    assert set(moved) == set(cosine) and moved != cosine  # same scope, scores against the refined query
    # The two hits that refined it now sit closer to the query than before.
    top_two = [h["memory"]["id"] for h in plain["hits"][:2]]
    assert all(moved[i] > cosine[i] for i in top_two)

    hybrid = await search(client, query=query, user_id=scope)  # on in hybrid by default (chosen on both sets)
    assert hybrid["refined"] is True
    off = await search(client, query=query, user_id=scope, feedback=False)
    assert off["refined"] is False
    # Without feedback, hybrid's vector side is the plain cosine.
    assert all(h["explanation"]["vector_score"] == pytest.approx(cosine[h["memory"]["id"]])
               for h in off["hits"] if h["explanation"]["vector_score"] is not None)
    assert (await search(client, query=query, user_id=scope, feedback={"docs": 2, "weight": 0}))["refined"] is False


async def test_similarity_is_absolute_where_the_hybrid_score_is_relative(client, scope):
    ids = await store(client, scope)
    query = "what food should I avoid?"
    before = await search(client, query=query, user_id=scope)
    assert contents(before)[0] == PEANUTS
    # Refined or not, `similarity` is the cosine to the query as asked: vector mode without feedback says so.
    plain = {h["memory"]["id"]: h["score"] for h in (await search(client, query=query, user_id=scope,
                                                                   mode="vector"))["hits"]}
    for hit in before["hits"]:
        if hit["explanation"]["similarity"] is not None:
            assert hit["explanation"]["similarity"] == pytest.approx(plain[hit["memory"]["id"]], abs=1e-5)
    related = await search(client, query=query, user_id=scope, min_similarity=0.3)
    assert contents(related) == [PEANUTS]

    # The one related memory deleted: the best of the unrelated rest still scores high in hybrid (relative
    # to the candidates), while its similarity stays low and `min_similarity` returns nothing.
    assert (await client.delete(f"/api/v1/memories/{ids[PEANUTS]}")).status_code == 204
    after = await search(client, query=query, user_id=scope)
    assert after["hits"] and after["hits"][0]["score"] > 0.5
    assert all(h["explanation"]["similarity"] is None or h["explanation"]["similarity"] < 0.3
               for h in after["hits"])
    assert (await search(client, query=query, user_id=scope, min_similarity=0.3))["hits"] == []
    assert (await search(client, query=query, user_id=scope, mode="vector", min_similarity=0.3))["hits"] == []


@pytest.mark.parametrize("body, code", [
    ({"query": "q", "mode": "fuzzy"}, "invalid_input"),
    ({"query": "q", "mode": "text", "min_similarity": 0.3}, "invalid_input"),
    ({"query": "q", "mode": "text", "feedback": True}, "invalid_input"),
    ({"query": "q", "feedback": {"docs": 0}}, "invalid_input"),
    ({"query": "q", "weights": {"vector": -1, "text": 1}}, "invalid_input"),
    ({"query": "q", "filters": {"field": "content", "op": "eq", "value": "x"}}, "invalid_input"),
    ({"query": "q", "cursor": "bm90LWEtY3Vyc29y"}, "invalid_cursor"),
])
async def test_bad_search_input_is_a_422_with_a_code(client, body, code):
    response = await client.post("/api/v1/memories/search", json=body)
    assert response.status_code == 422 and response.json()["error"]["code"] == code
