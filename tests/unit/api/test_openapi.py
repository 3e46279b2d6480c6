"""The OpenAPI document tells a client which errors each route can answer, with their body."""

from __future__ import annotations

import pytest

from api.app import create_app
from api.deps import PUBLIC_ROUTES

SPEC = create_app().openapi()
OPERATIONS = [(path, method, op) for path, ops in SPEC["paths"].items() for method, op in ops.items()
              if path.startswith("/api/v1/")]


@pytest.mark.parametrize("path, method, operation", OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS])
def test_every_route_documents_its_error_statuses_with_the_error_body(path, method, operation):
    responses = operation["responses"]
    assert "503" in responses, "every route can meet a database or Redis outage"
    if path not in PUBLIC_ROUTES:
        assert {"401", "429"} <= set(responses), "every authenticated route is rate-limited"
    for status, response in responses.items():
        if status.startswith(("4", "5")) and "content" in response:
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (status, schema)


def _resolves(node) -> list[str]:
    """Every `$ref` in a piece of the document."""
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in _resolves(v)]
    if isinstance(node, list):
        return [r for v in node for r in _resolves(v)]
    return []


@pytest.mark.parametrize("path, method, operation", OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS])
def test_routes_with_a_body_document_malformed_json_and_the_size_limit(path, method, operation):
    if "requestBody" in operation:
        assert {"400", "413"} <= set(operation["responses"]), "malformed_json and payload_too_large"


@pytest.mark.parametrize("path, method, operation", OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS])
def test_user_only_routes_document_user_required(path, method, operation):
    if "(a signed-in user)" in operation.get("description", ""):
        assert "user_required" in operation["responses"]["403"]["description"]


def test_every_reference_in_the_document_resolves():
    components = SPEC["components"]["schemas"]
    missing = {ref for ref in _resolves(SPEC["paths"]) if ref.rsplit("/", 1)[-1] not in components}
    assert not missing


def test_request_integers_are_bounded_by_their_columns():
    """Integers a client sends land in INTEGER columns (or become rlimits): each has a maximum that fits."""
    unbounded = []

    def walk(node, where):
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                if name not in seen:
                    seen.add(name)
                    walk(SPEC["components"]["schemas"][name], name)
                return
            if node.get("type") == "integer" and node.get("maximum", 2**31) > 2**31 - 1:
                unbounded.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    seen: set[str] = set()
    for path, method, operation in OPERATIONS:
        walk(operation.get("requestBody", {}), f"{method} {path} body")
        for parameter in operation.get("parameters", []):
            walk(parameter.get("schema", {}), f"{method} {path} ?{parameter['name']}")
    assert not unbounded, unbounded


def test_the_benchmarks_no_op_job_kind_is_neither_documented_nor_routed_by_default():
    import json

    assert "noop" not in json.dumps(SPEC)  # not a kind a client can see, filter by or submit
    assert not any("/bench/" in path for path in _paths(create_app()))


def test_with_bench_jobs_on_the_no_op_route_exists_but_stays_out_of_the_document(override_settings):
    import json

    override_settings(bench_jobs=True)
    app = create_app()
    assert "/api/v1/bench/noop-jobs" in _paths(app)
    assert "noop" not in json.dumps(app.openapi())


def _paths(app) -> set[str]:
    """Every routed path of the app, through its included routers."""
    found: set[str] = set()
    for route in app.routes:
        router = getattr(route, "original_router", None)
        for inner in (router.routes if router is not None else [route]):
            if hasattr(inner, "path"):
                found.add(inner.path)
    return found
