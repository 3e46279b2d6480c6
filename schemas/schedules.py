"""Schedule API models: a maintenance task, its parameters and when it runs (a cron expression in a time zone,
or an interval), and what its last run did."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.inputs import display_name

CatchUp = Literal["skip", "run_once"]


def _cron() -> Any:
    return Field(default=None, min_length=1, max_length=200, examples=["30 3 * * *"],
                 description="5 fields (minute hour day-of-month month day-of-week) or a macro such as `@daily`, "
                             "read in `timezone`. Exactly one of `cron` and `interval_seconds`.")


def _interval() -> Any:
    return Field(default=None, ge=1, le=366 * 86_400, examples=[3600],
                 description="Run every this many seconds (at least 60) instead of on a cron expression.")


CATCH_UP = ("After a stopped scheduler: `run_once` runs the missed work once, `skip` waits for the next due "
            "time. Never more than one run.")


class ScheduleCreate(BaseModel):
    """A new schedule for your organization (or, `platform: true`, for the whole service: superusers)."""

    model_config = ConfigDict(extra="forbid")

    name: display_name(100)  # type: ignore[valid-type]
    task: str = Field(min_length=1, max_length=64, examples=["retention"],
                      description="A maintenance task's name, from `GET /api/v1/maintenance`.")
    params: dict[str, Any] = Field(default_factory=dict, description="The task's parameters (its `params_schema`).")
    cron: str | None = _cron()
    timezone: str = Field(default="UTC", min_length=1, max_length=64, examples=["Europe/Paris"],
                          description="An IANA time zone for `cron`.")
    interval_seconds: int | None = _interval()
    enabled: bool = True
    catch_up: CatchUp = Field(default="run_once", description=CATCH_UP)
    platform: bool = Field(default=False, description="A platform-wide schedule of a platform task (superusers).")


class ScheduleUpdate(BaseModel):
    """Change a schedule; fields left out keep their values. Giving `cron` clears `interval_seconds` and back."""

    model_config = ConfigDict(extra="forbid")

    name: display_name(100) | None = None  # type: ignore[valid-type]
    params: dict[str, Any] | None = None
    cron: str | None = _cron()
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    interval_seconds: int | None = _interval()
    enabled: bool | None = None
    catch_up: CatchUp | None = None


class ScheduleOut(BaseModel):
    """A schedule, when it runs next, and its last run (`last_job_status` is that job's status now)."""

    id: uuid.UUID
    organization_id: uuid.UUID | None = Field(description="Null for a platform-wide schedule.")
    platform: bool
    name: str
    task: str
    params: dict[str, Any]
    cron: str | None
    timezone: str
    interval_seconds: int | None
    enabled: bool
    catch_up: CatchUp
    default: str | None = Field(description="The default this schedule was installed as (editable, not deletable); "
                                            "null for one you created.")
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: uuid.UUID | None
    last_job_status: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any, last_job_status: str | None = None) -> ScheduleOut:
        return cls(id=row.id, organization_id=row.org_id, platform=row.org_id is None, name=row.name, task=row.task,
                   params=row.params, cron=row.cron, timezone=row.timezone, interval_seconds=row.interval_seconds,
                   enabled=row.enabled, catch_up=row.catch_up, default=row.default_name, next_run_at=row.next_run_at,
                   last_run_at=row.last_run_at, last_job_id=row.last_job_id, last_job_status=last_job_status,
                   created_at=row.created_at, updated_at=row.updated_at)
