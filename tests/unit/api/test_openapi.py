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
