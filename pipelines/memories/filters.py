"""Search filters → SQL: scope, exact metadata, time range, and structured AND/OR conditions.

Field names are validated by the schema (a fixed set, or `metadata.<safe keys>`), and every value
travels as a bound parameter, so nothing a user sends becomes SQL text.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Numeric, and_, case, cast, false, func, not_, or_, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from pipelines.memories.corpus import MEMORIES
from schemas.search import Condition, FilterGroup, MemorySearchIn
from schemas.tables import Memory

_SCOPE = {"user_id": Memory.user_id, "agent_id": Memory.agent_id, "run_id": Memory.run_id}


def _nested(path: list[str], value: Any) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def _metadata_condition(path: list[str], op: str, value: Any) -> ColumnElement[bool]:
    node = Memory.meta[path]                       # jsonb at the path (#>)
    as_text = Memory.meta[path].astext             # text at the path (#>>)
    if op in ("eq", "ne"):
        # Containment uses the GIN index on metadata.
        test = Memory.meta.op("@>")(cast(_nested(path, value), JSONB))
        return test if op == "eq" else not_(test)
    if op in ("in", "nin"):
        test = or_(*[Memory.meta.op("@>")(cast(_nested(path, v), JSONB)) for v in value])
        return test if op == "in" else not_(test)
    if op == "contains":
        element = Memory.meta.op("@>")(cast(_nested(path, [value]), JSONB))  # an array holding the value
        if not isinstance(value, str):
            return element
        escaped = value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
        substring = and_(func.jsonb_typeof(node) == "string", as_text.ilike(f"%{escaped}%"))
        return or_(substring, element)
    compare = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}[op]
    if isinstance(value, (int, float)):
        # Only JSON numbers compare as numbers (CASE: SQL's AND does not promise to skip the cast).
        number = case((func.jsonb_typeof(node) == "number", cast(as_text, Numeric)), else_=None)
        return getattr(number, compare)(value)
    return and_(func.jsonb_typeof(node) == "string", getattr(as_text, compare)(str(value)))


def _condition(c: Condition) -> ColumnElement[bool]:
    if c.field == "created_at":
        when = datetime.fromisoformat(str(c.value))
        return {"eq": Memory.created_at == when, "gt": Memory.created_at > when, "gte": Memory.created_at >= when,
                "lt": Memory.created_at < when, "lte": Memory.created_at <= when}[c.op]
    if c.field in _SCOPE:
        column = _SCOPE[c.field]
        values = c.value if isinstance(c.value, list) else [c.value]
        values = [str(v) for v in values]
        return {"eq": column == values[0], "ne": column.is_distinct_from(values[0]), "in": column.in_(values),
                "nin": not_(column.in_(values)), "contains": column.contains(values[0], autoescape=True),
                "gt": column > values[0], "gte": column >= values[0], "lt": column < values[0],
                "lte": column <= values[0]}[c.op]
    return _metadata_condition(c.field.split(".")[1:], c.op, c.value)


def compile_filter(node: FilterGroup | Condition) -> ColumnElement[bool]:
    """One SQL boolean for a condition or an AND/OR group."""
    if isinstance(node, Condition):
        return _condition(node)
    if node.all_of is not None:
        return and_(true(), *[compile_filter(c) for c in node.all_of])
    return or_(false(), *[compile_filter(c) for c in node.any_of or []])


def narrowing_clauses(query: MemorySearchIn) -> list[ColumnElement[bool]]:
    """What narrows a search within its organization: scope, metadata, time, filters (none: the whole org)."""
    clauses: list[ColumnElement[bool]] = []
    for name, column in _SCOPE.items():
        value = getattr(query, name)
        if value is not None:
            clauses.append(column == value)
    if query.metadata:
        clauses.append(Memory.meta.op("@>")(cast(query.metadata, JSONB)))
    if query.created_after is not None:
        clauses.append(Memory.created_at >= query.created_after)
    if query.created_before is not None:
        clauses.append(Memory.created_at < query.created_before)
    if query.filters is not None:
        clauses.append(compile_filter(query.filters))
    return clauses


def org_clauses(org_id: uuid.UUID) -> list[ColumnElement[bool]]:
    """The organization's live memories."""
    return MEMORIES.org_clauses(org_id)


def search_clauses(org_id: uuid.UUID, query: MemorySearchIn) -> list[ColumnElement[bool]]:
    """Everything a search is narrowed by: organization, live rows, scope, metadata, time, filters."""
    return org_clauses(org_id) + narrowing_clauses(query)
