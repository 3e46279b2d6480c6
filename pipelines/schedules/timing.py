"""When a schedule runs: a 5-field cron expression in an IANA time zone, or a fixed interval.

Cron expressions are read by `croniter` in the schedule's time zone, so `0 3 * * *` in Europe/Paris is 03:00
Paris time in summer and winter alike (a time that a daylight-saving change skips runs at the first
instant after it; one that repeats runs once, unless the expression runs every hour). Intervals keep
their phase: the next run is the last due time plus whole intervals, whatever the scheduler's delay.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

from core.errors import InvalidInput

MIN_INTERVAL_SECONDS = 60
MAX_INTERVAL_SECONDS = 366 * 86_400
MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or 422 `invalid_timezone`."""
    try:
        if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(f"{name[:64]!r} is not an IANA time zone (such as 'UTC' or 'Europe/Paris')",
                           code="invalid_timezone", details={"timezone": name[:64]}) from None


def _every_hour(cron: str) -> bool:
    fields = cron.split()
    return cron.strip().lower() == "@hourly" or (len(fields) == 5 and fields[1].startswith("*"))


def next_cron(cron: str, tz: str, after: datetime) -> datetime:
    """The first time strictly after `after` that `cron` names in time zone `tz` (UTC-aware).

    When the clocks go back, a wall time that comes twice runs the first time only, unless the expression
    runs every hour (`*` in the hour field), whose runs follow real time through the repeated hour.
    """
    zone_info = zone(tz)
    found = croniter(cron, after.astimezone(zone_info)).get_next(datetime).astimezone(UTC)
    local = found.astimezone(zone_info)
    if local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset() and not _every_hour(cron):
        return next_cron(cron, tz, found)  # the repeat of a wall time already run an hour before
    return found


def check_timing(cron: str | None, tz: str, interval_seconds: int | None) -> None:
    """Refuse (422) a timing that is not exactly one of a valid cron expression and a sane interval."""
    if (cron is None) == (interval_seconds is None):
        raise InvalidInput("give either `cron` or `interval_seconds`, not both and not neither", code="invalid_timing")
    zone(tz)
    if interval_seconds is not None:
        if not MIN_INTERVAL_SECONDS <= interval_seconds <= MAX_INTERVAL_SECONDS:
            raise InvalidInput(f"interval_seconds must be between {MIN_INTERVAL_SECONDS} and {MAX_INTERVAL_SECONDS}",
                               code="invalid_interval", details={"interval_seconds": interval_seconds})
        return
    assert cron is not None
    fields = cron.split()
    if not (len(fields) == 5 or (len(fields) == 1 and fields[0].lower() in MACROS)):
        raise InvalidInput("cron takes 5 fields (minute hour day-of-month month day-of-week) or a macro such as "
                           "@daily", code="invalid_cron", details={"cron": cron[:200]})
    try:
        next_cron(cron, tz, datetime.now(UTC))
    except (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, KeyError):
        raise InvalidInput(f"{cron[:200]!r} is not a cron expression that ever runs", code="invalid_cron",
                           details={"cron": cron[:200]}) from None


def next_after(cron: str | None, tz: str, interval_seconds: int | None, after: datetime) -> datetime:
    """The schedule's first due time strictly after `after`."""
    if interval_seconds is not None:
        return after + timedelta(seconds=interval_seconds)
    assert cron is not None
    return next_cron(cron, tz, after)


def first_run(cron: str | None, tz: str, interval_seconds: int | None, now: datetime) -> datetime:
    """When a new (or re-timed, or re-enabled) schedule first runs: its next due time from now."""
    return next_after(cron, tz, interval_seconds, now)


def advance(cron: str | None, tz: str, interval_seconds: int | None, due: datetime, now: datetime,
            grace_seconds: float) -> tuple[datetime, bool]:
    """For a schedule due at `due` seen at `now`: (the next due time after now, whether it ran late).

    Late means a whole period went by unseen (the next due time after `due` is already past) or the
    run is more than `grace_seconds` behind: the scheduler was stopped, or far behind.
    """
    if interval_seconds is not None:
        periods = int((now - due).total_seconds() // interval_seconds) + 1
        following = due + timedelta(seconds=interval_seconds)
        upcoming = due + timedelta(seconds=interval_seconds * periods)
    else:
        assert cron is not None
        following = next_cron(cron, tz, due)
        upcoming = following if following > now else next_cron(cron, tz, now)
    late = following <= now or (now - due).total_seconds() > grace_seconds
    return upcoming, late
