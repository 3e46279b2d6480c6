"""Tool registry rules that need no database: schemas, arguments, limits."""

from __future__ import annotations

import types
import uuid
from pathlib import Path

import pytest

from core.errors import InvalidInput, PermanentJobError
from pipelines import sandbox, tools
from pipelines.tools import (
    check_arguments,
    check_limits,
    check_schema,
    effective_limits,
)
from schemas.tables import Tool
from schemas.tools import ToolLimits

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer", "maximum": 5}},
          "required": ["q"], "additionalProperties": False}


def test_an_invalid_json_schema_is_schema_invalid():
    with pytest.raises(InvalidInput) as caught:
        check_schema({"type": "object", "properties": {"q": {"type": 12}}})
    assert caught.value.code == "schema_invalid" and caught.value.details["path"].startswith("/properties/q")
    check_schema(SCHEMA)


def test_arguments_are_checked_and_each_failing_path_is_named():
    check_arguments(SCHEMA, {"q": "x", "n": 5})
    with pytest.raises(InvalidInput) as caught:
        check_arguments(SCHEMA, {"n": 9, "extra": True})
    assert caught.value.code == "arguments_invalid"
    assert [e["path"] for e in caught.value.details["errors"]] == ["/", "/", "/n"]


def test_limits_above_the_service_maxima_are_refused(override_settings):
    settings = override_settings(tool_timeout_max_seconds=60, tool_memory_max_mb=1024)
    check_limits(settings, 60, ToolLimits(memory_mb=1024))
    with pytest.raises(InvalidInput) as caught:
        check_limits(settings, 61, ToolLimits(memory_mb=2048))
    assert caught.value.code == "limit_exceeds_maximum"
    assert caught.value.details["maximum"] == {"timeout_seconds": 60, "memory_mb": 1024}


def test_effective_limits_take_defaults_and_never_exceed_maxima(override_settings):
    settings = override_settings(tool_timeout_seconds=30, tool_timeout_max_seconds=60, tool_processes=64,
                                 tool_processes_max=100)
    timeout, limits = effective_limits(settings, Tool(timeout_seconds=None, limits={"processes": 500}))
    assert timeout == 30 and limits.processes == 100 and limits.memory_mb == settings.tool_memory_mb
    timeout, _ = effective_limits(settings, Tool(timeout_seconds=600, limits={}))
    assert timeout == 60


async def test_without_a_network_namespace_tools_are_refused_unless_allowed(override_settings, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation_plan", lambda: {"root": True, "userns": False, "net": False, "pid": False})
    settings = override_settings(tool_require_network_isolation=True)
    job = types.SimpleNamespace(id=uuid.uuid4(), org_id=uuid.uuid4(), payload={
        "tool_id": str(uuid.uuid4()), "tool_name": "t", "builtin": False, "arguments": {}})
    with pytest.raises(PermanentJobError) as caught:
        await tools.execute_tool(types.SimpleNamespace(job=job, settings=settings))
    assert caught.value.code == "sandbox_unavailable"


@pytest.mark.parametrize("url, folders", [
    ("postgresql+asyncpg://u:p@/db?host=/run/postgresql", ["/run/postgresql"]),
    ("postgresql://%2Fvar%2Frun%2Fpg/db", ["/var/run/pg"]),
    ("postgresql://u@/db?host=/a,/b", ["/a", "/b"]),
    ("unix:///run/redis/redis.sock?db=0", ["/run/redis"]),
    ("postgresql://u:p@localhost:5432/db", []),
    ("redis://127.0.0.1:6379/0", []),
    (None, []),
])
def test_the_socket_folders_of_database_urls_are_found(url, folders):
    assert tools.socket_dirs(url) == [Path(f) for f in folders]


def test_the_sandbox_hides_the_data_dir_the_workspaces_and_the_socket_folders(override_settings, tmp_path):
    settings = override_settings(data_dir=tmp_path / "data", tool_workspace_dir=tmp_path / "ws",
                                 database_url="postgresql://u@/db?host=/run/postgresql",
                                 redis_url="unix:///var/run/redis/redis.sock")
    assert tools.sandbox_hidden(settings) == (tmp_path / "data", tmp_path / "ws", Path("/run/postgresql"),
                                              Path("/var/run/redis"))
