"""The maintenance tasks by name, and the `maintenance` job handler that runs one of them."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.errors import InvalidInput, NotFound, PermanentJobError
from pipelines.jobs.runner import JobContext
from pipelines.maintenance import (
    consolidate,
    integrity,
    purge,
    reembed,
    retention,
    summarize_conversations,
    sweep_blocks,
    vacuum,
)
from pipelines.maintenance.base import MaintenanceTask

TASKS: dict[str, MaintenanceTask] = {t.name: t for t in (
    integrity.TASK, reembed.TASK, purge.TASK, consolidate.TASK, retention.TASK, sweep_blocks.TASK,
    summarize_conversations.TASK, vacuum.TASK)}


class UnknownTask(NotFound):
    code = "unknown_task"


def get_task(name: str) -> MaintenanceTask:
    """The task called `name`, or 404 `unknown_task` naming the ones there are."""
    task = TASKS.get(name)
    if task is None:
        raise UnknownTask(f"no maintenance task {name!r}", details={"tasks": sorted(TASKS)})
    return task


def check_params(task: MaintenanceTask, params: dict[str, Any]) -> dict[str, Any]:
    """`params` validated against the task's model (422 `invalid_params`), as stored in the job's payload."""
    try:
        return task.params.model_validate(params).model_dump(mode="json")
    except ValidationError as exc:
        raise InvalidInput(f"invalid parameters for {task.name}", code="invalid_params",
                           details={"errors": exc.errors(include_url=False, include_context=False)}) from None


async def run_maintenance(ctx: JobContext) -> dict[str, Any]:
    """The `maintenance` job: run the task its payload names with its parameters."""
    name = ctx.job.payload.get("task")
    if name not in TASKS:
        raise PermanentJobError(f"no maintenance task {name!r}", code="unknown_task")
    task = TASKS[name]
    params = task.params.model_validate(ctx.job.payload.get("params") or {})
    return {"task": name, **await task.handler(ctx, params)}
