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
    with pytest.raises(ValidationError, match="`model` can't be null"):
        LlmConfigUpdate(model=None)


def test_the_output_says_whether_a_key_is_set_and_never_holds_it():
    now = datetime.now(UTC)
    row = SimpleNamespace(id=uuid.uuid4(), name="main", provider="openai", chat_model="gpt", base_url=None,
                          api_version=None, api_key_encrypted="gAAAA-encrypted", api_key_hint="…abcd",
                          max_concurrency=4, timeout_seconds=60.0, max_retries=4, is_default=True,
                          created_at=now, updated_at=now)
    out = LlmConfigOut.from_row(row)
    assert out.api_key_set and out.api_key_hint == "…abcd" and "gAAAA" not in out.model_dump_json()
    assert "api_key" not in LlmConfigOut.model_fields
    row.api_key_encrypted = None
    assert not LlmConfigOut.from_row(row).api_key_set and LlmConfigOut.from_row(row).api_key_hint is None
