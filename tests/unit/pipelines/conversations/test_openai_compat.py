"""pipelines/conversations/openai_compat.py without sockets: the streamed text across steps and retried
attempts, and the status a failed turn answers with."""

from __future__ import annotations

import uuid

import pytest

from pipelines.conversations.openai_compat import STEP_SEPARATOR, TurnFailed, _Text


def test_each_steps_text_is_sent_as_it_comes_and_steps_are_separated_by_a_blank_line():
    said = _Text()
    assert [said.add(1, "Let "), said.add(1, "me look."), said.add(2, "Tea"), said.add(2, ".")] == [
        "Let ", "me look.", f"{STEP_SEPARATOR}Tea", "."]


def test_a_step_without_text_before_adds_no_separator():
    said = _Text()
    assert said.add(2, "Answer") == "Answer"


def test_a_retried_attempt_sends_only_what_goes_beyond_what_was_sent():
    said = _Text()
    assert said.add(1, "Hello wor") == "Hello wor"
    said.restart()  # the worker died: the step streams again from its start
    assert [said.add(1, "Hello "), said.add(1, "world"), said.add(1, "!")] == ["", "ld", "!"]


@pytest.mark.parametrize("code,status", [("llm_rejected", 502), ("llm_unavailable", 503), ("cancelled", 409),
                                         ("time_limit_exceeded", 504), ("llm_not_configured", 422),
                                         ("internal_error", 500), ("something_new", 500)])
def test_a_failed_turn_keeps_its_code_and_says_whose_fault_it_was(code, status):
    job_id = uuid.uuid4()
    error = TurnFailed(code, "why", job_id)
    assert (error.status_code, error.code, error.details) == (status, code, {"job_id": str(job_id)})
    assert error.headers["x-should-retry"] == "false" and error.headers["X-Job-Id"] == str(job_id)
    assert TurnFailed.status_code == 500  # the status is the instance's, not the class's
