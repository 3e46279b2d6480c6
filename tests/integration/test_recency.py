"""Time in search: near-duplicates that disagree rank newest first, and time in the query ("last week",
"in March", "before the trip") boosts or filters by the memories' dates."""

from __future__ import annotations

from tests.integration.test_search import contents, search, store

PARIS = "My sister Clara lives in Paris, in a small flat near the river."
LYON = "My sister Clara lives in Lyon, in a small flat near the river."
CELLO = "My brother plays the cello in a youth orchestra."


async def test_near_duplicates_that_disagree_rank_newest_first(client, scope):
    # Stored newest first: the dates given at ingest decide, not the order of storing.
    await store(client, scope, [{"content": LYON, "metadata": {"date": "2024-03-02"}},
                                {"content": PARIS, "metadata": {"date": "2024-01-10"}},
                                {"content": CELLO, "metadata": {"date": "2023-12-01"}}])
    query = "Does my sister Clara live in Paris?"  # the older memory matches it best, by words and meaning
    without = contents(await search(client, query=query, user_id=scope, recency=False))
    assert without[:2] == [PARIS, LYON]
    assert contents(await search(client, query=query, user_id=scope))[:2] == [PARIS, LYON]  # off by default
    newest = contents(await search(client, query=query, user_id=scope, recency=True))
    assert newest[:2] == [LYON, PARIS]
    assert newest[2] == without[2] == CELLO  # a memory that is not a near-duplicate keeps its place


async def test_without_dates_the_later_stored_memory_is_the_newer(client, scope):
    await store(client, scope, [{"content": PARIS}, {"content": LYON}])
    hits = await search(client, query="Does my sister Clara live in Paris?", user_id=scope, recency=True)
    assert contents(hits) == [LYON, PARIS]


DIARY = [
    ("We cooked a mushroom risotto for dinner.", "2024-05-14"),  # last week, seen from 2024-05-20
    ("We cooked a lentil curry for dinner.", "2024-03-09"),  # in March
    ("We cooked a vegetable paella for dinner.", "2024-01-20"),  # before the trip
    ("We flew to Oslo for the ski trip.", "2024-02-01"),
    ("We cooked a pumpkin soup for dinner.", "2024-04-25"),
]
AS_OF = "2024-05-20T12:00:00+00:00"


async def test_time_in_the_query_filters_or_boosts_by_the_memories_dates(client, scope):
    await store(client, scope, [{"content": c, "metadata": {"date": d}} for c, d in DIARY])
    for query, expected in (("What did we cook for dinner last week?", DIARY[0][0]),
                            ("What did we cook for dinner in March?", DIARY[1][0]),
                            ("What did we cook for dinner before the ski trip?", DIARY[2][0])):
        for mode in ("vector", "text", "hybrid"):
            filtered = contents(await search(client, query=query, user_id=scope, mode=mode, time="filter",
                                             as_of=AS_OF))
            assert filtered == [expected], (query, mode, filtered)
        if "before" not in query:  # the trip's own memory matches the words best; "before" it filters
            # Boosted (the default), the dinner of that time comes before the other dinners.
            boosted = contents(await search(client, query=query, user_id=scope, as_of=AS_OF))
            assert [c for c in boosted if "dinner" in c][0] == expected, (query, boosted)
        off = contents(await search(client, query=query, user_id=scope, as_of=AS_OF, time="off"))
        assert len(off) == len(DIARY)
    # Seen from a year later, "last week" holds none of them.
    later = await search(client, query="What did we cook for dinner last week?", user_id=scope, time="filter",
                         as_of="2025-05-20T12:00:00+00:00")
    assert later["hits"] == []


async def test_without_a_metadata_date_a_memory_is_dated_by_when_it_was_stored(client, scope):
    await store(client, scope, [{"content": "We cooked a mushroom risotto for dinner."}])
    assert contents(await search(client, query="What did we cook today?", user_id=scope, time="filter"))
    assert not (await search(client, query="What did we cook in 2019?", user_id=scope, time="filter"))["hits"]
