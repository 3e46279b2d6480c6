"""agentmem/client.py: the SDK is a client, light to import: the API's models, nothing of the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SERVER = ["api", "workers", "pipelines", "core", "cli", "fastapi", "starlette", "sqlalchemy", "sqlmodel", "redis",
          "dramatiq", "torch", "sentence_transformers", "onnxruntime"]


def test_importing_the_sdk_loads_nothing_of_the_server():
    code = ("import json, sys; from agentmem import AgentMem, AsyncAgentMem; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER!r}))))")
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == []


def test_both_clients_have_every_resource_of_the_issue():
    from agentmem import AgentMem, AsyncAgentMem

    names = ["memories", "jobs", "blocks", "agents", "conversations", "tools", "schedules", "webhooks"]
    sync, async_ = AgentMem("http://api.test", "k"), AsyncAgentMem("http://api.test", "k")
    for name in names:
        assert getattr(sync, name)._t is sync.transport and getattr(async_, name)._t is async_.transport
    sync.close()
