"""The sandbox under `agentmem up` as a user runs it: hostile tools contained, the data directory's secret unread."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import httpx

from pipelines.tools.sandbox import processes_of
from tests.integration.test_up import Up
from tests.support.sse import finish
from tests.support.stack import free_port

HOSTILE = {
    "loop": ("python", "while True:\n    pass\n", {"timeout_seconds": 2}),
    "fork_bomb": ("bash", ":(){ :|:& };:", {"timeout_seconds": 3}),
    "memory_hog": ("python", "x = []\nwhile True:\n    x.append(bytearray(50 << 20))\n", {}),
    "flood": ("bash", "yes", {}),
}


async def run_tool(client: httpx.AsyncClient, language: str, source: str, **fields) -> dict:
    tool = await client.post("/api/v1/tools", json={"name": f"t_{uuid.uuid4().hex[:8]}", "language": language,
                                                    "source": source, **fields})
    assert tool.status_code == 201, tool.text
    job = await client.post(f"/api/v1/tools/{tool.json()['id']}/execute", json={"arguments": {}})
    assert job.status_code == 202, job.text
    return await finish(client, job.json()["id"], timeout=60)


async def test_hostile_tools_are_contained_under_agentmem_up():
    data_dir = Path(tempfile.mkdtemp(prefix="agentmem-up-tools-", dir="/tmp"))
    # Workspaces an older version left open (0755): a worker closes them when it starts.
    old_workspace = data_dir / "workspaces" / str(uuid.uuid4())
    old_workspace.mkdir(parents=True, mode=0o755)
    old_workspace.parent.chmod(0o755)
    port = free_port()
    up = Up(data_dir, port)
    try:
        up.wait_ready()
        assert {old_workspace.stat().st_mode & 0o777, old_workspace.parent.stat().st_mode & 0o777} == {0o700}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {up.printed_key()}"}) as client:
            reasons = {}
            for name, (language, source, fields) in HOSTILE.items():
                job = await run_tool(client, language, source, **fields)
                assert job["status"] == "succeeded", job
                reasons[name] = job["result"]["reason"]
                if job["result"]["isolation"]["uid"] is not None:
                    assert processes_of(job["result"]["isolation"]["uid"]) == []
            assert reasons["loop"] == "timeout" and reasons["memory_hog"] == "memory_limit"
            assert reasons["flood"] == "output_limit" and reasons["fork_bomb"] in ("exited", "timeout")

            secret = (data_dir / "jwt_secret").read_text().strip()
            snoop = await run_tool(client, "bash", f"cat {data_dir}/jwt_secret; env; "
                                             f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")
            out = snoop["result"]["stdout"] + snoop["result"]["stderr"]
            assert secret not in out and "AGENTMEM_" not in out and "connected" not in out

            # The data directory can be passed through, not listed, and the embedded Valkey's files not read.
            assert (data_dir.stat().st_mode & 0o777, (data_dir / "redis").stat().st_mode & 0o777) == (0o711, 0o700)
            valkey_log = (data_dir / "redis" / "valkey.log").read_text()
            assert "Ready to accept connections" in valkey_log
            peek = await run_tool(client, "bash", f"ls {data_dir}; cat {data_dir}/redis/valkey.log "
                                            f"{data_dir}/redis/appendonlydir/*; ls {data_dir}/workspaces")
            out = peek["result"]["stdout"] + peek["result"]["stderr"]
            assert "Ready to accept connections" not in out and old_workspace.name not in out, out
            # Without bwrap, refused by permissions; with it, not there at all.
            refused = "No such file or directory" if peek["result"]["isolation"]["sandbox"] == "bwrap" \
                else "Permission denied"
            assert out.count(refused) >= 3, out

            file_read = next(t for t in (await client.get("/api/v1/tools")).json() if t["name"] == "file_read")
            escape = await client.post(f"/api/v1/tools/{file_read['id']}/execute",
                                 json={"arguments": {"path": "../jwt_secret"}})
            assert escape.status_code == 422 and escape.json()["error"]["code"] == "path_outside_workspace"

            ok = await run_tool(client, "python", "print('still serving')")
            assert ok["result"]["stdout"] == "still serving\n"
    finally:
        code, alive = up.interrupt()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert code == 0 and not alive
