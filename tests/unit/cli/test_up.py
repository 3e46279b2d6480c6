"""`agentmem up`'s restart policy: at once after a healthy run, slower and slower in a crash loop."""

from __future__ import annotations

import types

import pytest

from cli import up


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Flaky:
    """Something that dies whenever told to, and may refuse to start."""

    def __init__(self) -> None:
        self.running = True
        self.starts = 0
        self.refuse = 0

    def start(self) -> None:
        self.starts += 1
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("port still busy")
        self.running = True


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(up, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    return clock


def watch_of(thing: Flaky, clock: Clock) -> up.Watch:
    return up.Watch("thing", thing.start, lambda: thing.running, lambda: "killed by SIGKILL", lambda: 1,
                    started_at=clock.now)


def delays_until_restarted(watch: up.Watch, thing: Flaky, clock: Clock) -> float:
    """Tick every 0.25 s until the thing runs again; the time it took."""
    died_at = clock.now
    watch.check()
    while not thing.running:
        clock.now += 0.25
        watch.check()
    return clock.now - died_at


def test_a_thing_that_dies_after_a_healthy_run_is_restarted_at_once(clock, caplog):
    caplog.set_level("INFO", logger="agentmem.up")
    thing = Flaky()
    watch = watch_of(thing, clock)
    clock.now += 60
    thing.running = False
    assert delays_until_restarted(watch, thing, clock) == 0
    assert watch.restarts == 1 and thing.starts == 1
    assert "thing (pid 1) killed by SIGKILL; restarting it (restart 1)" in caplog.text
    assert "thing is running again" in caplog.text


def test_a_crash_loop_backs_off_doubling_up_to_30_seconds(clock):
    thing = Flaky()
    watch = watch_of(thing, clock)
    waited = []
    for _ in range(8):
        clock.now += 0.5  # dies half a second after each start
        thing.running = False
        waited.append(delays_until_restarted(watch, thing, clock))
    assert waited == [1, 2, 4, 8, 16, 30, 30, 30]
    clock.now += 45  # a healthy run resets the delay
    thing.running = False
    assert delays_until_restarted(watch, thing, clock) == 0


def test_a_failed_start_is_retried_later_not_raised(clock, caplog):
    thing = Flaky()
    watch = watch_of(thing, clock)
    clock.now += 60
    thing.running, thing.refuse = False, 2
    assert delays_until_restarted(watch, thing, clock) == 0 + 1 + 2
    assert thing.starts == 3
    assert caplog.text.count("thing did not start: port still busy") == 2
