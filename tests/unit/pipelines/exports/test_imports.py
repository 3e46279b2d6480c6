"""How an import maps an archive's rows into an organization: ids, references, what stays behind."""

from __future__ import annotations

import uuid

from pipelines.exports.imports import _Ids, _orphan, _transform
from pipelines.exports.kinds import BY_NAME, selected

ORG = uuid.UUID("11111111-1111-1111-1111-111111111111")
AGENT, TOOL, OTHER = (str(uuid.UUID(int=n)) for n in (1, 2, 3))


def _agent(ids: _Ids) -> dict:
    ids.seen["tools"] = {TOOL}
    return _transform(BY_NAME["agents"], {"id": AGENT, "name": "a", "tool_ids": [TOOL, OTHER],
                                          "mcp_server_ids": [OTHER], "llm": {"config_id": OTHER, "model": "m"}},
                      ids, keep_vectors=True)


def test_remapped_ids_depend_on_the_organization_and_the_original_only():
    first, second = _agent(_Ids(ORG, keep=False)), _agent(_Ids(ORG, keep=False))
    assert first["id"] == second["id"] != AGENT
    assert _agent(_Ids(uuid.uuid4(), keep=False))["id"] != first["id"]
    assert first["org_id"] == str(ORG)


def test_an_agent_keeps_only_the_tools_that_came_with_it_and_no_mcp_servers_or_llm_config():
    row = _agent(_Ids(ORG, keep=True))
    assert row["tool_ids"] == [TOOL] and row["mcp_server_ids"] == [] and row["llm"] == {"model": "m"}


def test_rows_naming_what_the_archive_does_not_hold_are_orphans_even_with_ids_kept():
    ids = _Ids(ORG, keep=True)
    _agent(ids)
    conversation = {"id": OTHER, "agent_id": AGENT}
    assert not _orphan(BY_NAME["conversations"], conversation, ids)
    # Another organization's conversation, named by a crafted archive: never written.
    assert _orphan(BY_NAME["messages"], {"id": str(uuid.uuid4()), "conversation_id": OTHER, "agent_id": AGENT}, ids)


def test_a_memory_of_an_exported_agent_follows_the_agent_and_loses_its_job_and_vectors_when_asked():
    ids = _Ids(ORG, keep=False)
    agent = _agent(ids)
    memory = _transform(BY_NAME["memories"], {"id": OTHER, "agent_id": AGENT, "content": "c", "content_hash": "h",
                                              "embedding": "[1,0]", "source_job_id": TOOL, "source_index": 3},
                        ids, keep_vectors=False)
    assert memory["agent_id"] == agent["id"] and memory["embedding"] is None
    assert memory["source_job_id"] is None and memory["source_index"] is None


def test_history_brings_its_memories():
    assert [k.name for k in selected(["history"], vectors=False)] == ["memories", "memory_history"]
