"""The sandbox on its own: real processes, no database, no sockets."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from pipelines.tools import sandbox
from pipelines.tools.sandbox import Limits, ToolRun, processes_of, run_sandboxed

ROOT = os.geteuid() == 0
LIMITS = Limits(cpu_seconds=10, memory_mb=256, processes=32, file_size_mb=1, open_files=64)
as_root = pytest.mark.skipif(not ROOT, reason="a dedicated uid per execution needs root")
BWRAP = sandbox.isolation_plan()["bwrap"] is not None
needs_bwrap = pytest.mark.skipif(not BWRAP, reason="bwrap can't make its sandbox on this machine (documented)")
REPO = Path(__file__).resolve().parents[3]


async def go(source: str, language: str = "python", arguments: dict | None = None, *, timeout: float = 10,
             limits: Limits = LIMITS, cap: int = 4096, limit: int = 1 << 20, checkpoint=None, name: str = "tool",
             plan: dict | None = None, hidden: tuple[Path, ...] = ()):
    chunks: list[tuple[str, str]] = []

    async def no_op() -> None:
        return None

    result = await run_sandboxed(ToolRun(name, language, source, arguments or {}, timeout, limits, cap, limit),
                                 sink=lambda stream, text: chunks.append((stream, text)),
                                 checkpoint=checkpoint or no_op, uid_base=1_900_000_000, uid_count=1000,
                                 checkpoint_seconds=0.2, plan=plan, hidden=hidden)
    result["chunks"] = chunks
    return result


@pytest.fixture(params=["bwrap", "launcher"])
def plan(request):
    """Each way this machine can sandbox: bubblewrap, and the launcher alone (where bwrap can't run)."""
    if request.param == "bwrap":
        if not BWRAP:
            pytest.skip("bwrap can't make its sandbox on this machine")
        return sandbox.isolation_plan()
    return sandbox.launcher_plan()


@pytest.fixture
def shown(monkeypatch):
    """A world-readable folder the bwrap sandbox shows like a system folder (as it shows /usr)."""
    folder = Path(tempfile.mkdtemp(prefix="agentmem-shown-", dir="/tmp"))
    folder.chmod(0o755)
    (folder / "public").write_text("open to all")
    (folder / "public").chmod(0o644)
    monkeypatch.setattr(sandbox, "SYSTEM_DIRS", (*sandbox.SYSTEM_DIRS, str(folder)))
    yield folder
    shutil.rmtree(folder)


async def test_a_python_function_named_like_the_tool_is_called_with_the_arguments():
    result = await go("def double(x):\n    return {'twice': x * 2}\n", arguments={"x": 21}, name="double")
    assert result["reason"] == "exited" and result["exit_code"] == 0
    assert json.loads(result["stdout"]) == {"twice": 42}
    assert "".join(t for s, t in result["chunks"] if s == "stdout") == result["stdout"]


async def test_a_script_sees_args_as_a_global_and_as_json_on_stdin():
    result = await go("import sys, json\nprint(args['n'], json.load(sys.stdin)['n'])", arguments={"n": 7})
    assert result["stdout"] == "7 7\n"


async def test_the_environment_is_built_from_nothing(plan):
    result = await go("import os, json\nprint(json.dumps(dict(os.environ)))", plan=plan)
    env = json.loads(result["stdout"])
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PWD",
                        "LC_CTYPE"}
    assert env["HOME"] == env["TMPDIR"]


async def test_the_working_directory_is_fresh_and_removed_afterwards(plan):
    first = await go("import os\nprint(os.getcwd())", plan=plan)
    second = await go("import os\nprint(os.getcwd())", plan=plan)
    assert first["stdout"] != second["stdout"]
    assert not Path(first["stdout"].strip()).exists()


async def test_a_wall_clock_timeout_kills_the_tool(plan):
    result = await go("import time\ntime.sleep(30)", timeout=1, plan=plan)
    assert result["reason"] == "timeout" and result["signal"] == "SIGKILL" and result["exit_code"] is None
    assert 1000 <= result["duration_ms"] < 5000


