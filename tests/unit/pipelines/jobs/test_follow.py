"""pipelines/jobs/follow.py, the pure parts: Last-Event-ID validation and stream position ordering."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from pipelines.jobs.follow import _after, check_last_event_id


@pytest.mark.parametrize("value", [None, ""])
def test_check_last_event_id_treats_missing_or_empty_as_none(value):
    assert check_last_event_id(value) is None


@pytest.mark.parametrize("value", ["0-0", "1-0", "1732250000000-0", "1732250000000-17"])
def test_check_last_event_id_passes_stream_ids_through(value):
    assert check_last_event_id(value) == value


@pytest.mark.parametrize("value", ["abc", "1", "1-2-3", "-1-0", "1-", "-1", " 1-0", "1-0 ", "1.5-0", "1-0\n"])
def test_check_last_event_id_rejects_anything_else_with_invalid_last_event_id(value):
    with pytest.raises(InvalidInput) as exc:
        check_last_event_id(value)
    assert exc.value.code == "invalid_last_event_id"
    assert exc.value.status_code == 422


def test_check_last_event_id_error_quotes_at_most_100_characters():
    with pytest.raises(InvalidInput) as exc:
        check_last_event_id("x" * 500)
    assert exc.value.details == {"last_event_id": "x" * 100}


@pytest.mark.parametrize(("entry_id", "position"), [
    ("2-0", "1-0"),
    ("1-1", "1-0"),
    ("10-0", "9-99"),      # numeric, not string, comparison of the milliseconds
    ("5-10", "5-9"),       # and of the sequence number
    ("1-0", "0-0"),
])
def test_after_is_true_for_entries_later_than_the_position(entry_id, position):
    assert _after(entry_id, position) is True


@pytest.mark.parametrize(("entry_id", "position"), [
    ("1-0", "1-0"),
    ("1-0", "2-0"),
    ("9-99", "10-0"),
    ("5-9", "5-10"),
])
def test_after_is_false_for_the_position_itself_and_earlier_entries(entry_id, position):
    assert _after(entry_id, position) is False


def test_after_is_false_for_an_event_without_an_id():
    assert _after(None, "0-0") is False
