"""Time in queries: relative expressions read against when the query is asked."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.memories.timeref import TimeRef, parse

TODAY = date(2024, 5, 20)


@pytest.mark.parametrize("query, start, end", [
    ("What did I cook last week?", date(2024, 5, 6), date(2024, 5, 21)),
    ("what happened this week", date(2024, 5, 13), date(2024, 5, 21)),
    ("Where did I go 3 days ago?", date(2024, 5, 16), date(2024, 5, 19)),
    ("What did we talk about yesterday", date(2024, 5, 19), date(2024, 5, 20)),
    ("What did I buy in March?", date(2024, 3, 1), date(2024, 4, 1)),
    ("what did I plan for December", date(2023, 12, 1), date(2024, 1, 1)),  # the latest December
    ("the meeting on March 3rd, 2023", date(2023, 3, 3), date(2023, 3, 4)),
    ("what did I eat in the past two weeks", date(2024, 5, 6), date(2024, 5, 21)),
    ("anything in 2022?", date(2022, 1, 1), date(2023, 1, 1)),
    ("what changed since April", date(2024, 4, 1), None),
    ("what did I read before 2024-02-10", None, date(2024, 2, 10)),
    ("what did I read after 2024-02-10", date(2024, 2, 11), None),
])
def test_a_time_expression_becomes_a_span_of_days(query, start, end):
    assert parse(query, TODAY) == TimeRef(start, end)


@pytest.mark.parametrize("query", ["I may go to the march", "Have I used this before?", "What is my sister's name?",
                                   "last time we spoke you said",
                                   # a month to come: plans are dated by when they were told
                                   "what are my plans for next November?", "the trip this coming June"])
def test_a_query_without_a_time_gets_none(query):
    assert parse(query, TODAY) is None


def test_before_an_event_named_in_words_is_anchored_on_that_event():
    ref = parse("What did I buy before the trip to Paris?", TODAY)
    assert ref == TimeRef(relation="before", event="the trip to paris")
    assert ref.around(date(2024, 4, 2)) == TimeRef(None, date(2024, 4, 2))
    after = parse("what did we cook after our move?", TODAY)
    assert after.around(date(2024, 4, 2)) == TimeRef(date(2024, 4, 3), None)


@pytest.mark.parametrize("query, today", [("what did I do last week or in March", date(9999, 12, 31)),
                                          ("what happened 3 days ago", date(1, 1, 1)),
                                          ("plans for next year", date(9999, 12, 31))])
def test_a_span_past_the_calendar_is_no_time_rather_than_an_error(query, today):
    assert parse(query, today) is None
