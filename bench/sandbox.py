"""Sandbox start-up cost: wall time of a trivial tool execution, launcher alone versus bubblewrap.

    python bench/sandbox.py [--n 200] [--warmup 10]

Runs `print(1)` (python) and `true` (bash) through `pipelines.tools.sandbox.run_sandboxed` directly, no
API, database or worker: from the uid lease and the working directory to the last byte of output
and the cleanup. The two paths alternate execution by execution in the same run, so both see the
same machine: `launcher` (pipelines/tools/sandbox_exec.py alone: network and PID namespaces, the dedicated
uid) and `bwrap` (bubblewrap's mount, network, PID, IPC and UTS namespaces, then the launcher inside).
Prints p50/p99/mean per path and language, and how much bwrap adds at the median.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import command_line, machine_load, percentile, table
from pipelines.tools import sandbox
from pipelines.tools.sandbox import Limits, ToolRun, run_sandboxed

LIMITS = Limits(cpu_seconds=10, memory_mb=512, processes=64, file_size_mb=16, open_files=256)
TOOLS = {"python": ("print(1)", "1\n"), "bash": ("true", "")}


async def no_op() -> None:
    return None


async def execute(language: str, plan: dict) -> float:
    """Seconds for one execution of the trivial tool; fails loudly if it did not run cleanly."""
    source, expected = TOOLS[language]
    started = time.perf_counter()
    result = await run_sandboxed(ToolRun("bench", language, source, {}, 30, LIMITS, 4096, 1 << 20),
                                 sink=lambda stream, text: None, checkpoint=no_op, uid_base=1_900_000_000,
                                 uid_count=1000, plan=plan)
    elapsed = time.perf_counter() - started
    if result["reason"] != "exited" or result["exit_code"] != 0 or result["stdout"] != expected:
        raise SystemExit(f"{language} under {result['isolation']}: {result['reason']} {result['exit_code']} "
                         f"{result['stderr'][-300:]!r}")
    return elapsed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="measured executions per path and language")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured executions per path and language first")
    args = parser.parse_args()
    print(machine_load(), flush=True)
    plans = {"launcher": sandbox.launcher_plan(), "bwrap": sandbox.isolation_plan()}
    if not plans["bwrap"]["bwrap"]:
        print("bwrap can't make its sandbox on this machine: only the launcher is measured", file=sys.stderr)
        del plans["bwrap"]
    for name, plan in plans.items():
        described = sandbox.describe_isolation(plan, 0 if plan["root"] else None)
        print(f"{name}: {', '.join(f'{k}={v}' for k, v in described.items() if k not in ('uid', 'rlimits'))}")
    times: dict[tuple[str, str], list[float]] = {(p, lang): [] for p in plans for lang in TOOLS}
    for i in range(args.warmup + args.n):
        for language in TOOLS:
            for name, plan in plans.items():  # alternating: drift in machine load hits both paths alike
                elapsed = await execute(language, plan)
                if i >= args.warmup:
                    times[(name, language)].append(elapsed * 1000)
    rows = []
    for (name, language), values in times.items():
        rows.append([name, language, len(values), f"{percentile(values, 50):.1f}", f"{percentile(values, 99):.1f}",
                     f"{sum(values) / len(values):.1f}"])
    print()
    print(table(["path", "language", "n", "p50 ms", "p99 ms", "mean ms"], rows))
    if "bwrap" in plans:
        print()
        for language in TOOLS:
            added = percentile(times[("bwrap", language)], 50) - percentile(times[("launcher", language)], 50)
            print(f"bwrap adds {added:+.1f} ms at the median ({language})")
    print()
    print(machine_load())
    print(command_line())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
