"""The schedules every organization (and the platform) starts with: one list, installed by the scheduler.

The scheduler installs the defaults organizations lack (new organizations, and new entries of
`DEFAULTS` for existing ones) on its first pass and once a minute after, so a default is installed once
per organization and name: editing or disabling it sticks, and it can't be deleted (it would come back).
Organizations' hourly and daily runs are spread over the hour by their id, so thousands of organizations
don't all start at :00.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from pipelines.schedules import timing
from schemas.inputs import name_key
from schemas.tables import Schedule

NO_ORG = uuid.UUID(int=0)


@dataclass(frozen=True)
class DefaultSchedule:
    """A default: `cron` may use `{minute}`, the organization's minute of the hour (0 platform-wide)."""

    name: str
    task: str
    cron: str
    platform: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "run_once"
    enabled: bool = True  # installed disabled: there for an admin to turn on

    def cron_for(self, org_id: uuid.UUID | None) -> str:
        return self.cron.format(minute=0 if org_id is None else org_id.int % 60)


# The README's "Schedules" table lists these.
DEFAULTS: list[DefaultSchedule] = [
    # A name an organization already gave a schedule of its own keeps it: that default is not installed there.
    DefaultSchedule("integrity (default)", "integrity", "{minute} 2 * * *"),
    DefaultSchedule("retention (default)", "retention", "{minute} 3 * * *"),
    # Memories whose embedding failed, or that an older model embedded, get one of the current model.
    DefaultSchedule("reembed (default)", "reembed", "{minute} 1 * * *"),
    # Expired memories, and rows deleted longer ago than the organization's retention, go for good.
    DefaultSchedule("purge (default)", "purge", "{minute} 4 * * *"),
    # Merging memories changes what users wrote: there, weekly, for an admin to turn on.
    DefaultSchedule("consolidate (default)", "consolidate", "{minute} 5 * * 6", enabled=False),
    DefaultSchedule("sweep_blocks (default)", "sweep_blocks", "{minute} * * * *", catch_up="skip"),
    DefaultSchedule("summarize_conversations (default)", "summarize_conversations", "{minute} * * * *",
                    catch_up="skip"),
    DefaultSchedule("retention, platform-wide (default)", "retention", "30 3 * * *", platform=True),
    DefaultSchedule("vacuum (default)", "vacuum", "0 4 * * 0", platform=True),
]

_MISSING = text("""
    SELECT o.id, d.name FROM organizations o
    CROSS JOIN unnest(CAST(:names AS text[]), CAST(:keys AS text[])) AS d(name, key)
    WHERE o.deleted_at IS NULL AND (CAST(:orgs AS uuid[]) IS NULL OR o.id = ANY(CAST(:orgs AS uuid[]))) AND NOT EXISTS (
        SELECT 1 FROM schedules s WHERE coalesce(s.org_id, CAST(:no_org AS uuid)) = o.id
        AND (s.default_name = d.name OR s.name_key = d.key))
    LIMIT :limit""")
_MISSING_PLATFORM = text("""
    SELECT d.name FROM unnest(CAST(:names AS text[]), CAST(:keys AS text[])) AS d(name, key) WHERE NOT EXISTS (
        SELECT 1 FROM schedules s WHERE coalesce(s.org_id, CAST(:no_org AS uuid)) = CAST(:no_org AS uuid)
        AND (s.default_name = d.name OR s.name_key = d.key))""")


def _row(default: DefaultSchedule, org_id: uuid.UUID | None, now: datetime) -> dict[str, Any]:
    cron = default.cron_for(org_id)
    return {"id": uuid.uuid4(), "org_id": org_id, "name": default.name, "name_key": name_key(default.name),
            "task": default.task, "params": default.params, "cron": cron, "timezone": "UTC", "enabled": default.enabled,
            "catch_up": default.catch_up, "default_name": default.name, "created_by": "system",
            "next_run_at": timing.first_run(cron, "UTC", None, now)}


async def install_defaults(session: AsyncSession, *, batch: int = 500, org_ids: list[uuid.UUID] | None = None,
                           platform: bool = True) -> int:
    """Insert the defaults that organizations (all, or `org_ids`) and the platform lack, up to `batch` rows;
    how many were added."""
    by_name = {d.name: d for d in DEFAULTS}
    now = datetime.now(UTC)
    org_names = [d.name for d in DEFAULTS if not d.platform]
    platform_names = [d.name for d in DEFAULTS if d.platform]
    rows = [_row(by_name[name], org_id, now) for org_id, name in (await session.execute(
        _MISSING, {"names": org_names, "keys": [name_key(n) for n in org_names], "no_org": NO_ORG,
                   "limit": batch, "orgs": org_ids})).all()]
    if platform and platform_names:
        rows += [_row(by_name[name], None, now) for (name,) in (await session.execute(
            _MISSING_PLATFORM, {"names": platform_names, "keys": [name_key(n) for n in platform_names],
                                "no_org": NO_ORG})).all()]
    if not rows:
        return 0
    result = await session.execute(insert(Schedule).values(rows).on_conflict_do_nothing().returning(Schedule.id))
    return len(result.all())