async def test_cpu_time_past_its_limit_is_cpu_limit():
    result = await go("while True:\n    pass", timeout=20,
                      limits=Limits(cpu_seconds=1, memory_mb=256, processes=32, file_size_mb=1, open_files=64))
    assert result["reason"] == "cpu_limit" and result["signal"] == "SIGXCPU"


@pytest.mark.parametrize("language, source", [
    ("python", "x = bytearray(512 * 1024 * 1024)"),
    ("bash", "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo ${#x}"),
    pytest.param("javascript", "const a = []; while (true) a.push(new Array(1e6).fill(1));",
                 marks=pytest.mark.skipif(shutil.which("node", path=sandbox.SAFE_PATH) is None, reason="no node")),
    pytest.param("javascript", "const a = []; while (true) a.push(Buffer.alloc(1e8));",
                 marks=pytest.mark.skipif(shutil.which("node", path=sandbox.SAFE_PATH) is None, reason="no node")),
], ids=["python", "bash", "javascript-heap", "javascript-buffers"])
async def test_memory_past_its_limit_is_memory_limit(language, source):
    result = await go(source, language)
    assert result["reason"] == "memory_limit", result["stderr"][-300:]


async def test_a_file_past_the_size_limit_is_not_written():
    result = await go("open('big', 'wb').write(b'x' * 2 * 1024 * 1024)")
    assert result["exit_code"] != 0 and "File too large" in result["stderr"]


async def test_output_past_the_cap_is_discarded_and_marked_truncated():
    result = await go("print('x' * 10000)", cap=100)
    assert result["reason"] == "exited" and len(result["stdout"]) == 100 and result["stdout_truncated"] is True
    assert result["stdout_bytes"] == 10001 and result["stderr_truncated"] is False


async def test_output_past_the_limit_kills_the_tool():
    result = await go("yes", "bash", cap=100, limit=100_000)
    assert result["reason"] == "output_limit" and result["stdout_truncated"] and len(result["stdout"]) == 100


async def test_a_checkpoint_that_raises_kills_the_tool_and_propagates():
    class Cancelled(Exception):
        pass

    chunks: list[str] = []

    async def checkpoint() -> None:
        if chunks:  # the tool is running: cancel it
            raise Cancelled()

    started = asyncio.get_running_loop().time()
    with pytest.raises(Cancelled):
        await run_sandboxed(ToolRun("t", "python", "import os, time\nprint(os.getuid())\ntime.sleep(30)", {}, 30,
                                    LIMITS, 4096, 1 << 20), sink=lambda stream, text: chunks.append(text),
                            checkpoint=checkpoint, uid_base=1_900_000_000, uid_count=1000, checkpoint_seconds=0.2)
    assert asyncio.get_running_loop().time() - started < 5
    if ROOT:
        assert processes_of(int("".join(chunks))) == []


@as_root
async def test_processes_that_escape_the_session_are_killed_with_the_tool():
    result = await go("for i in 1 2 3; do setsid sleep 300 & done; echo forked", "bash")
    assert result["stdout"] == "forked\n" and result["isolation"]["uid"] is not None
    assert processes_of(result["isolation"]["uid"]) == []


@as_root
async def test_a_fork_bomb_is_contained_by_the_process_limit():
    result = await go(":(){ :|:& };:", "bash", timeout=3)
    assert result["reason"] in ("exited", "timeout")
    assert processes_of(result["isolation"]["uid"]) == []


@as_root
async def test_the_tool_runs_as_its_own_uid_and_cannot_read_a_root_only_file(plan, shown):
    secret = shown / "secret"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    result = await go(f"import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n"
                      f"print(open({str(shown / 'public')!r}).read())\nprint(open({str(secret)!r}).read())", plan=plan)
    uid = result["isolation"]["uid"]
    assert result["stdout"].splitlines()[:2] == [f"{uid} {uid} []", "open to all"] and uid >= 1_900_000_000
    assert "hunter2" not in result["stdout"] and "PermissionError" in result["stderr"]


@as_root
async def test_concurrent_executions_get_distinct_uids():
    results = await asyncio.gather(*(go("import os\nprint(os.getuid())") for _ in range(5)))
    assert len({r["isolation"]["uid"] for r in results}) == 5


async def test_a_missing_runtime_is_runtime_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "SAFE_PATH", str(tmp_path))
    result = await go("console.log(1)", "javascript")
    assert result["reason"] == "runtime_unavailable" and "javascript" in result["message"]


