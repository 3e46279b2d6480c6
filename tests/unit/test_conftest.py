"""tests/conftest.py's hooks, run by pytester on a small suite of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HOOKS = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pytester.makeconftest(HOOKS)
    journal = tmp_path / "journal"
    monkeypatch.setenv("AGENTMEM_TEST_JOURNAL", str(journal))
    return journal


def test_every_failure_is_journaled_in_order_and_the_first_ones_whole(pytester, suite):
    pytester.makepyfile("""
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("the database is gone")

        def test_a():
            print("captured by the first failure")
            assert 1 + 1 == 3, "arithmetic"

        def test_b(broken):
            pass

        def test_c():
            assert [1] == [2]

        def test_d():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1, failed=2, errors=1)
    lines = suite.read_text().splitlines()
    assert [line.split(" :: ")[0] for line in lines] == [
        "call failed: test_every_failure_is_journaled_in_order_and_the_first_ones_whole.py::test_a",
        "setup failed: test_every_failure_is_journaled_in_order_and_the_first_ones_whole.py::test_b",
        "call failed: test_every_failure_is_journaled_in_order_and_the_first_ones_whole.py::test_c"]
    assert "arithmetic" in lines[0] and "RuntimeError: the database is gone" in lines[1]
    first = Path(str(suite) + ".first").read_text()
    assert "captured by the first failure" in first and "arithmetic" in first
    assert first.rstrip().endswith("AssertionError")  # the error comes last, where a log's tail shows it
    assert "test_b" not in first and "test_c" not in first  # only the first is written whole


def test_an_ast_race_while_formatting_a_failure_reports_the_failure_not_an_internal_error(pytester, suite):
    pytester.makepyfile("""
        import _pytest._code.code as code

        def test_race(monkeypatch):
            def race(*args, **kwargs):
                raise SystemError("AST constructor recursion depth mismatch (before=126, after=178)")
            monkeypatch.setattr(code, "getstatementrange_ast", race)
            assert 1 + 1 == 3, "the real failure"

        def test_after():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1, failed=1)
    assert "INTERNALERROR" not in result.stdout.str()
    first = Path(str(suite) + ".first").read_text()
    assert "AssertionError: the real failure" in first and "test_race" in first
