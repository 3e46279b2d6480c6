"""pipelines/memories/decisions.py: the LLM's decisions mapped from small ids back to memories, and never trusted."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from pipelines.memories.decisions import number_memories, plan
from schemas.enums import MemoryEvent
from schemas.extraction import FactDecision, MemoryDecisions

PARIS, PIZZA, DOG = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
SHOWN = number_memories([(PARIS, "Lives in Paris"), (PIZZA, "Likes pizza"), (PARIS, "Lives in Paris"),
                         (DOG, "Has a dog")])


def d(fact: int, event: str, id: int | None = None, text: str | None = None) -> FactDecision:
    return FactDecision(fact=fact, event=event, id=id, text=text)


def ops(result):
    return [(op.event.value, op.fact, op.memory_id, op.text, op.source) for op in result.operations]


def test_memories_are_numbered_from_zero_once_each_in_order_of_first_appearance():
    assert [(s.ref, s.memory_id) for s in SHOWN] == [(0, PARIS), (1, PIZZA), (2, DOG)]


def test_small_ids_map_back_to_the_memories_they_were_shown_for():
    facts = ["Moved to Lisbon", "Likes pizza", "No longer has a dog", "Plays chess"]
    result = plan(facts, SHOWN, [d(0, "UPDATE", 0, "Lives in Lisbon"), d(1, "NOOP", 1), d(2, "DELETE", 2),
                                 d(2, "ADD", text="Has no dog"), d(3, "ADD")])
    assert ops(result) == [
        ("UPDATE", 0, PARIS, "Lives in Lisbon", "llm"),
        ("NOOP", 1, PIZZA, None, "llm"),
        ("DELETE", 2, DOG, None, "llm"),
        ("ADD", 2, None, "Has no dog", "llm"),
        ("ADD", 3, None, "Plays chess", "llm"),
    ]
    assert result.operations[0].old_text == "Lives in Paris" and result.operations[2].old_text == "Has a dog"
    assert result.rejected == []


def test_an_invented_id_is_rejected_touches_nothing_and_the_fact_is_still_added():
    result = plan(["Lives in Lisbon"], SHOWN, [d(0, "UPDATE", 7, "Lives in Lisbon")])
    assert [(r.reason, r.decision) for r in result.rejected] == [
        ("unknown_id", {"fact": 0, "event": "UPDATE", "id": 7, "text": "Lives in Lisbon"})]
    assert ops(result) == [("ADD", 0, None, "Lives in Lisbon", "fallback")]
    assert not any(op.memory_id for op in result.operations)


def test_a_negative_id_or_a_delete_without_id_is_rejected():
    result = plan(["a", "b"], SHOWN, [d(0, "DELETE", -1), d(1, "DELETE")])
    assert [r.reason for r in result.rejected] == ["unknown_id", "missing_id"]
    assert {op.event for op in result.operations} == {MemoryEvent.ADD}


def test_a_decision_about_a_fact_that_does_not_exist_is_rejected():
    result = plan(["Lives in Lisbon"], SHOWN, [d(0, "NOOP", 0), d(3, "DELETE", 1)])
    assert [r.reason for r in result.rejected] == ["unknown_fact"]
    assert ops(result) == [("NOOP", 0, PARIS, None, "llm")]


def test_a_fact_whose_only_decision_is_a_delete_is_added_too():
    # "DELETE + ADD": the contradicted memory goes, the new fact stays.
    result = plan(["Lives in Lisbon"], SHOWN, [d(0, "DELETE", 0)])
    assert ops(result) == [("DELETE", 0, PARIS, None, "llm"), ("ADD", 0, None, "Lives in Lisbon", "fallback")]


def test_a_fact_the_model_skipped_is_added_as_it_is():
    result = plan(["Lives in Lisbon", "Plays chess"], SHOWN, [d(0, "UPDATE", 0, "Lives in Lisbon")])
    assert ops(result)[-1] == ("ADD", 1, None, "Plays chess", "fallback")


def test_a_second_change_to_the_same_memory_is_a_rejected_conflict():
    result = plan(["Lives in Lisbon", "Lives in Porto"], SHOWN,
                  [d(0, "UPDATE", 0, "Lives in Lisbon"), d(1, "DELETE", 0)])
    assert [r.reason for r in result.rejected] == ["conflict"]
    assert ops(result) == [("UPDATE", 0, PARIS, "Lives in Lisbon", "llm"),
                           ("ADD", 1, None, "Lives in Porto", "fallback")]


def test_an_update_without_text_takes_the_facts_text_and_one_to_the_same_text_is_a_noop():
    result = plan(["Lives in Lisbon", "Likes pizza"], SHOWN, [d(0, "UPDATE", 0), d(1, "UPDATE", 1, "Likes pizza")])
    assert ops(result) == [("UPDATE", 0, PARIS, "Lives in Lisbon", "llm"), ("NOOP", 1, PIZZA, None, "llm")]


def test_the_same_text_added_twice_in_one_answer_is_added_once():
    result = plan(["Plays chess", "Chess player"], SHOWN, [d(0, "ADD", text="Plays chess"),
                                                           d(1, "ADD", text="Plays chess")])
    assert [op.event.value for op in result.operations] == ["ADD", "NOOP"]


def test_model_drift_is_accepted_where_harmless():
    answer = MemoryDecisions.model_validate_json(
        '{"decisions": [{"fact": 0, "event": "none", "id": "1"}, {"fact": "1", "event": "Add", "text": "x"}]}')
    assert [(x.event, x.id, x.fact) for x in answer.decisions] == [("NOOP", 1, 0), ("ADD", None, 1)]


@pytest.mark.parametrize("raw", ['{"decisions": [{"fact": 0, "event": "MERGE", "id": 0}]}',
                                 '{"decisions": [{"event": "ADD"}]}',
                                 '{"decisions": [{"fact": 0, "event": "UPDATE", "id": "memory-3"}]}',
                                 '{"memory": []}'])
def test_malformed_decisions_fail_validation_so_the_client_asks_for_a_repair(raw):
    with pytest.raises(ValidationError):
        MemoryDecisions.model_validate_json(raw)
