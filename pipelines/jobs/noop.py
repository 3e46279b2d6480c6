"""The no-op job (benchmarks only): everything a job is (row, claim, lease, outcome, events) around no work.

bench/noop_jobs.py runs it beside a bare Dramatiq actor on the same broker, to see what the job
machinery costs over Dramatiq itself. The API accepts it only with AGENTMEM_BENCH_JOBS.
"""

from __future__ import annotations

from typing import Any


async def noop(ctx: Any) -> dict[str, Any]:
    """Do nothing, successfully."""
    return {}
