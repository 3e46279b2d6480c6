"""Passages: a fact in the last paragraph of a long memory is found by meaning, the memory comes back
whole and once, and a new content brings new passages."""

from __future__ import annotations

from tests.integration.test_search import contents, search, store
from tests.support.sse import finish

# About 3,000 characters on a garden; the last paragraph alone says who repairs the roof. The model
# reads about 256 word pieces, so the memory's own embedding never sees that paragraph.
OPENING = ("This spring we finally started on the garden behind the house. The soil was heavy clay, so we dug in "
           "compost and sand before planting anything, and we laid a gravel path between the beds. ")
MIDDLE = ("The tomatoes went along the south fence, the beans climbed a frame of hazel poles, and the herbs filled "
          "the raised bed by the kitchen door, where the basil wanted water every evening. ")
LAST = "One more thing: the roofer who will replace the broken slates on our roof next month is Ingrid."
LONG = OPENING + MIDDLE * 14 + "\n\n" + LAST
OTHERS = [
    "My brother plays the cello in a youth orchestra.",
    "The electrician fixed the kitchen lights on Monday.",
    "We booked a week of camping by the lake in August.",
    "I prefer green tea in the morning and coffee after lunch.",
    "The car needs new winter tyres before November.",
]
QUESTION = "Who is going to repair the roof tiles?"


async def test_a_fact_in_the_last_paragraph_of_a_long_memory_is_found_by_meaning(client, scope):
    await store(client, scope, [{"content": LONG}] + [{"content": c} for c in OTHERS])
    found = await search(client, query=QUESTION, user_id=scope, mode="vector", passages=True)
    assert contents(found)[0] == LONG  # the whole memory, not a passage of it
    assert contents(found).count(LONG) == 1
    # By its first passage only, the memory is about a garden: the question does not find it first.
    head_only = await search(client, query=QUESTION, user_id=scope, mode="vector", passages=False)
    assert contents(head_only)[0] != LONG
    by_passage = next(h["score"] for h in found["hits"] if h["memory"]["content"] == LONG)
    by_head = next(h["score"] for h in head_only["hits"] if h["memory"]["content"] == LONG)
    assert by_passage > by_head
    assert contents(await search(client, query=QUESTION, user_id=scope, passages=True))[0] == LONG  # hybrid too
    # Off by default (chosen on both development sets): the first passage only.
    assert contents(await search(client, query=QUESTION, user_id=scope, mode="vector")) == contents(head_only)


async def test_a_memory_edited_is_searched_by_its_new_passages_only(client, scope):
    ids = await store(client, scope, [{"content": LONG}] + [{"content": c} for c in OTHERS])
    edited = LONG.replace(LAST, "One more thing: the piano tuner comes to the house on the first Friday.")
    response = await client.patch(f"/api/v1/memories/{ids[LONG]}", json={"content": edited})
    assert response.status_code == 200, response.text
    assert (await finish(client, response.json()["job"]["id"]))["status"] == "succeeded"
    assert contents(await search(client, query=QUESTION, user_id=scope, mode="vector", passages=True))[0] != edited
    piano = await search(client, query="When does the piano get tuned?", user_id=scope, mode="vector",
                         passages=True)
    assert contents(piano)[0] == edited
