"""Schedules: maintenance tasks the scheduler runs on a cron expression or an interval (timing.py, store.py,
defaults.py, fire.py)."""
