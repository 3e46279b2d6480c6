"""Maintenance tasks: list them, and run one now for your organization as an ordinary job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from core.errors import Forbidden
from pipelines.jobs import lifecycle
from pipelines.maintenance.registry import TASKS, check_params, get_task
from schemas.common import ErrorOut
from schemas.enums import JobKind
from schemas.jobs import JobOut
from schemas.maintenance import MaintenanceRunIn, MaintenanceTaskOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/maintenance", tags=["maintenance"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.JOBS_READ))]
Runner = Annotated[Principal, Depends(Allow(P.MAINTENANCE_RUN))]
TaskName = Annotated[str, Path(max_length=64, description="A task's name, from `GET /api/v1/maintenance`.")]


@router.get("", response_model=list[MaintenanceTaskOut])
async def list_tasks(who: Reader) -> list[MaintenanceTaskOut]:
    """The maintenance tasks there are, what each does and the parameters it takes."""
    return [MaintenanceTaskOut(name=t.name, description=t.description, params_schema=t.params.model_json_schema(),
                               scopes=sorted(t.scopes)) for t in TASKS.values()]


@router.post("/{task}", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={404: {"model": ErrorOut, "description": "`unknown_task`: no task of that name"},
                        409: {"model": ErrorOut, "description": "Idempotency-Key reused with another body"},
                        422: {"model": ErrorOut, "description": "`invalid_params`: parameters the task refuses"}})
@audited("job", target=lambda result: result.id, details=lambda task: {"task": task})
async def run_task(task: TaskName, session: SessionDep, who: Runner, response: Response,
                   body: MaintenanceRunIn | None = None, key: IdempotencyKey = None) -> JobOut:
    """Run a maintenance task now for your organization (admins and owners).

    A platform task (`vacuum`) works on the whole service: only superusers run it (`403 superuser_required`
    for others), and its job is recorded in the organization they act for.

    Answers `202` with a `maintenance` job: listed, followed (`GET /api/v1/jobs/{id}/events`, a `progress`
    event per batch), cancellable, audited. Its `result` is the task's report (`result.task` names it).
    """
    found = get_task(task)
    params = check_params(found, (body or MaintenanceRunIn()).params)
    payload = {"task": found.name, "params": params}
    if found.platform_only:  # the whole service's data: its administrators', recorded in their organization
        if not who.superuser:
            raise Forbidden(f"{found.name} works on the whole service: only superusers run it",
                            code="superuser_required")
        payload["platform"] = True
    job, _ = await lifecycle.submit(session, who, kind=JobKind.MAINTENANCE, payload=payload, total=1, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)
