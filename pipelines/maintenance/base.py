"""What a maintenance task is: a name, what it does, the parameters it takes and the handler that does it.

Each task lives in a module of this package that defines `TASK`; `registry.TASKS` lists them. A run is
an ordinary job of kind `maintenance` whose payload is `{"task": name, "params": {...}}` (and, from a
schedule, `"schedule_id"`; for a platform-wide run, `"platform": true`): the handler
gets the job's context (progress, the cancellation checkpoint) and its parameters, already validated.
Handlers must be idempotent and work in batches that each commit: a redelivered job runs them again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipelines.jobs.runner import JobContext


class NoParams(BaseModel):
    """A task that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


Scope = Literal["organization", "platform"]
ORGANIZATION: frozenset[Scope] = frozenset({"organization"})
PLATFORM: frozenset[Scope] = frozenset({"platform"})
BOTH: frozenset[Scope] = frozenset({"organization", "platform"})


@dataclass(frozen=True)
class MaintenanceTask:
    name: str
    description: str
    handler: Callable[[JobContext, Any], Awaitable[dict[str, Any]]]
    params: type[BaseModel] = NoParams
    # Where it works: on one organization's data (its job's), on the whole service's ("platform": run now by
    # superusers, scheduled platform-wide), or both (an organization's part, and a platform-wide part).
    scopes: frozenset[Scope] = ORGANIZATION

    @property
    def platform_only(self) -> bool:
        return "organization" not in self.scopes


def is_platform_run(ctx: JobContext) -> bool:
    """Whether the job runs the task's platform-wide part (a platform schedule, or a superuser's run now)."""
    return bool(ctx.job.payload.get("platform"))
