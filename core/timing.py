"""Where a request's time goes: named stages, reported in the `Server-Timing` response header.

The request middleware opens a `Timings` for each HTTP request; code anywhere below it marks its
stages with `stage("name")` (a no-op where no `Timings` is open, e.g. in most jobs). A browser's
devtools, curl `-i` and `bench/search_latency.py` read the header. An agent turn opens its own and
reports its stages in its `usage` events (`bench/agent.py` reads them).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class Timings:
    """Milliseconds per stage name; a stage entered twice adds up."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def add(self, name: str, milliseconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + milliseconds

    def take(self) -> dict[str, float]:
        """The stages so far, rounded to 0.1 ms, and start over (for a job reporting its stages as it goes)."""
        out = {name: round(ms, 1) for name, ms in self.stages.items()}
        self.stages.clear()
        return out

    def header(self, total_ms: float) -> str:
        """`Server-Timing` value: each stage, then `app` (the whole request until its response began)."""
        parts = [f"{name};dur={ms:.2f}" for name, ms in self.stages.items()]
        return ", ".join(parts + [f"app;dur={total_ms:.2f}"])


timings_var: ContextVar[Timings | None] = ContextVar("timings", default=None)


def record(name: str, milliseconds: float) -> None:
    """Add a stage measured elsewhere (e.g. a task that ran alongside)."""
    assert _NAME.match(name), name
    timings = timings_var.get()
    if timings is not None:
        timings.add(name, milliseconds)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage `name` of the current request."""
    started = time.perf_counter()
    try:
        yield
    finally:
        record(name, (time.perf_counter() - started) * 1000)


def parse_header(value: str) -> dict[str, float]:
    """`Server-Timing` back into {name: ms} (for clients and benchmarks)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur":
                out[name.strip()] = float(number)
    return out
