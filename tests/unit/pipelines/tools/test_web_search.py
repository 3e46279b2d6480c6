"""The web_search tool's pieces that need no endpoint: its switch, the result shape, the outbound policy."""

from __future__ import annotations

import pytest

from core.errors import URLNotAllowed
from pipelines.tools import registry, web_search, workspace


def test_it_is_off_without_an_endpoint_and_on_with_one(override_settings):
    override_settings(web_search_url=None)
    assert not workspace.builtin_enabled("web_search")
    assert [b.name for b in workspace.enabled_builtins()] == ["file_save", "file_read", "file_search"]
    override_settings(web_search_url="https://search.example.org")
    assert [b.name for b in workspace.enabled_builtins()][-1] == "web_search"
    assert registry.builtin_out(workspace.BUILTINS["web_search"]).tags == ["builtin", "web"]


async def test_calling_it_without_an_endpoint_says_so(override_settings):
    override_settings(web_search_url=None)
    with pytest.raises(web_search.WebSearchNotConfigured) as caught:
        await web_search.web_search("anything")
    assert caught.value.code == "web_search_not_configured" and "AGENTMEM_WEB_SEARCH_URL" in caught.value.message


async def test_an_internal_endpoint_is_refused_by_the_outbound_policy_before_any_connection(override_settings):
    override_settings(web_search_url="http://127.0.0.1:9/", outbound_allow=None, web_search_attempts=3)
    with pytest.raises(URLNotAllowed):
        await web_search.web_search("anything")


def test_results_are_cut_to_title_url_and_snippet():
    body = {"results": [
        {"title": " A ", "url": "https://a.example", "content": "about a", "engine": "x", "score": 1},
        {"title": "no url", "content": "dropped"},
        {"title": 5, "url": "https://b.example", "content": None},
        "not an object",
        {"title": "T" * 1000, "url": "https://c.example", "content": "S" * 5000},
    ]}
    results = web_search.parse_results(body, limit=10)
    assert results[:2] == [{"title": "A", "url": "https://a.example", "snippet": "about a"},
                           {"title": "", "url": "https://b.example", "snippet": ""}]
    assert len(results[2]["title"]) == web_search.TITLE_CHARS and len(results[2]["snippet"]) == web_search.SNIPPET_CHARS
    assert len(web_search.parse_results(body, limit=1)) == 1


@pytest.mark.parametrize("body", [[], {}, {"results": "x"}, None])
def test_an_answer_without_a_results_list_is_a_failure(body):
    with pytest.raises(web_search.WebSearchFailed):
        web_search.parse_results(body, limit=5)
