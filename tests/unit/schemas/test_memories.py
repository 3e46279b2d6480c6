"""schemas/memories.py: what the API accepts as memories, batches, updates and searches."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.memories import MAX_BATCH_ITEMS, MAX_CONTENT_CHARS, MemoryBatchIn, MemoryIn, MemoryUpdate


def error_types(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {e["type"] for e in exc.value.errors()}


def error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple]:
    return {tuple(e["loc"]) for e in exc.value.errors()}


# --- MemoryIn ------------------------------------------------------------------------------------

def test_memory_in_accepts_content_and_defaults_metadata_to_an_empty_object():
    memory = MemoryIn.model_validate({"content": "likes green tea"})
    assert memory.content == "likes green tea"
    assert memory.metadata == {}
    assert (memory.user_id, memory.agent_id, memory.run_id) == (None, None, None)


def test_memory_in_rejects_empty_content():
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"content": ""})
    assert ("content",) in error_locs(exc)


@pytest.mark.parametrize("blank", [" ", "   \n\t  ", "\u3000"])
def test_memory_in_rejects_whitespace_only_content(blank):
    with pytest.raises(ValidationError, match="non-whitespace"):
        MemoryIn.model_validate({"content": blank})


def test_memory_in_accepts_content_of_exactly_max_content_chars():
    assert len(MemoryIn.model_validate({"content": "x" * MAX_CONTENT_CHARS}).content) == MAX_CONTENT_CHARS


def test_memory_in_rejects_content_over_max_content_chars():
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"content": "x" * (MAX_CONTENT_CHARS + 1)})
    assert error_types(exc) == {"string_too_long"}


def test_memory_in_rejects_unknown_fields():
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"content": "x", "colour": "red"})
    assert error_types(exc) == {"extra_forbidden"}
    assert error_locs(exc) == {("colour",)}


@pytest.mark.parametrize("metadata", ["a string", [1, 2], 3, True])
def test_memory_in_rejects_metadata_that_is_not_an_object(metadata):
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"content": "x", "metadata": metadata})
    assert error_locs(exc) == {("metadata",)}


@pytest.mark.parametrize("content", [123, 1.5, None, ["a"], {"text": "a"}])
def test_memory_in_rejects_content_that_is_not_a_string(content):
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"content": content})
    assert error_locs(exc) == {("content",)}


def test_memory_in_requires_content():
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"metadata": {"a": 1}})
    assert error_types(exc) == {"missing"}


def test_memory_in_strips_scope_ids_and_rejects_blank_ones():
    assert MemoryIn.model_validate({"content": "x", "user_id": "  alice "}).user_id == "alice"
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"content": "x", "agent_id": "   "})
    assert error_locs(exc) == {("agent_id",)}


# --- MemoryBatchIn -------------------------------------------------------------------------------

def test_memory_batch_in_rejects_an_empty_batch():
    with pytest.raises(ValidationError) as exc:
        MemoryBatchIn.model_validate({"items": []})
    assert error_types(exc) == {"too_short"}


def test_memory_batch_in_accepts_exactly_max_batch_items():
    batch = MemoryBatchIn.model_validate({"items": [{"content": "x"}] * MAX_BATCH_ITEMS})
    assert len(batch.items) == MAX_BATCH_ITEMS


def test_memory_batch_in_rejects_one_item_over_max_batch_items():
    with pytest.raises(ValidationError) as exc:
        MemoryBatchIn.model_validate({"items": [{"content": "x"}] * (MAX_BATCH_ITEMS + 1)})
    assert error_types(exc) == {"too_long"}


def test_memory_batch_in_reports_the_index_of_an_invalid_item():
    with pytest.raises(ValidationError) as exc:
        MemoryBatchIn.model_validate({"items": [{"content": "ok"}, {"content": "   "}]})
    assert error_locs(exc) == {("items", 1)}


def test_memory_batch_in_rejects_unknown_fields():
    with pytest.raises(ValidationError) as exc:
        MemoryBatchIn.model_validate({"items": [{"content": "x"}], "priority": 1})
    assert error_types(exc) == {"extra_forbidden"}


# --- MemoryUpdate --------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [{}, {"content": None}, {"metadata": None}, {"content": None, "metadata": None}])
def test_memory_update_needs_content_or_metadata(body):
    with pytest.raises(ValidationError, match="give `content`, `metadata`, `expires_at` or several"):
        MemoryUpdate.model_validate(body)


def test_memory_update_may_set_or_clear_expires_at_alone_but_needs_a_time_zone():
    assert MemoryUpdate.model_validate({"expires_at": None}).model_fields_set == {"expires_at"}
    assert MemoryUpdate.model_validate({"expires_at": "2030-01-01T00:00:00Z"}).expires_at.year == 2030
    with pytest.raises(ValidationError):
        MemoryUpdate.model_validate({"expires_at": "2030-01-01T00:00:00"})
    with pytest.raises(ValidationError, match="out of range"):
        MemoryUpdate.model_validate({"expires_at": "0001-01-01T00:00:00+23:59"})
    assert MemoryUpdate.model_validate({"expires_at": "2030-01-01T02:00:00+02:00"}).expires_at.hour == 0


def test_expires_at_is_refused_with_infer():
    with pytest.raises(ValidationError, match="not with `infer`"):
        MemoryBatchIn.model_validate({"infer": True, "items": [{"content": "x", "expires_at": "2030-01-01T00:00Z"}]})


@pytest.mark.parametrize("body", [{"content": "new text"}, {"metadata": {}}, {"metadata": {"k": 1}},
                                  {"content": "new text", "metadata": {"k": 1}}])
def test_memory_update_accepts_content_metadata_or_both(body):
    update = MemoryUpdate.model_validate(body)
    assert update.content == body.get("content")
    assert update.metadata == body.get("metadata")


def test_memory_update_rejects_whitespace_only_content():
    with pytest.raises(ValidationError, match="non-whitespace"):
        MemoryUpdate.model_validate({"content": "  \n "})


def test_memory_update_rejects_content_over_max_content_chars():
    with pytest.raises(ValidationError) as exc:
        MemoryUpdate.model_validate({"content": "x" * (MAX_CONTENT_CHARS + 1)})
    assert error_types(exc) == {"string_too_long"}


# --- infer and deduplicate ---------------------------------------------------------------------

def test_a_conversation_can_be_sent_as_messages_with_roles_as_mem0_clients_do():
    batch = MemoryBatchIn.model_validate({"messages": [{"role": "user", "content": "I live in Paris"},
                                                       {"role": "assistant", "content": "Noted!"}],
                                          "user_id": "alice", "infer": True})
    assert [(i.role, i.content) for i in batch.items] == [("user", "I live in Paris"), ("assistant", "Noted!")]
    assert batch.infer and not batch.deduplicate


def test_items_and_messages_together_are_refused():
    with pytest.raises(ValidationError) as exc:
        MemoryBatchIn.model_validate({"items": [{"content": "a"}], "messages": [{"content": "b"}]})
    assert "extra_forbidden" in error_types(exc)


def test_an_unknown_role_is_refused():
    with pytest.raises(ValidationError) as exc:
        MemoryIn.model_validate({"content": "hi", "role": "tool"})
    assert ("role",) in error_locs(exc)


def test_infer_refuses_messages_of_several_scopes():
    with pytest.raises(ValidationError, match="one scope"):
        MemoryBatchIn.model_validate({"infer": True, "items": [{"content": "a", "user_id": "u1"},
                                                               {"content": "b", "user_id": "u2"}]})
    # Without infer, items of several scopes are a normal batch.
    MemoryBatchIn.model_validate({"items": [{"content": "a", "user_id": "u1"}, {"content": "b", "user_id": "u2"}]})


def test_infer_refuses_a_conversation_longer_than_max_infer_chars():
    from schemas.memories import MAX_INFER_CHARS

    items = [{"content": "x" * 30_000}] * (MAX_INFER_CHARS // 30_000 + 1)
    with pytest.raises(ValidationError, match="at most"):
        MemoryBatchIn.model_validate({"infer": True, "items": items})
    MemoryBatchIn.model_validate({"items": items})
