"""Schedule timing: cron in a time zone, intervals that keep their phase, late runs, and refused timings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import InvalidInput
from pipelines.schedules import timing

T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_cron_is_read_in_the_schedules_time_zone():
    # 03:00 in Paris is 01:00 UTC in summer (CEST) and 02:00 UTC in winter (CET).
    assert timing.next_cron("0 3 * * *", "Europe/Paris", T) == datetime(2026, 6, 2, 1, 0, tzinfo=UTC)
    winter = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert timing.next_cron("0 3 * * *", "Europe/Paris", winter) == datetime(2026, 1, 11, 2, 0, tzinfo=UTC)


def test_a_time_the_clock_skips_runs_once_just_after_it():
    # 02:30 does not exist in New York on 2026-03-08 (clocks go from 02:00 to 03:00).
    before = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST
    first = timing.next_cron("30 2 * * *", "America/New_York", before)
    assert first == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert timing.next_cron("30 2 * * *", "America/New_York", first) == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)


def test_a_time_the_clock_repeats_runs_once_unless_the_expression_runs_every_hour():
    # 01:30 comes twice in New York on 2026-11-01 (05:30 UTC in EDT, 06:30 UTC in EST).
    before = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
    first = timing.next_cron("30 1 * * *", "America/New_York", before)
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert timing.next_cron("30 1 * * *", "America/New_York", first) == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
    half_hourly, at = [], before
    for _ in range(6):
        at = timing.next_cron("*/30 * * * *", "America/New_York", at)
        half_hourly.append(at)
    assert half_hourly == [before + timedelta(minutes=30 * i) for i in range(1, 7)]  # real time, repeats included


def test_an_on_time_run_moves_to_the_next_period():
    due = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    upcoming, late = timing.advance("0 * * * *", "UTC", None, due, due + timedelta(seconds=3), grace_seconds=600)
    assert upcoming == datetime(2026, 6, 1, 12, 0, tzinfo=UTC) and late is False


def test_a_run_missed_for_several_periods_is_late_and_the_next_is_in_the_future():
    due = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    upcoming, late = timing.advance("0 * * * *", "UTC", None, due, T + timedelta(minutes=20), grace_seconds=600)
    assert late is True and upcoming == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


def test_a_run_behind_by_more_than_the_grace_is_late_even_within_its_period():
    due = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    upcoming, late = timing.advance("0 3 * * *", "UTC", None, due, due + timedelta(hours=2), grace_seconds=600)
    assert late is True and upcoming == datetime(2026, 6, 2, 3, 0, tzinfo=UTC)


def test_intervals_keep_their_phase_after_a_delay():
    due = T
    upcoming, late = timing.advance(None, "UTC", 3600, due, due + timedelta(hours=2, minutes=10), grace_seconds=600)
    assert upcoming == T + timedelta(hours=3) and late is True
    upcoming, late = timing.advance(None, "UTC", 3600, due, due + timedelta(seconds=1), grace_seconds=600)
    assert upcoming == T + timedelta(hours=1) and late is False


@pytest.mark.parametrize(("cron", "tz", "interval", "code"), [
    ("0 3 * * *", "Mars/Olympus", None, "invalid_timezone"),
    ("0 3 * * *", "../../etc/passwd", None, "invalid_timezone"),
    ("61 * * * *", "UTC", None, "invalid_cron"),
    ("0 0 * * * *", "UTC", None, "invalid_cron"),  # six fields (seconds) are not taken
    ("0 0 31 2 *", "UTC", None, "invalid_cron"),  # February 31st never comes
    ("every day", "UTC", None, "invalid_cron"),
    (None, "UTC", 59, "invalid_interval"),
    (None, "UTC", None, "invalid_timing"),
    ("0 3 * * *", "UTC", 3600, "invalid_timing"),
])
def test_bad_timings_are_refused_with_a_stable_code(cron, tz, interval, code):
    with pytest.raises(InvalidInput) as refused:
        timing.check_timing(cron, tz, interval)
    assert refused.value.code == code


@pytest.mark.parametrize(("cron", "interval"), [("*/15 9-17 * * mon-fri", None), ("@daily", None), (None, 60)])
def test_good_timings_pass(cron, interval):
    timing.check_timing(cron, "Asia/Kolkata", interval)
