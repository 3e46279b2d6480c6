"""Hooks for the whole suite: each phase's report on its test item, and a journal of failures as they happen.

The journal (AGENTMEM_TEST_JOURNAL, a file path; `.ci/run` sets it and prints it when the run fails) keeps
what a CI log's tail would otherwise lose: which test failed first and why, even if pytest itself stops
with an internal error later.
"""

from __future__ import annotations

import linecache
import os
import traceback

import pytest

FULL_ENTRIES = 1  # the first failure is also written whole, to the journal's path + ".first"
_written = 0


def _plain_longrepr(call: pytest.CallInfo) -> str:
    """The exception as plain text, built without the `ast` module (see `pytest_runtest_makereport`)."""
    lines = ["Traceback (most recent call last):"]
    for frame, lineno in traceback.walk_tb(call.excinfo.tb):
        code = frame.f_code
        if any(part in code.co_filename for part in ("/_pytest/", "/pluggy/")):
            continue
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}')
        source = linecache.getline(code.co_filename, lineno).strip()
        if source:
            lines.append(f"    {source}")
    lines.append(f"{call.excinfo.typename}: {call.excinfo.value}")
    return "\n".join(lines)


def _journal(report: pytest.TestReport) -> None:
    """A line per failed phase (test id and the error's last line); the first one whole: its captured output
    (a failed integration test's stack logs), then the error, last, where a log's tail shows it."""
    global _written
    path = os.environ.get("AGENTMEM_TEST_JOURNAL")
    if not path or not report.failed:
        return
    text = report.longreprtext.strip()
    crash = getattr(report.longrepr, "reprcrash", None)
    last = (crash.message if crash is not None else text.splitlines()[-1] if text else "").replace("\n", " ")[:300]
    with open(path, "a", encoding="utf-8") as journal:
        journal.write(f"{report.when} failed: {report.nodeid} :: {last}\n")
    if _written < FULL_ENTRIES:
        sections = "".join(f"--- {name} ---\n{content[-4_000:]}\n" for name, content in report.sections)
        with open(path + ".first", "a", encoding="utf-8") as first:
            first.write(f"=== {report.when} failed: {report.nodeid}\n{sections}--- the error ---\n{text[-5_000:]}\n")
    _written += 1


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    try:
        report = yield
    except SystemError as exc:
        # CPython 3.11 (3.11.7 here and in CI) keeps the AST constructor's recursion depth in shared state: a
        # traceback formatted elsewhere while pytest parses a test's source (a thread, or a finalizer that
        # logs) makes ast.parse raise this (python/cpython#106905) and pytest stops with an internal error.
        # The test's own failure is reported as plain text instead.
        if "AST constructor recursion depth mismatch" not in str(exc) or call.excinfo is None:
            raise
        report = pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed",
                                   _plain_longrepr(call), call.when, user_properties=item.user_properties,
                                   duration=call.duration, start=call.start, stop=call.stop)
    setattr(item, f"rep_{report.when}", report)  # integration fixtures read `rep_call` to dump logs on failure
    _journal(report)
    return report