def test_the_isolation_plan_reports_what_applies():
    plan = sandbox.isolation_plan()
    described = sandbox.describe_isolation(plan, 1_900_000_001 if plan["root"] else None)
    assert described["network"] in ("namespace", "none") and described["pid"] in ("namespace", "none")
    assert described["rlimits"] is True
    if plan["bwrap"]:
        assert described["sandbox"] == "bwrap" and described["filesystem"] == "mount namespace (bwrap)"
        assert described["network"] == described["pid"] == described["ipc"] == described["uts"] == "namespace"
    else:
        assert described["sandbox"] == "launcher" and "mount" not in described["filesystem"]


@needs_bwrap
def test_a_bwrap_that_cannot_sandbox_here_is_passed_over(monkeypatch, tmp_path):
    too_old = tmp_path / "bwrap"
    too_old.write_text("#!/bin/sh\necho 'bwrap: Unknown option --size' >&2\nexit 1\n")
    too_old.chmod(0o755)
    working = sandbox.isolation_plan()["bwrap"]
    monkeypatch.setattr(sandbox, "bwrap_binaries", lambda: [str(too_old), working])
    assert sandbox.isolation_plan.__wrapped__()["bwrap"] == working
    monkeypatch.setattr(sandbox, "bwrap_binaries", lambda: [str(too_old)])
    assert sandbox.isolation_plan.__wrapped__() == sandbox.launcher_plan()


async def test_a_bwrap_failing_at_set_up_is_sandbox_failed_without_host_paths(tmp_path):
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho \"bwrap: Can't mount tmpfs on /srv/agentmem/data\" >&2\nexit 1\n")
    broken.chmod(0o755)
    plan = {**sandbox.launcher_plan(), "bwrap": str(broken), "python": "/usr/bin/python3"}
    with pytest.raises(sandbox.SandboxFailed) as caught:
        await go("print(1)", plan=plan)
    assert "/srv/agentmem" not in str(caught.value) and "worker's log" in str(caught.value)


def test_a_runtime_installed_outside_usr_gets_its_installation_shown(tmp_path):
    node = tmp_path / "opt" / "node" / "bin" / "node"
    node.parent.mkdir(parents=True)
    node.touch()
    argv = sandbox.bwrap_argv("bwrap", root=True, scratch_mb=1, runtimes=("/usr/bin/python3", str(node)))
    shown = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--ro-bind"]
    assert str(tmp_path / "opt" / "node") in shown and "/usr" in shown
    assert "/usr/bin" not in shown  # already inside /usr


# --- what a bwrap sandbox hides --------------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("folder", [tempfile.gettempdir(), "/run", "/dev/shm"])
async def test_a_unix_socket_the_host_listens_on_is_out_of_reach(folder):
    if not os.access(folder, os.W_OK):
        pytest.skip(f"can't make a socket in {folder} as this user")
    where = Path(tempfile.mkdtemp(prefix="agentmem-sock-", dir=folder))
    where.chmod(0o755)
    path = where / "s.sock"
    received: list[bytes] = []

    async def accept(reader, writer):
        received.append(await reader.read(100) or b"(connected)")
        writer.close()

    source = ("import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
              f"    s.connect({str(path)!r})\n    s.sendall(b'hello')\n    print('connected')\n"
              "except OSError as exc:\n    print('refused', exc.errno)\n")
    try:
        server = await asyncio.start_unix_server(accept, path)
        path.chmod(0o777)  # as PostgreSQL's socket is: anyone on the machine may connect
        async with server:
            result = await go(source)
    finally:
        shutil.rmtree(where)
    assert result["stdout"] == "refused 2\n", result  # ENOENT: the folder isn't there
    assert received == []


