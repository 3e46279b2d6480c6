"""The execute_tool job's own rules: the limits an execution gets, what the sandbox hides, refusing
tools where no network namespace can be made."""

from __future__ import annotations

import types
import uuid
from pathlib import Path

import pytest

from core.errors import PermanentJobError
from pipelines.tools import execute, sandbox
from pipelines.tools.execute import effective_limits
from schemas.tables import Tool


def test_effective_limits_take_defaults_and_never_exceed_maxima(override_settings):
    settings = override_settings(tool_timeout_seconds=30, tool_timeout_max_seconds=60, tool_processes=64,
                                 tool_processes_max=100)
    timeout, limits = effective_limits(Tool(timeout_seconds=None, limits={"processes": 500}))
    assert timeout == 30 and limits.processes == 100 and limits.memory_mb == settings.tool_memory_mb
    timeout, _ = effective_limits(Tool(timeout_seconds=600, limits={}))
    assert timeout == 60


async def test_without_a_network_namespace_tools_are_refused_unless_allowed(override_settings, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation_plan", lambda: {"root": True, "userns": False, "net": False, "pid": False})
    override_settings(tool_require_network_isolation=True)
    job = types.SimpleNamespace(id=uuid.uuid4(), org_id=uuid.uuid4(), payload={
        "tool_id": str(uuid.uuid4()), "tool_name": "t", "builtin": False, "arguments": {}})
    with pytest.raises(PermanentJobError) as caught:
        await execute.execute_tool(types.SimpleNamespace(job=job))
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
    assert execute.socket_dirs(url) == [Path(f) for f in folders]


def test_the_sandbox_hides_the_data_dir_the_workspaces_and_the_socket_folders(override_settings, tmp_path):
    override_settings(data_dir=tmp_path / "data", tool_workspace_dir=tmp_path / "ws",
                      database_url="postgresql://u@/db?host=/run/postgresql",
                      redis_url="unix:///var/run/redis/redis.sock")
    assert execute.sandbox_hidden() == (tmp_path / "data", tmp_path / "ws", Path("/run/postgresql"),
                                        Path("/var/run/redis"))
