"""schemas/openai_compat.py: what a chat completion request must be, and chunks as OpenAI sends them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.conversations import MAX_MESSAGE_CHARS
from schemas.openai_compat import ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Delta


def request(*messages, **fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "agent", "messages": list(messages), **fields})


def test_the_new_message_is_the_last_one_and_text_parts_are_joined():
    body = request({"role": "system", "content": "ignored"}, {"role": "user", "content": "old"},
                   {"role": "assistant", "content": None},
                   {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                   temperature=0.2, max_tokens=10, seed=7, response_format={"type": "text"})
    assert body.new_message() == "a\nb"


@pytest.mark.parametrize("last,problem", [
    ({"role": "assistant", "content": "hi"}, "must be the user's new message"),
    ({"role": "user", "content": "   "}, "needs some text"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}, "only text"),
    ({"role": "user", "content": [{"type": "text", "text": "x" * MAX_MESSAGE_CHARS}] * 2}, "longer than"),
])
def test_a_request_must_end_with_a_user_message_the_agent_can_read(last, problem):
    with pytest.raises(ValidationError, match=problem):
        request({"role": "user", "content": "before"}, last)


def test_only_one_choice_is_offered():
    with pytest.raises(ValidationError):
        request({"role": "user", "content": "hi"}, n=2)


def test_a_chunk_leaves_unset_delta_fields_out_and_keeps_null_finish_reasons():
    chunk = ChatCompletionChunk(id="chatcmpl-1", created=1, model="m", choices=[ChunkChoice(delta=Delta(content="x"))])
    wire = json.loads(chunk.model_dump_json())
    assert wire["choices"] == [{"index": 0, "delta": {"content": "x"}, "finish_reason": None, "logprobs": None}]
    assert wire["object"] == "chat.completion.chunk"
