"""Worker-side stdio MCP servers: started in the tool sandbox, kept running and reused across calls.

A pool per worker process (the actors' event loop) keeps at most `mcp_stdio_pool_size` servers, keyed
by configuration id and version: a changed configuration gets a new process and the old one stops.
Each server is owned by a task of its own, which holds the SDK's stdio transport and session open
until it is told to stop (anyio context managers end in the task that entered them). A server found
dead (a failed ping before a reused call, a connection closed mid-call) is dropped and the next call
starts a new one; one unused for `mcp_stdio_idle_seconds` is stopped.

Isolation is the sandbox's (pipelines/tools/sandbox.py): under bwrap a filesystem of its own (system
folders and `AGENTMEM_MCP_STDIO_PATHS` read-only, a fresh working directory), PID, IPC, UTS and,
unless the configuration sets `network`, network namespaces; as root a uid of the sandbox range held
for the process's life; resource limits. The SDK's stdio transport starts the sandbox launcher, which
execs the server with the server's stdin and stdout as the transport's pipes. The env values (secrets)
reach the server through the launcher's environment, never its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from core.errors import PermanentJobError, TransientJobError
from core.settings import get_settings
from pipelines.mcp.servers import ServerSpec
from pipelines.tools import sandbox
from pipelines.tools.execute import check_isolation, sandbox_hidden

log = logging.getLogger(__name__)
SCRATCH_MB = 64
PING_SECONDS = 5.0


def read_only_paths() -> tuple[Path, ...]:
    """The operator's folders shown read-only to stdio servers (`AGENTMEM_MCP_STDIO_PATHS`)."""
    text = get_settings().mcp_stdio_paths or ""
    return tuple(Path(p.strip()) for p in text.split(",") if p.strip())


def resolve_command(command: str) -> str:
    """The absolute path of a server's program: as given, else found on the sandbox's PATH or the operator's
    folders' `bin`; PermanentJobError `mcp_command_not_found` otherwise."""
    if os.path.isabs(command):
        found = command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    else:
        extra = [str(p / "bin") for p in read_only_paths()] + [str(p) for p in read_only_paths()]
        found = shutil.which(command, path=":".join([sandbox.SAFE_PATH, *extra]))
    if found is None:
        raise PermanentJobError(f"the MCP server's command {command!r} is not an executable program on this worker",
                                code="mcp_command_not_found")
    return found


def _rlimits() -> dict[str, int]:
    settings = get_settings()
    mb = 1024 * 1024
    return {"RLIMIT_CPU": settings.mcp_stdio_cpu_seconds, "RLIMIT_AS": settings.mcp_stdio_memory_mb * mb,
            "RLIMIT_NPROC": settings.tool_processes, "RLIMIT_FSIZE": settings.tool_file_size_mb * mb,
            "RLIMIT_NOFILE": settings.tool_open_files, "RLIMIT_CORE": 0}


