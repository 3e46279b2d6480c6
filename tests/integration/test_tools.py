"""Tools through the real API and worker processes: the registry, and hostile tools contained by the sandbox.

Each hostile tool (infinite loop, fork bombs, memory hog, output flood, planted secret file, the
worker's environment, a local network port) must end with a clear `reason`, leave no process
behind, and leave the worker serving the next job.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from pipelines.tools import sandbox
from pipelines.tools.sandbox import processes_of
from pipelines.tools.workspace import BUILTINS, FILE_TOOLS
from tests.support.sse import finish, follow
from tests.support.stack import TEST_JWT_SECRET

ROOT = os.geteuid() == 0
needs_node = pytest.mark.skipif(shutil.which("node", path="/usr/local/bin:/usr/bin:/bin") is None,
                                reason="no node on this machine: javascript tools answer runtime_unavailable")


def tool_body(source: str, language: str = "python", **fields) -> dict:
    return {"name": f"t_{uuid.uuid4().hex[:10]}", "language": language, "source": source} | fields


async def create(client, source: str, language: str = "python", **fields) -> dict:
    response = await client.post("/api/v1/tools", json=tool_body(source, language, **fields))
    assert response.status_code == 201, response.text
    return response.json()


async def execute(client, tool_id: str, arguments: dict | None = None) -> dict:
    response = await client.post(f"/api/v1/tools/{tool_id}/execute", json={"arguments": arguments or {}})
    assert response.status_code == 202, response.text
    return response.json()


async def run(client, source: str, language: str = "python", arguments: dict | None = None, timeout: float = 90,
              **fields) -> dict:
    """Create a tool, execute it, wait for the job; return the finished job."""
    tool = await create(client, source, language, **fields)
    job = await execute(client, tool["id"], arguments)
    return await finish(client, job["id"], timeout=timeout)


def assert_no_survivors(result: dict) -> None:
    isolation = result["isolation"]
    if isolation["uid"] is not None:
        assert processes_of(isolation["uid"]) == [], "a process of the sandbox uid outlived its job"


async def assert_worker_unharmed(client) -> None:
    name = f"ok_{uuid.uuid4().hex[:8]}"
    job = await run(client, f"def {name}():\n    return 'still serving'\n", name=name)
    assert job["status"] == "succeeded", job
    assert job["result"]["reason"] == "exited" and job["result"]["exit_code"] == 0


# --- the registry ---------------------------------------------------------------------------------------


async def test_create_read_update_delete_a_tool(client):
    tool = await create(client, "print(args)", tags=["demo"], timeout_seconds=5, limits={"memory_mb": 256},
                        json_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    assert tool["builtin"] is False and tool["limits"]["memory_mb"] == 256
    got = (await client.get(f"/api/v1/tools/{tool['id']}")).json()
    assert got["source"] == "print(args)" and got["tags"] == ["demo"]
    listed = (await client.get("/api/v1/tools")).json()
    # The file tools always; web_search only where AGENTMEM_WEB_SEARCH_URL is set (not in this stack).
    assert {t["name"] for t in listed if t["builtin"]} == set(FILE_TOOLS)
    assert tool["id"] in {t["id"] for t in listed}
    assert tool["id"] in {t["id"] for t in (await client.get("/api/v1/tools", params={"tag": "demo"})).json()}
    patched = await client.patch(f"/api/v1/tools/{tool['id']}", json={"description": "prints its arguments"})
    assert patched.status_code == 200 and patched.json()["description"] == "prints its arguments"
    assert (await client.delete(f"/api/v1/tools/{tool['id']}")).status_code == 204
    assert (await client.get(f"/api/v1/tools/{tool['id']}")).status_code == 404
    again = await client.post("/api/v1/tools", json=tool_body("print(1)", name=tool["name"]))
    assert again.status_code == 201, "a deleted tool's name is free again"


async def test_bad_tools_are_refused_with_a_code_and_nothing_is_stored(client, db, main_tenant):
    taken = await create(client, "print(1)")
    cases = [
        (tool_body("x", name=taken["name"].upper()), 409, "tool_name_taken"),
        (tool_body("x", name="file_read"), 409, "tool_name_taken"),
        (tool_body("x", json_schema={"type": "no-such-type"}), 422, "schema_invalid"),
        (tool_body("x", timeout_seconds=10_000), 422, "limit_exceeds_maximum"),
        (tool_body("x", limits={"memory_mb": 10_000_000}), 422, "limit_exceeds_maximum"),
        (tool_body("x", language="cobol"), 422, "invalid_input"),
    ]
    [[before]] = await db("SELECT count(*) FROM tools WHERE org_id = :o", o=main_tenant.org_id)
    for body, status, code in cases:
        response = await client.post("/api/v1/tools", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    [[after]] = await db("SELECT count(*) FROM tools WHERE org_id = :o", o=main_tenant.org_id)
    assert after == before
    builtin = BUILTINS["file_read"].id
    assert (await client.patch(f"/api/v1/tools/{builtin}", json={"description": "x"})).json()["error"]["code"] \
        == "builtin_tool"
    assert (await client.delete(f"/api/v1/tools/{builtin}")).status_code == 409


async def test_arguments_are_validated_against_the_schema_before_any_job(client, db, main_tenant):
    tool = await create(client, "print(args)", json_schema={
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"], "additionalProperties": False})
    [[before]] = await db("SELECT count(*) FROM jobs WHERE org_id = :o", o=main_tenant.org_id)
    response = await client.post(f"/api/v1/tools/{tool['id']}/execute", json={"arguments": {"days": 0}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "arguments_invalid"
    assert {e["path"] for e in error["details"]["errors"]} == {"/", "/days"}
    [[after]] = await db("SELECT count(*) FROM jobs WHERE org_id = :o", o=main_tenant.org_id)
    assert after == before


# --- running tools ----------------------------------------------------------------------------------------


async def test_a_python_tool_gets_its_arguments_and_its_output_is_streamed(client):
    name = f"add_{uuid.uuid4().hex[:8]}"
    source = f"import sys\nprint('to stderr', file=sys.stderr)\ndef {name}(a, b):\n    return {{'sum': a + b}}\n"
    tool = await create(client, source, name=name, json_schema={"type": "object", "required": ["a", "b"]})
    job = await execute(client, tool["id"], {"a": 2, "b": 40})
    events = await follow(client, job["id"])
    done = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["reason"] == "exited" and result["exit_code"] == 0
    assert result["stdout"].strip() == '{"sum": 42}' and "to stderr" in result["stderr"]
    assert result["duration_ms"] >= 0 and result["stdout_truncated"] is False
    streamed = "".join(e.data["data"].get("output", {}).get("stdout", "") for e in events if e.event == "progress")
    assert streamed == result["stdout"]
    await client.delete(f"/api/v1/tools/{tool['id']}")


async def test_bash_reads_arguments_on_stdin_and_exit_codes_come_back(client):
    job = await run(client, 'read -r line; echo "got $line"; exit 3', "bash", {"x": 1})
    assert job["status"] == "succeeded"
    assert job["result"]["stdout"] == 'got {"x": 1}\n' and job["result"]["exit_code"] == 3
    assert job["result"]["reason"] == "exited"


@needs_node
async def test_javascript_reads_args_json(client):
    job = await run(client, "const a = require('./args.json'); console.log(a.greeting + '!')", "javascript",
                    {"greeting": "hello"})
    assert job["status"] == "succeeded", job
    assert job["result"]["stdout"] == "hello!\n"


async def test_an_infinite_loop_times_out_and_the_worker_keeps_serving(client):
    job = await run(client, "while True:\n    pass\n", timeout_seconds=2)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["reason"] == "timeout" and result["exit_code"] is None and result["signal"] == "SIGKILL"
    assert 2000 <= result["duration_ms"] < 15000
    assert_no_survivors(result)
    await assert_worker_unharmed(client)


@pytest.mark.parametrize("language, source", [
    ("bash", ":(){ :|:& };:"),
    ("python", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"),
    ("bash", "for i in $(seq 50); do setsid sleep 300 & done; echo forked"),
], ids=["bash-fork-bomb", "python-fork-loop", "setsid-escapees"])
async def test_fork_bombs_are_contained_and_leave_no_process(client, language, source):
    job = await run(client, source, language, timeout_seconds=3, limits={"processes": 32})
    assert job["status"] == "succeeded", job
    assert job["result"]["reason"] in ("exited", "timeout")
    assert_no_survivors(job["result"])
    await assert_worker_unharmed(client)


async def test_a_memory_hog_stops_at_the_memory_limit(client):
    job = await run(client, "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))\n",
                    limits={"memory_mb": 256})
    assert job["status"] == "succeeded", job
    assert job["result"]["reason"] == "memory_limit", job["result"]
    assert "MemoryError" in job["result"]["stderr"]
    await assert_worker_unharmed(client)


async def test_an_output_flood_is_capped_and_killed(client):
    job = await run(client, "yes flood", "bash")
    result = job["result"]
    assert result["reason"] == "output_limit" and result["stdout_truncated"] is True
    assert len(result["stdout"].encode()) == 65536 and result["stdout_bytes"] > 65536
    assert_no_survivors(result)
    await assert_worker_unharmed(client)


async def test_a_planted_secret_file_outside_the_workdir_is_not_readable(client):
    marker = f"planted-{uuid.uuid4().hex}"
    folder = Path(tempfile.mkdtemp(prefix="agentmem-planted-"))
    secret = folder / "secret.txt"
    secret.write_text(marker)
    secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
    try:
        job = await run(client, f"cat {secret}; cat {secret}.copy 2>/dev/null; echo exit=$?", "bash")
    finally:
        shutil.rmtree(folder)
    result = job["result"]
    assert marker not in result["stdout"] + result["stderr"]
    if result["isolation"]["filesystem"] == "mount namespace (bwrap)":
        assert "No such file or directory" in result["stderr"]  # the host's /tmp is not the tool's
    elif ROOT:
        assert "Permission denied" in result["stderr"]
    else:  # documented: without root or bwrap the tool runs as the worker's own user, in its filesystem
        pytest.xfail("as non-root without bwrap the sandbox can't hide the worker user's files")


async def test_the_workers_environment_and_secrets_are_invisible(client, stack):
    pids = [p.popen.pid for name, p in stack.procs.items() if name.startswith("worker")]
    source = (
        "import os, json\n"
        "print(json.dumps(dict(os.environ)))\n"
        f"for pid in {pids}:\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print('denied', type(exc).__name__)\n")
    job = await run(client, source)
    out = job["result"]["stdout"] + job["result"]["stderr"]
    assert TEST_JWT_SECRET not in out and "AGENTMEM_" not in out and "postgresql" not in out
    assert "DATABASE_URL" not in out
    if job["result"]["isolation"]["filesystem"] == "mount namespace (bwrap)":
        # Its /proc is its PID namespace's: the worker's pids don't exist there.
        assert out.count("denied FileNotFoundError") == len(pids), out
    elif ROOT:
        # Earlier tests may have restarted workers, so some pids can be gone (FileNotFoundError); none
        # may be readable, and the live ones refuse.
        assert out.count("denied ") == len(pids) and "denied PermissionError" in out, out


async def test_a_local_network_port_is_unreachable(client):
    connected = asyncio.Event()

    async def accept(reader, writer):
        connected.set()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
              "    print('connected')\nexcept OSError as exc:\n    print('refused', exc)\n")
    async with server:
        job = await run(client, source)
    result = job["result"]
    if result["isolation"]["network"] != "namespace":
        pytest.skip("no network namespace on this kernel (documented)")
    assert result["stdout"].startswith("refused") and not connected.is_set()


async def test_a_unix_socket_of_the_host_is_unreachable(client):
    if not sandbox.isolation_plan()["bwrap"]:
        pytest.skip("bwrap can't make its sandbox on this machine (documented)")
    folder = Path(tempfile.mkdtemp(prefix="agentmem-sock-", dir="/tmp"))
    folder.chmod(0o755)
    path = folder / "s.sock"
    received: list[bytes] = []

    async def accept(reader, writer):
        received.append(await reader.read(100) or b"(connected)")
        writer.close()

    source = (f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({str(path)!r})\n"
              "    s.sendall(b'hello')\n    print('connected')\nexcept OSError as exc:\n    print('refused', exc)\n")
    try:
        server = await asyncio.start_unix_server(accept, path)
        path.chmod(0o777)  # as a database's socket is
        async with server:
            job = await run(client, source)
    finally:
        shutil.rmtree(folder)
    result = job["result"]
    assert result["isolation"]["filesystem"] == "mount namespace (bwrap)"
    assert result["stdout"].startswith("refused") and received == [], result


async def test_cancelling_the_job_kills_the_tool(client):
    tool = await create(client, "import time\nprint('started', flush=True)\ntime.sleep(60)\n", timeout_seconds=60)
    job = await execute(client, tool["id"])
    await follow(client, job["id"], stop_after=lambda e: "started" in str(e.data))
    assert (await client.post(f"/api/v1/jobs/{job['id']}/cancel")).status_code in (200, 202)
    done = await finish(client, job["id"], timeout=30)
    assert done["status"] == "cancelled"
    await assert_worker_unharmed(client)


async def test_ten_concurrent_executions_each_get_their_own_output(client):
    name = f"echo_{uuid.uuid4().hex[:8]}"
    tool = await create(client, f"import time\ndef {name}(n):\n    time.sleep(0.5)\n    return n * n\n", name=name,
                        json_schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    jobs = [await execute(client, tool["id"], {"n": n}) for n in range(10)]
    done = await asyncio.gather(*(finish(client, j["id"]) for j in jobs))
    assert [d["status"] for d in done] == ["succeeded"] * 10
    assert [d["result"]["stdout"].strip() for d in done] == [str(n * n) for n in range(10)]
    uids = {d["result"]["isolation"]["uid"] for d in done}
    if ROOT:
        assert None not in uids
    await client.delete(f"/api/v1/tools/{tool['id']}")


# --- built-in file tools ------------------------------------------------------------------------------------


async def builtin(client, name: str, arguments: dict):
    return await client.post(f"/api/v1/tools/{BUILTINS[name].id}/execute", json={"arguments": arguments})


async def test_file_tools_save_read_and_search_in_the_organizations_workspace(as_role, tenant, stack):
    owner = as_role()
    saved = await finish(owner, (await builtin(owner, "file_save", {"path": "notes/a.txt",
                                                                    "content": "alpha\nBeta gamma\n"})).json()["id"])
    assert saved["status"] == "succeeded" and saved["result"]["output"] == {"path": "notes/a.txt", "bytes": 17}
    on_disk = stack.services.data_dir / "workspaces" / str(tenant.org_id) / "notes" / "a.txt"
    assert on_disk.read_text() == "alpha\nBeta gamma\n"
    # No other user may list the organizations using file tools, or what they saved, whatever the umask.
    assert {folder.stat().st_mode & 0o777 for folder in on_disk.parents[:3]} == {0o700}
    read = await finish(owner, (await builtin(owner, "file_read", {"path": "notes/a.txt"})).json()["id"])
    assert read["result"]["output"]["content"] == "alpha\nBeta gamma\n"
    found = await finish(owner, (await builtin(owner, "file_search", {"query": "beta"})).json()["id"])
    assert found["result"]["output"]["matches"] == [{"path": "notes/a.txt", "line": 2, "text": "Beta gamma"}]
    listed = await finish(owner, (await builtin(owner, "file_search", {"glob": "**/*.txt"})).json()["id"])
    assert [m["path"] for m in listed["result"]["output"]["matches"]] == ["notes/a.txt"]
    missing = await finish(owner, (await builtin(owner, "file_read", {"path": "nope.txt"})).json()["id"])
    assert missing["status"] == "failed" and missing["error"]["code"] == "file_not_found"


@pytest.mark.parametrize("name, arguments", [
    ("file_read", {"path": "../../../etc/passwd"}),
    ("file_read", {"path": "/etc/passwd"}),
    ("file_save", {"path": "a/../../escape.txt", "content": "x"}),
    ("file_search", {"glob": "../*"}),
])
async def test_path_traversal_in_the_file_tools_is_refused(as_role, db, tenant, name, arguments):
    owner = as_role()
    response = await builtin(owner, name, arguments)
    assert response.status_code == 422 and response.json()["error"]["code"] == "path_outside_workspace"
    [[jobs]] = await db("SELECT count(*) FROM jobs WHERE org_id = :o", o=tenant.org_id)
    assert jobs == 0


async def test_a_tool_sees_neither_the_data_directory_nor_the_workspaces(client, main_tenant, stack):
    saved = await finish(client, (await builtin(client, "file_save", {"path": "x.txt", "content": "x"})).json()["id"])
    assert saved["status"] == "succeeded", saved
    data_dir = stack.services.data_dir
    job = await run(client, f"ls {data_dir}/workspaces; ls -a {data_dir}", "bash")
    result = job["result"]
    assert str(main_tenant.org_id) not in result["stdout"] and "jwt_secret" not in result["stdout"]
    if result["isolation"]["filesystem"] == "mount namespace (bwrap)":
        assert result["stderr"].count("No such file or directory") == 2, result


async def test_a_symlink_out_of_the_workspace_is_refused_by_the_job(as_role, tenant, stack):
    owner = as_role()
    folder = stack.services.data_dir / "workspaces" / str(tenant.org_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "link").symlink_to("/etc")
    job = await finish(owner, (await builtin(owner, "file_read", {"path": "link/passwd"})).json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "path_outside_workspace"
