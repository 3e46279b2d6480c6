"""The default schedules: one list, valid timings and tasks, spread over the hour per organization."""

from __future__ import annotations

import uuid

from pipelines.maintenance.registry import TASKS
from pipelines.schedules import timing
from pipelines.schedules.defaults import DEFAULTS


def test_every_default_names_a_task_it_may_schedule_with_a_valid_timing():
    for default in DEFAULTS:
        task = TASKS[default.task]
        assert ("platform" if default.platform else "organization") in task.scopes, default
        task.params.model_validate(default.params)
        timing.check_timing(default.cron_for(None if default.platform else uuid.uuid4()), "UTC", None)


def test_the_issue_asks_for_these_defaults():
    assert {d.task for d in DEFAULTS} >= {"integrity", "retention", "vacuum", "sweep_blocks",
                                          "summarize_conversations", "reembed", "purge", "consolidate"}
    assert len({d.name for d in DEFAULTS}) == len(DEFAULTS)


def test_organizations_hourly_runs_are_spread_over_the_hour():
    sweep = next(d for d in DEFAULTS if d.task == "sweep_blocks")
    minutes = {sweep.cron_for(uuid.UUID(int=i)).split()[0] for i in range(60)}
    assert len(minutes) == 60
