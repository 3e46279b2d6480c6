"""Server-Timing stages: recorded within a request's Timings, ignored outside one, parsed back."""

from __future__ import annotations

import asyncio
import time

from core import timing


def test_stages_add_up_and_render_as_a_server_timing_header():
    timings = timing.Timings()
    token = timing.timings_var.set(timings)
    try:
        with timing.stage("text"):
            time.sleep(0.01)
        with timing.stage("text"):
            pass
        timing.record("embed", 4.5)
    finally:
        timing.timings_var.reset(token)
    assert timings.stages["text"] >= 10.0 and timings.stages["embed"] == 4.5
    header = timings.header(20.0)
    assert header.endswith("app;dur=20.00")
    assert timing.parse_header(header) == {"text": round(timings.stages["text"], 2), "embed": 4.5, "app": 20.0}


def test_outside_a_request_stages_are_not_recorded():
    assert timing.timings_var.get() is None
    with timing.stage("vector"):
        pass  # no Timings open: nothing to record into, and no error


def test_a_task_started_within_the_request_records_into_it():
    async def main() -> timing.Timings:
        timings = timing.Timings()
        timing.timings_var.set(timings)

        async def side() -> None:
            with timing.stage("embed"):
                await asyncio.sleep(0.005)

        await asyncio.ensure_future(side())
        return timings

    assert asyncio.run(main()).stages["embed"] >= 5.0


def test_parse_header_reads_other_servers_entries_too():
    assert timing.parse_header('db;dur=53, cache;desc="Cache Read";dur=23.2, miss') == {"db": 53.0, "cache": 23.2}


def test_take_gives_the_stages_so_far_rounded_and_starts_over():
    timings = timing.Timings()
    timings.add("context", 1.26)
    timings.add("context", 2.0)
    assert timings.take() == {"context": 3.3}
    timings.add("llm", 0.04)
    assert timings.take() == {"llm": 0.0} and timings.stages == {}
