"""Bad values for every field of every request, derived from the OpenAPI document.

For a route with a JSON body, `field_cases` walks its request schema and, starting from the route's
minimal valid body (tests/support/routes.py `BODIES`), yields one body per (field, bad value):
strings get a NUL character and one character past their `maxLength`; numbers get `NaN`,
`Infinity`, `-Infinity` and `1e400`; integers also get 2^31 and 2^63; free-form objects (metadata,
filters) get a NUL in a key and in a value, and a non-finite number. A new field is covered the day
it is added.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

# Markers replaced in the serialized body: JSON's own encoder can't write 1e400.
HUGE = "__agentmem_huge_number__"
NUL = "bad\x00value"


@cache
def openapi() -> dict:
    from api.app import create_app

    return create_app().openapi()


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = openapi()["components"]["schemas"][name]
    return schema


def request_schema(method: str, path: str, *, form: bool = False) -> dict | None:
    operation = openapi()["paths"][path][method.lower()]
    content = operation.get("requestBody", {}).get("content", {})
    media = (content.get("multipart/form-data") if form
             else content.get("application/json") or content.get("application/x-www-form-urlencoded"))
    return _resolve(media["schema"]) if media else None


def form_cases(template: dict[str, str], schema: dict) -> list[tuple[str, str, dict[str, str]]]:
    """One bad multipart form per (text or integer field, bad value): (field, label, form fields).

    Files are left as the template has them; a form sends text, so numbers are only too large."""
    cases = []
    for name, prop in schema.get("properties", {}).items():
        kinds = _kinds(prop)
        if any(k.get("format") in ("binary", "base64") or k.get("contentMediaType") for k in kinds):
            continue
        for kind in kinds:
            if kind.get("type") == "string":
                cases.append((name, "NUL", template | {name: NUL}))
                if kind.get("maxLength") is not None:
                    cases.append((name, "over maxLength", template | {name: "x" * (kind["maxLength"] + 1)}))
            elif kind.get("type") == "integer":
                cases.append((name, "2^31", template | {name: str(2**31)}))
    return cases


def query_parameters(method: str, path: str) -> list[dict]:
    operation = openapi()["paths"][path][method.lower()]
    return [p for p in operation.get("parameters", []) if p["in"] == "query"]


def _kinds(schema: dict) -> list[dict]:
    """The alternatives of a schema (anyOf / oneOf, with null left out), each resolved."""
    schema = _resolve(schema)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return [k for option in options for k in _kinds(option)]
    return [] if schema.get("type") == "null" else [schema]


@dataclass(frozen=True)
class Case:
    field: str
    label: str
    body: str  # serialized JSON, with non-finite numbers as JSON's `NaN` / `Infinity` / `1e400`


def _set(body: Any, path: tuple, value: Any) -> Any:
    body = copy.deepcopy(body)
    target = body
    for i, step in enumerate(path[:-1]):
        following = path[i + 1]
        if isinstance(target, list):
            while len(target) <= step:
                target.append({} if not isinstance(following, int) else [])
            target = target[step]
        else:
            if step not in target or not isinstance(target[step], (dict, list)):
                target[step] = [] if isinstance(following, int) else {}
            target = target[step]
    last = path[-1]
    if isinstance(target, list):
        while len(target) <= last:
            target.append(None)
    target[last] = value
    return body


def _serialize(body: Any) -> str:
    return json.dumps(body).replace(f'"{HUGE}"', "1e400")


def _leaves(schema: dict, path: tuple, depth: int = 0) -> list[tuple[tuple, dict]]:
    """(path, schema) of every string, number, integer and free-form object field under `schema`."""
    if depth > 6:
        return []
    found = []
    for kind in _kinds(schema):
        type_ = kind.get("type")
        if type_ in ("string", "number", "integer"):
            found.append((path, kind))
        elif type_ == "array" and "items" in kind:
            found.extend(_leaves(kind["items"], (*path, 0), depth + 1))
        elif type_ == "object" or "properties" in kind:
            properties = kind.get("properties")
            if properties:
                for name, sub in properties.items():
                    found.extend(_leaves(sub, (*path, name), depth + 1))
            else:
                found.append((path, {"type": "object"}))
        elif not type_ and not kind.get("properties"):
            found.append((path, {"type": "any"}))  # `Any`: a value of any JSON type
    return found


def field_cases(template: Any, schema: dict) -> list[Case]:
    """One bad body per (field, bad value), built on the valid `template`."""
    cases: list[Case] = []
    seen: set[tuple] = set()
    for path, leaf in _leaves(schema, ()):
        name = ".".join(map(str, path))
        type_ = leaf.get("type")
        bad: list[tuple[str, Any]] = []
        if type_ in ("string", "any"):
            bad.append(("NUL", NUL))
            if leaf.get("maxLength") is not None and leaf["maxLength"] < 200_000:
                bad.append(("over maxLength", "x" * (leaf["maxLength"] + 1)))
        if type_ in ("number", "integer", "any"):
            bad += [("NaN", float("nan")), ("Infinity", float("inf")), ("-Infinity", float("-inf")), ("1e400", HUGE)]
        if type_ == "integer":
            bad += [("2^31", 2**31), ("2^63", 2**63)]
        if type_ in ("object", "any"):
            bad += [("NUL in a key", {"ke\x00y": "v"}), ("NUL in a value", {"key": NUL}),
                    ("NaN in a value", {"key": float("nan")}), ("1e400 in a value", {"key": HUGE})]
        for label, value in bad:
            if (path, label) in seen:
                continue
            seen.add((path, label))
            cases.append(Case(name, label, _serialize(_set(template, path, value))))
    return cases
