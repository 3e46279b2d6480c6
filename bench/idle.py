"""A system at rest: CPU and resident memory of each `agentmem up` process while nothing is asked of it.

    python bench/idle.py [--seconds 30] [--workers 2] [--env AGENTMEM_X=Y ...]

Starts `agentmem up` on a fresh data dir, waits until every worker has loaded its model, lets it settle,
then reads each process's CPU time (/proc/PID/stat) at the start and end of `--seconds` of rest and its
resident memory (VmRSS) at the end. An idle worker should cost next to nothing: its consumers block on
their queues' wake-up lists (core/queue.py) instead of polling Redis every 25 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import System, finish_run, machine_load, run_against, table  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """The pids under `root` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def role(pid: int) -> str | None:
    """What an AgentMem process is, from its command line; None for the servers and wrappers around them."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    line = " ".join(a.decode(errors="replace") for a in args)
    if "cli.main api" in line:
        return "api"
    if "cli.main scheduler" in line:
        return "scheduler"
    if "workers.main" in line:
        return "worker"
    if "postgres" in line:
        return "postgres"
    if "valkey-server" in line or "redis-server" in line:
        return "redis"
    return None


def postmaster(system: System) -> int | None:
    """The pid of the system's embedded PostgreSQL server (daemonized: not a descendant of `agentmem up`)."""
    try:
        return int((system.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


class Processes:
    """The system's processes by role, with their CPU time read at `mark()` and compared at `since()`.

    The embedded PostgreSQL counts too: its server and every backend under it, those started after `mark()`
    (new connections) from zero.
    """

    def __init__(self, system: System) -> None:
        assert system.process is not None
        self.system = system
        self.pids = self._find()
        self.mark()

    def _find(self) -> dict[int, str]:
        assert self.system.process is not None
        found = {pid: r for pid in descendants(self.system.process.pid) if (r := role(pid)) is not None}
        if (server := postmaster(self.system)) is not None and server not in found:
            found.update({pid: "postgres" for pid in [server, *descendants(server)]})
        return found

    def mark(self) -> None:
        self.pids = self._find()
        self.start = {pid: cpu_seconds(pid) for pid in self.pids}
        self.t0 = time.monotonic()

    def since(self) -> dict[str, float]:
        """% of one core per role (workers and postgres summed) since `mark()`."""
        seconds = time.monotonic() - self.t0
        used: dict[str, float] = {}
        for pid, name in {**self._find(), **self.pids}.items():
            end, begin = cpu_seconds(pid), self.start.get(pid, 0.0)
            if end is not None and begin is not None:
                used[name] = used.get(name, 0.0) + end - begin
        return {name: 100 * cpu / seconds for name, cpu in used.items()}

    def rss(self) -> dict[str, float]:
        """Resident MB of the API and of each worker process (the biggest, i.e. not dramatiq's supervisor)."""
        out: dict[str, float] = {}
        for pid, name in self.pids.items():
            if name in ("api", "worker"):
                try:
                    out[name] = max(out.get(name, 0.0), rss_mb(pid))
                except OSError:
                    pass
        return out


def measure(system: System, seconds: float, settle: float) -> list[list[object]]:
    time.sleep(settle)
    assert system.process is not None
    pids = {pid: r for pid in descendants(system.process.pid) if (r := role(pid)) is not None}
    start = {pid: cpu_seconds(pid) for pid in pids}
    time.sleep(seconds)
    rows: list[list[object]] = []
    database = [0.0, 0.0, 0]
    for pid, name in sorted(pids.items(), key=lambda item: (item[1], item[0])):
        end = cpu_seconds(pid)
        if end is None or start[pid] is None:
            continue
        used, rss = end - start[pid], rss_mb(pid)
        if name == "postgres":  # one server, many processes: summed
            database = [database[0] + used, database[1] + rss, database[2] + 1]
            continue
        if name == "worker" and rss < 200:
            name = "worker (supervisor)"  # dramatiq's parent process: it waits for its child, no model
        rows.append([name, pid, f"{100 * used / seconds:.2f}", f"{rss:.0f}"])
    if database[2]:
        rows.append([f"postgres ({database[2]} processes)", "", f"{100 * database[0] / seconds:.2f}",
                     f"{database[1]:.0f}"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of rest measured (default 30)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of rest before measuring (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for agentmem up (default 2)")
    parser.add_argument("--env", action="append", default=[], metavar="AGENTMEM_X=Y",
                        help="a setting for the system (repeatable)")
    args = parser.parse_args()
    print(f"before: {machine_load()}", flush=True)
    system = System(workers=args.workers)
    system.env = dict(item.split("=", 1) for item in args.env)
    rows, failed = run_against(system, lambda: measure(system, args.seconds, args.settle))
    if rows:
        print(f"\nat rest for {args.seconds:.0f} s (after {args.settle:.0f} s settling):")
        print(table(["process", "pid", "CPU % of one core", "RSS MB"], rows))
    return finish_run(system, failed, [])


if __name__ == "__main__":
    sys.exit(main())
