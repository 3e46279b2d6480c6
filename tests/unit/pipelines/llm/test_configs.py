"""pipelines/llm/configs.py without a database: the service-wide provider read from settings."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from core.errors import LLMNotConfigured
from core.llm import ProviderSettings
from pipelines.llm.configs import service_provider


def test_no_model_means_no_service_wide_provider(override_settings):
    override_settings(llm_model=None, llm_base_url="http://x/v1")
    assert service_provider() is None


def test_a_base_url_alone_means_an_openai_compatible_endpoint(override_settings):
    override_settings(llm_model="llama3", llm_base_url="http://localhost:11434/v1", llm_provider=None,
                      llm_api_key=SecretStr("k-123"), llm_max_concurrency=2, llm_timeout_seconds=9.0,
                      llm_max_retries=1, llm_api_version=None)
    assert service_provider() == ProviderSettings(
        kind="openai_compatible", model="llama3", base_url="http://localhost:11434/v1", api_key="k-123",
        max_concurrency=2, timeout_seconds=9.0, max_retries=1, name="service-default", trusted=True)


def test_a_key_alone_means_openai(override_settings):
    override_settings(llm_model="gpt-4o-mini", llm_base_url=None, llm_provider=None,
                      llm_api_key=SecretStr("sk-1"))
    assert service_provider().kind == "openai"


def test_an_incomplete_azure_setting_names_what_is_missing(override_settings):
    override_settings(llm_model="deploy", llm_provider="azure", llm_base_url="https://r.openai.azure.com",
                      llm_api_version=None)
    with pytest.raises(LLMNotConfigured, match="api_version") as caught:
        service_provider()
    assert caught.value.status_code == 422 and caught.value.code == "llm_not_configured"