@needs_bwrap
async def test_tmp_var_tmp_and_dev_shm_are_private_to_the_execution():
    fd, planted = tempfile.mkstemp(prefix="agentmem-host-", dir="/tmp")
    os.close(fd)
    os.chmod(planted, 0o644)
    marker = f"agentmem-private-{uuid.uuid4().hex}"
    folders = ("/tmp", "/var/tmp", "/dev/shm")
    source = (f"import os, time\nprint(os.path.exists({planted!r}))\n"
              f"for folder in {folders!r}:\n    open(os.path.join(folder, {marker!r}), 'w').write('x')\n"
              "print('written', flush=True)\ntime.sleep(30)\n")
    chunks: list[str] = []
    seen: dict[str, bool] = {}

    class Seen(Exception):
        pass

    async def checkpoint() -> None:
        if "written" in "".join(chunks):  # the tool has written and waits: look at the host's folders
            seen.update({folder: os.path.exists(os.path.join(folder, marker)) for folder in folders})
            raise Seen()

    try:
        with pytest.raises(Seen):
            await run_sandboxed(ToolRun("t", "python", source, {}, 20, LIMITS, 4096, 1 << 20),
                                sink=lambda stream, text: chunks.append(text), checkpoint=checkpoint,
                                uid_base=1_900_000_000, uid_count=1000, checkpoint_seconds=0.2)
    finally:
        os.unlink(planted)
    assert "".join(chunks).splitlines() == ["False", "written"]
    assert seen == dict.fromkeys(folders, False)


@needs_bwrap
async def test_only_system_folders_are_shown_and_hidden_ones_stay_hidden_inside_them(shown):
    data = shown / "data"
    data.mkdir(mode=0o755)
    (data / "jwt_secret").write_text("s3cret")
    (data / "jwt_secret").chmod(0o644)
    source = (f"import os\nprint(sorted(os.listdir({str(shown)!r})))\nprint(os.listdir({str(data)!r}))\n"
              f"print(os.path.exists({str(REPO)!r}), os.path.exists('/root'), os.path.exists('/var/lib'))\n"
              "print(sorted(os.listdir('/etc')))\n"
              "print(sorted(os.listdir('/run')), sorted(p for p in os.listdir('/proc') if p.isdigit()))\n")
    result = await go(source, hidden=(data,))
    lines = result["stdout"].splitlines()
    assert lines[0] == "['data', 'public']" and lines[1] == "[]", result
    assert lines[2] == "False False False" and "s3cret" not in result["stdout"]
    shown_etc = {entry.name for pattern in sandbox.ETC_ENTRIES for entry in Path("/etc").glob(pattern)}
    assert set(json.loads(lines[3].replace("'", '"'))) == shown_etc
    assert lines[4] == "['agentmem'] ['1', '2', '3']"  # the launcher's folder; bwrap's init, the launcher, the tool


@as_root
async def test_files_left_in_shared_temp_folders_are_removed_after_the_run():
    result = await go("import os\nopen('/dev/shm/left-' + str(os.getuid()), 'w').write('x')\n"
                      "os.mkdir('/tmp/dir-' + str(os.getuid()))\nprint(os.getuid())")
    uid = result["isolation"]["uid"]
    assert result["exit_code"] == 0 and result["stdout"].strip() == str(uid)
    assert not Path(f"/dev/shm/left-{uid}").exists() and not Path(f"/tmp/dir-{uid}").exists()


@as_root
def test_a_worker_killed_mid_run_takes_its_tool_with_it():
    import subprocess
    import sys
    import time

    script = (
        "import asyncio, os\n"
        "from pipelines.tools.sandbox import Limits, ToolRun, run_sandboxed\n"
        "async def no_op():\n    return None\n"
        "asyncio.run(run_sandboxed(ToolRun('t', 'bash', 'echo \"$(id -u)\"; sleep 300', {}, 200,"
        " Limits(100, 256, 32, 4, 64), 4096, 1 << 20), sink=lambda s, t: print(t, end='', flush=True),"
        " checkpoint=no_op, uid_base=1_900_000_000, uid_count=1000))\n")
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[3])
    uid = int(worker.stdout.readline())  # the tool is running
    assert processes_of(uid)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel delivers the parent-death signals asynchronously
    assert processes_of(uid) == []
    # Its working directory outlived it; the next lease of the uid removes it before anyone runs as it.
    owned = [p for p in Path(tempfile.gettempdir()).glob("agentmem-tool-*") if p.stat().st_uid == uid]
    assert owned
    with sandbox.UidLease(uid, 1) as leased:
        assert leased == uid
        assert not any(p.exists() for p in owned)
