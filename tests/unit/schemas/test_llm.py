"""schemas/llm.py: what a provider configuration must contain, and that the API key never comes back out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from schemas.llm import LlmConfigCreate, LlmConfigOut, LlmConfigUpdate


@pytest.mark.parametrize("body, complaint", [
    ({"base_url": "ftp://models.example/v1"}, "http:// or https://"),
    ({"base_url": "localhost:11434"}, "http:// or https://"),
    ({"base_url": None}, "needs `base_url`"),
    ({"provider": "azure", "base_url": "https://res.openai.azure.com"}, "needs `api_version`"),
    ({"provider": "azure", "api_version": "2024-10-21", "base_url": None}, "needs `base_url`"),
    ({"max_concurrency": 0}, "greater than or equal to 1"),
    ({"name": ""}, "at least 1 character"),
    ({"surprise": True}, "Extra inputs are not permitted"),
    ({"requests_per_minute": 0}, "greater than or equal to 1"),
    ({"tokens_per_minute": -5}, "greater than or equal to 1"),
    ({"tokens_per_minute": 3_000_000_000}, "less than or equal to 2000000000"),  # the column is a 32-bit integer
    ({"context_window": 100}, "greater than or equal to 512"),
    ({"prompt_price_per_million": -0.01}, "greater than or equal to 0"),
    ({"completion_price_per_million": float("inf")}, "finite number"),
    ({"prompt_price_per_million": float("nan")}, "finite number"),
])
def test_incomplete_or_wrong_configurations_are_refused(body, complaint):
    with pytest.raises(ValidationError, match=complaint):
        LlmConfigCreate(**({"name": "main", "model": "m", "base_url": "http://localhost:11434/v1"} | body))


def test_valid_configurations():
    assert LlmConfigCreate(name="a", model="gpt-4o-mini", provider="openai").base_url is None
    azure = LlmConfigCreate(name="b", model="deploy", provider="azure", base_url="https://res.openai.azure.com/",
                            api_version="2024-10-21", api_key="sk-secret-value")
    assert azure.base_url == "https://res.openai.azure.com"
    assert azure.api_key.get_secret_value() == "sk-secret-value" and "sk-secret-value" not in repr(azure)


def test_an_update_tells_omitted_from_null():
    assert LlmConfigUpdate().model_fields_set == set()
    assert LlmConfigUpdate(api_key=None).model_fields_set == {"api_key"}
    # A limit or a price set to null is removed; bounds still hold for a value.
    assert LlmConfigUpdate(requests_per_minute=None, prompt_price_per_million=None).model_fields_set == {
        "requests_per_minute", "prompt_price_per_million"}
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        LlmConfigUpdate(requests_per_minute=0)
    with pytest.raises(ValidationError, match="`model` can't be null"):
        LlmConfigUpdate(model=None)


def test_the_output_says_whether_a_key_is_set_and_never_holds_it():
    now = datetime.now(UTC)
    row = SimpleNamespace(id=uuid.uuid4(), name="main", provider="openai", chat_model="gpt", base_url=None,
                          api_version=None, api_key_encrypted="gAAAA-encrypted", api_key_hint="…abcd",
                          max_concurrency=4, timeout_seconds=60.0, max_retries=4, is_default=True,
                          created_at=now, updated_at=now, requests_per_minute=None, tokens_per_minute=None,
                          context_window=None, prompt_price_per_million=None, completion_price_per_million=None)
    out = LlmConfigOut.from_row(row)
    assert out.api_key_set and out.api_key_hint == "…abcd" and "gAAAA" not in out.model_dump_json()
    assert "api_key" not in LlmConfigOut.model_fields
    assert out.requests_per_minute is None and out.prompt_price_per_million is None
    row.requests_per_minute, row.prompt_price_per_million = 60, 0.15
    assert LlmConfigOut.from_row(row).model_dump(include={"requests_per_minute", "prompt_price_per_million"}) == {
        "requests_per_minute": 60, "prompt_price_per_million": 0.15}
    row.api_key_encrypted = None
    assert not LlmConfigOut.from_row(row).api_key_set and LlmConfigOut.from_row(row).api_key_hint is None
