"""The sandbox launcher: run as its own small process (`python -I -S sandbox_exec.py SPEC_JSON`), never imported.

The worker is multi-threaded, so the steps that must happen between fork and exec (namespaces,
resource limits, dropping privileges) happen here, in a fresh single-threaded process, not in a
`preexec_fn`. Standard library only, and any Python 3 will do: under bubblewrap it runs inside the
sandbox with the system's `python3`, after bwrap made the namespaces and mounts (the spec then asks
for none), to set the limits and drop to the sandbox uid. Steps, in order:

1. `unshare` the namespaces the worker planned: network (no interfaces but a downed loopback), PID
   (the tool's processes die with the namespace's init), IPC with it, and, when not root, a user namespace that
   makes the other two possible.
2. With a PID namespace, fork its init: it forks the tool, reaps every orphan, and exits when the
   tool does, which makes the kernel kill whatever the tool left behind (a fork bomb included).
3. In the tool's process: resource limits, no supplementary groups, the sandbox gid and uid, then exec.
4. The tool's raw wait status is written to the status pipe (`status_fd`), so the worker can tell a
   signal from an exit code without trusting anything the tool printed (null: no pipe, for a
   long-lived MCP server whose end the worker sees on its stdout).

Exit code 125 with a `sandbox:` line on stderr means a step failed before the tool started.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWIPC = 0x08000000
SETUP_FAILED = 125
PR_SET_PDEATHSIG = 1


def _fail(message: str) -> None:
    os.write(2, f"sandbox: {message}\n".encode())
    os._exit(SETUP_FAILED)


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies: a worker killed mid-run must not leave its tool running."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(SETUP_FAILED)


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _enter_namespaces(spec: dict) -> None:
    # IPC goes with PID: System V shared memory and message queues die with the namespace too.
    flags = (CLONE_NEWNET if spec["net"] else 0) | (CLONE_NEWPID | CLONE_NEWIPC if spec["pid"] else 0)
    if spec["userns"]:
        uid, gid = os.getuid(), os.getgid()
        _unshare(flags | CLONE_NEWUSER)
        # Map the caller's own ids to themselves: inside, the tool is the same unprivileged user.
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    elif flags:
        _unshare(flags)


def _limit(spec: dict) -> None:
    for name, value in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value if name != "RLIMIT_CPU" else value + 1))


def _exec_tool(spec: dict, status_fd: int) -> None:
    """In the tool's own process: limits, identity, exec. Never returns."""
    try:
        if status_fd is not None:
            os.close(status_fd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _limit(spec)
        if spec["uid"] is not None:
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
        os.chdir(spec["cwd"])
        # Secrets (an MCP server's env) come through the launcher's own environment, not the command line.
        env = {**spec["env"], **{k: os.environ[k] for k in spec.get("inherit_env", ()) if k in os.environ}}
        os.execve(spec["argv"][0], spec["argv"], env)
    except OSError as exc:
        _fail(f"could not start the tool: {exc}")


def _supervise(child, status_fd: int | None) -> int:
    """Fork `child`, reap every process that ends up ours, return the child's wait status."""
    pid = os.fork()
    if pid == 0:
        child()
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if done == pid:
            if status_fd is not None:
                os.write(status_fd, f"{status}\n".encode())
            return status


def main() -> None:
    spec = json.loads(sys.argv[1])
    status_fd = spec["status_fd"]
    _die_with_parent()
    if spec.get("probe"):
        try:
            _enter_namespaces(spec)
        except OSError as exc:
            _fail(str(exc))
        os._exit(0)
    try:
        _enter_namespaces(spec)
    except OSError as exc:
        _fail(f"could not create namespaces: {exc}")
    if spec["pid"]:
        # The first child is the namespace's init; when it exits the kernel kills the rest.
        def init() -> None:
            _die_with_parent()  # and with it, by the kernel, everything in the namespace
            _supervise(lambda: _exec_tool(spec, status_fd), status_fd)
            os._exit(0)
        _supervise(init, None)
    else:
        _supervise(lambda: _exec_tool(spec, status_fd), status_fd)
    os._exit(0)


if __name__ == "__main__":
    main()