def sandboxed_argv(spec: ServerSpec, program: str, plan: dict[str, Any], uid: int | None, workdir: Path) -> list[str]:
    """The command that starts the server in the sandbox: bwrap then the launcher, or the launcher alone."""
    path = ":".join(dict.fromkeys([os.path.dirname(program), sandbox.SAFE_PATH]))
    launch = {"uid": uid, "gid": uid, "cwd": str(workdir), "argv": [program, *spec.args],
              "env": {"PATH": path, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
                      "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
              "inherit_env": sorted(spec.env), "rlimits": _rlimits(), "status_fd": None}
    if plan["bwrap"]:
        outer = sandbox.bwrap_argv(plan["bwrap"], root=plan["root"], scratch_mb=SCRATCH_MB,
                                   runtimes=(program, plan["python"]), workdir=workdir, hidden=sandbox_hidden(),
                                   read_only=read_only_paths(), network=spec.network)
        return [*outer, plan["python"], "-I", "-S", sandbox.INNER_LAUNCHER,
                json.dumps({**launch, "net": False, "pid": False, "userns": False})]
    return [sys.executable, "-I", "-S", str(sandbox.LAUNCHER), json.dumps(
        {**launch, "net": plan["net"] and not spec.network, "pid": plan["pid"], "userns": plan["userns"]})]


def isolation_of(spec: ServerSpec, plan: dict[str, Any], uid: int | None) -> dict[str, Any]:
    """The `isolation` field of a stdio call's result."""
    described = sandbox.describe_isolation(plan, uid)
    if spec.network:
        described["network"] = "host (the configuration allows it)"
    return described


@dataclass
class Running:
    """One stdio server process and its initialized session."""

    spec: ServerSpec
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    session: ClientSession | None = None
    init: Any = None
    isolation: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    dead: bool = False
    calls: int = 0
    task: asyncio.Task | None = None
    stderr_tail: str = ""


class StdioPool:
    """The running stdio servers of this worker process."""

    def __init__(self) -> None:
        self._running: dict[tuple[uuid.UUID, int], Running] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    def running(self) -> list[Running]:
        """The live servers, for inspection."""
        return [r for r in self._running.values() if not r.dead]

    async def acquire(self, spec: ServerSpec) -> Running:
        """A live, initialized server for `spec`: the pooled one if it still answers a ping, else a new one."""
        await self._evict_idle()
        lock = self._locks.setdefault(spec.id, asyncio.Lock())
        async with lock:
            for key in [k for k in self._running if k[0] == spec.id and k != spec.pool_key]:
                await self.discard(key)  # an older version of the configuration
            entry = self._running.get(spec.pool_key)
            if entry is not None and not entry.dead:
                try:
                    with anyio.fail_after(PING_SECONDS):
                        await entry.session.send_ping()
                except Exception:
                    log.info("pooled MCP server %s no longer answers: restarting it", spec.name)
                    await self.discard(spec.pool_key)
                    entry = None
            if entry is None or entry.dead:
                await self._make_room()
                entry = await self._start(spec)
                self._running[spec.pool_key] = entry
            entry.last_used = time.monotonic()
            return entry

    async def discard(self, key: tuple[uuid.UUID, int]) -> None:
        """Stop a server (if it runs) and forget it."""
        entry = self._running.pop(key, None)
        if entry is None:
            return
        entry.dead = True
        entry.stop.set()
        if entry.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(entry.task), timeout=10)

    async def close(self) -> None:
        """Stop every server."""
        for key in list(self._running):
            await self.discard(key)

    async def _evict_idle(self) -> None:
        idle = get_settings().mcp_stdio_idle_seconds
        now = time.monotonic()
        for key, entry in list(self._running.items()):
            if entry.dead or now - entry.last_used > idle:
                await self.discard(key)

    async def _make_room(self) -> None:
        size = get_settings().mcp_stdio_pool_size
        while len(self._running) >= size:
            oldest = min(self._running, key=lambda k: self._running[k].last_used)
            await self.discard(oldest)

    async def _start(self, spec: ServerSpec) -> Running:
        if not spec.network:
            await check_isolation()
        program = resolve_command(spec.command or "")
        entry = Running(spec)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry.task = asyncio.create_task(self._own(entry, program, ready), name=f"mcp-stdio-{spec.name}")
        try:
            await ready
        except BaseException:
            entry.dead = True
            entry.stop.set()
            raise
        return entry

    async def _own(self, entry: Running, program: str, ready: asyncio.Future[None]) -> None:
        """The server's life: sandbox, process, session, initialize; then wait until told to stop."""
        settings = get_settings()
        spec = entry.spec
        plan = await asyncio.to_thread(sandbox.isolation_plan)
        lease = sandbox.UidLease(settings.tool_sandbox_uid_base, settings.tool_sandbox_uid_count) if plan["root"] \
            else contextlib.nullcontext(None)
        errfd, errpath = tempfile.mkstemp(prefix="agentmem-mcp-stderr-")
        workdir: Path | None = None
        uid = None
        try:
            with lease as uid, open(errfd, "w") as errlog:
                workdir = Path(tempfile.mkdtemp(prefix="agentmem-mcp-"))
                if uid is not None:
                    os.chown(workdir, uid, uid)
                argv = sandboxed_argv(spec, program, plan, uid, workdir)
                params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(spec.env))
                async with stdio_client(params, errlog=errlog) as (read, write):
                    async with ClientSession(read, write) as session:
                        with anyio.fail_after(settings.mcp_connect_timeout_seconds):
                            entry.init = await session.initialize()
                        entry.session, entry.isolation = session, isolation_of(spec, plan, uid)
                        ready.set_result(None)
                        await entry.stop.wait()
        except sandbox.SandboxBusy as exc:
            _fail(ready, TransientJobError(str(exc), code="sandbox_busy"))
        except BaseException as exc:  # noqa: BLE001 (reported to the waiting call, which decides)
            entry.stderr_tail = _tail(errpath)
            _fail(ready, _start_failure(spec, exc, entry.stderr_tail))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            entry.dead = True
            if uid is not None:
                await asyncio.to_thread(sandbox.kill_uid, uid)
                await asyncio.to_thread(sandbox.remove_files_of, uid,
                                        (*sandbox.SHARED_WRITABLE, tempfile.gettempdir()))
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(errpath)


def _fail(ready: asyncio.Future[None], exc: BaseException) -> None:
    if not ready.done():
        ready.set_exception(exc)


def _tail(path: str, chars: int = 600) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def _start_failure(spec: ServerSpec, exc: BaseException, stderr: str) -> Exception:
    said = f"; its stderr ends: {stderr}" if stderr else ""
    if isinstance(exc, TimeoutError):
        return PermanentJobError(f"MCP server {spec.name!r} did not answer initialize within "
                                 f"{get_settings().mcp_connect_timeout_seconds:g} s{said}", code="mcp_connect_failed")
    if isinstance(exc, sandbox.SandboxFailed):
        return PermanentJobError(str(exc), code="sandbox_failed")
    if isinstance(exc, PermanentJobError):
        return exc
    return PermanentJobError(f"MCP server {spec.name!r} could not be started or initialized "
                             f"({type(exc).__name__}: {exc}){said}", code="mcp_connect_failed")


_pool: StdioPool | None = None


def get_pool() -> StdioPool:
    """This process's pool (created on first use, on the actors' event loop)."""
    global _pool
    if _pool is None:
        _pool = StdioPool()
    return _pool
