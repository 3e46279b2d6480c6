"""Job events on Redis streams: the only module that knows the stream keys.

Every job has a stream (`agentmem:events:job:{id}`) and every organization one for dashboards
(`agentmem:events:org:{id}`). Writes are capped (`MAXLEN ~`) and expire; readers block on XREAD.
The stream entry id is the SSE `id:`, so `Last-Event-ID` resumes exactly after it.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from core.redis import get_redis, get_stream_redis
from core.settings import get_settings
from schemas.enums import EventType
from schemas.events import JobEvent

PREFIX = "agentmem:events"
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
MAX_ID_PART = 2**64 - 1


def job_stream(job_id: Any) -> str:
    """Stream key of one job's events."""
    return f"{PREFIX}:job:{job_id}"


def org_stream(org_id: Any) -> str:
    """Stream key of every job event of one organization."""
    return f"{PREFIX}:org:{org_id}"


def is_stream_id(value: str) -> bool:
    """Whether `value` is a Redis stream entry id (`ms-seq`, each part an unsigned 64-bit number)."""
    return bool(STREAM_ID.fullmatch(value)) and all(int(part) <= MAX_ID_PART for part in value.split("-"))


async def publish(type_: EventType, *, job_id: Any, org_id: Any, data: dict[str, Any] | None = None,
                  to_org: bool = True) -> str:
    """Append an event to the job's stream and (unless `to_org` is false: token deltas) the organization's;
    returns the job stream entry id."""
    async with get_redis().pipeline(transaction=False) as pipe:
        add_publish(pipe, type_, job_id=job_id, org_id=org_id, data=data, to_org=to_org)
        job_entry_id, *_ = await pipe.execute()
    return job_entry_id


async def publish_many(batch: list[tuple[EventType, Any, Any, dict[str, Any]]]) -> None:
    """`publish` for several events (type, job id, organization id, data), in order, in one round trip."""
    async with get_redis().pipeline(transaction=False) as pipe:
        for type_, job_id, org_id, data in batch:
            add_publish(pipe, type_, job_id=job_id, org_id=org_id, data=data)
        await pipe.execute()


def add_publish(pipe: Any, type_: EventType, *, job_id: Any, org_id: Any, data: dict[str, Any] | None = None,
                to_org: bool = True) -> int:
    """Queue `publish`'s commands on a Redis pipeline (to share its round trip); returns how many were queued."""
    settings = get_settings()
    fields = {"type": type_.value, "job_id": str(job_id), "org_id": str(org_id),
              "data": json.dumps(data or {}, default=str), "ts": repr(time.time())}
    job_key, org_key = job_stream(job_id), org_stream(org_id)
    pipe.xadd(job_key, fields, maxlen=settings.stream_maxlen_job, approximate=True)
    pipe.expire(job_key, settings.stream_ttl_seconds)
    if to_org:
        pipe.xadd(org_key, fields, maxlen=settings.stream_maxlen_org, approximate=True)
        pipe.expire(org_key, settings.stream_ttl_seconds)
    return 4 if to_org else 2


def parse(entry_id: str, fields: dict[str, str]) -> JobEvent:
    """Turn a stream entry into a JobEvent."""
    return JobEvent(id=entry_id, type=EventType(fields["type"]), job_id=fields["job_id"], org_id=fields["org_id"],
                    data=json.loads(fields.get("data") or "{}"), ts=float(fields.get("ts") or 0))


async def last_id(key: str) -> str:
    """Id of the newest entry of a stream, `0-0` when it is empty or gone."""
    entries = await get_redis().xrevrange(key, count=1)
    return entries[0][0] if entries else "0-0"


async def history(key: str, count: int = 50) -> list[JobEvent]:
    """The newest `count` events of a stream, oldest first."""
    entries = await get_redis().xrevrange(key, count=count)
    return [parse(i, f) for i, f in reversed(entries)]


async def read_range(key: str, *, after: str, upto: str, count: int) -> list[JobEvent]:
    """At most `count` events of a stream after `after` up to and including `upto`, oldest first (no blocking)."""
    entries = await get_redis().xrange(key, min=f"({after}", max=upto, count=count)
    return [parse(i, f) for i, f in entries]


async def read(positions: dict[str, str], block_ms: int, count: int = 100) -> list[tuple[str, JobEvent]]:
    """Block until events arrive after the given positions (or `block_ms` passes); returns (key, event) pairs."""
    response = await get_stream_redis().xread(positions, count=count, block=block_ms)
    out: list[tuple[str, JobEvent]] = []
    for key, entries in response or []:
        for entry_id, fields in entries:
            out.append((key, parse(entry_id, fields)))
    return out
