"""Tool registry rules that need no database: schemas, arguments, limits."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from pipelines.tools.registry import check_arguments, check_limits, check_schema
from schemas.tools import ToolLimits

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer", "maximum": 5}},
          "required": ["q"], "additionalProperties": False}


def test_an_invalid_json_schema_is_schema_invalid():
    with pytest.raises(InvalidInput) as caught:
        check_schema({"type": "object", "properties": {"q": {"type": 12}}})
    assert caught.value.code == "schema_invalid" and caught.value.details["path"].startswith("/properties/q")
    check_schema(SCHEMA)


def test_arguments_are_checked_and_each_failing_path_is_named():
    check_arguments(SCHEMA, {"q": "x", "n": 5})
    with pytest.raises(InvalidInput) as caught:
        check_arguments(SCHEMA, {"n": 9, "extra": True})
    assert caught.value.code == "arguments_invalid"
    assert [e["path"] for e in caught.value.details["errors"]] == ["/", "/", "/n"]


def test_limits_above_the_service_maxima_are_refused(override_settings):
    override_settings(tool_timeout_max_seconds=60, tool_memory_max_mb=1024)
    check_limits(60, ToolLimits(memory_mb=1024))
    with pytest.raises(InvalidInput) as caught:
        check_limits(61, ToolLimits(memory_mb=2048))
    assert caught.value.code == "limit_exceeds_maximum"
    assert caught.value.details["maximum"] == {"timeout_seconds": 60, "memory_mb": 1024}
