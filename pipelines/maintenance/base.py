"""What a maintenance task is: a name, what it does, the parameters it takes and the handler that does it.

Each task lives in a module of this package that defines `TASK`; `registry.TASKS` lists them. A run is
an ordinary job of kind `maintenance` whose payload is `{"task": name, "params": {...}}`: the handler
gets the job's context (progress, the cancellation checkpoint) and its parameters, already validated.
Handlers must be idempotent and work in batches that each commit: a redelivered job runs them again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from pipelines.jobs.runner import JobContext


class NoParams(BaseModel):
    """A task that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class MaintenanceTask:
    name: str
    description: str
    handler: Callable[[JobContext, Any], Awaitable[dict[str, Any]]]
    params: type[BaseModel] = NoParams
