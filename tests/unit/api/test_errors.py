"""api/errors.py (with api/middleware/request_id.py and unhandled_errors.py): every failure renders as one
error shape with the request id.

A tiny FastAPI app raises each kind of failure; TestClient drives it in-process (no sockets).
"""

from __future__ import annotations

import re

import pytest
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from api.errors import install_error_handlers
from api.middleware.request_id import RequestId
from api.middleware.unhandled_errors import UnhandledErrors
from core.errors import (
    AppError,
    BadRequest,
    Conflict,
    InvalidInput,
    NotFound,
    Overloaded,
    PermanentJobError,
    TransientJobError,
    UpstreamUnavailable,
)
from schemas.common import ErrorOut

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")

FAILURES: dict[str, Exception] = {
    "app-error": AppError("something broke"),
    "bad-request": BadRequest("bad"),
    "not-found": NotFound("memory 42 not found", details={"memory_id": "42"}),
    "conflict": Conflict("already finished"),
    "conflict-with-code": Conflict("key reused", code="idempotency_key_reused", details={"job_id": "j"}),
    "invalid-input": InvalidInput("cursor is not one this API issued", code="invalid_cursor"),
    "upstream": UpstreamUnavailable("model endpoint down"),
    "permanent": PermanentJobError("bad model"),
    "transient": TransientJobError("rate limited"),
    "runtime": RuntimeError("a bug"),
    "database": sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused")),
    "database-refused": ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    # The pool's checkout timeout: every connection busy, the database itself fine.
    "pool-timeout": sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached, connection "
                                                "timed out, timeout 2.00"),
    "overloaded": Overloaded("too many search requests at once", retry_after=3, details={"limit": "search"}),
    "redis": redis.exceptions.ConnectionError("Error 111 connecting to localhost:6379"),
    "redis-timeout": redis.exceptions.TimeoutError("Timeout reading from socket"),
}


class Item(BaseModel):
    name: str
    count: int = Field(ge=1)


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_(name: str) -> dict:
        raise FAILURES[name]

    @app.post("/items")
    async def create_item(item: Item) -> dict:
        return item.model_dump()

    app.add_middleware(UnhandledErrors)
    app.add_middleware(RequestId)  # outermost: the 500 of an unhandled error quotes the request id too
    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    # Unhandled errors must come back as responses, as a real server would send them.
    return TestClient(build_app(), raise_server_exceptions=False)


def error_of(response) -> dict:
    """The error object, after checking the body has exactly the documented shape."""
    body = response.json()
    ErrorOut.model_validate(body)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert isinstance(body["error"]["details"], dict), "details has one shape: an object, {} when empty"
    return body["error"]


@pytest.mark.parametrize(("name", "status", "code"), [
    ("app-error", 500, "internal_error"),
    ("bad-request", 400, "bad_request"),
    ("not-found", 404, "not_found"),
    ("conflict", 409, "conflict"),
    ("conflict-with-code", 409, "idempotency_key_reused"),
    ("invalid-input", 422, "invalid_cursor"),
    ("upstream", 503, "upstream_unavailable"),
    ("permanent", 422, "job_failed"),
    ("transient", 503, "transient_failure"),
])
def test_app_errors_render_with_their_status_and_code(client, name, status, code):
    response = client.get(f"/raise/{name}")
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code
    assert error["message"] == FAILURES[name].message


def test_app_error_details_reach_the_client(client):
    error = error_of(client.get("/raise/not-found"))
    assert error["details"] == {"memory_id": "42"}


def test_malformed_json_body_is_a_400_malformed_json(client):
    response = client.post("/items", content=b'{"name": "x", "count": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


def test_field_error_is_a_422_invalid_input_naming_the_field(client):
    response = client.post("/items", json={"name": "x", "count": 0})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert [d["loc"] for d in error["details"]["errors"]] == [["body", "count"]]
    assert error["details"]["errors"][0]["type"] == "greater_than_equal"
    assert "body.count" in error["message"]


def test_missing_field_is_a_422_invalid_input(client):
    response = client.post("/items", json={"count": 2})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert [(d["loc"], d["type"]) for d in error["details"]["errors"]] == [(["body", "name"], "missing")]


def test_unknown_route_is_a_404_not_found_in_the_error_shape(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_wrong_method_is_a_405_method_not_allowed_in_the_error_shape(client):
    response = client.get("/items")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_unexpected_exception_is_a_500_internal_error_without_leaking_the_message(client):
    response = client.get("/raise/runtime")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error"
    assert "a bug" not in response.text


def test_unexpected_exception_carries_the_request_id_of_its_response_header(client):
    response = client.get("/raise/runtime")
    error = error_of(response)
    assert error["request_id"], "a 500 must quote a request id the user can report"
    assert response.headers.get("X-Request-ID") == error["request_id"]


@pytest.mark.parametrize("name", ["database", "database-refused"])
def test_database_outage_is_a_503_database_unavailable_with_retry_after(client, name):
    response = client.get(f"/raise/{name}")
    assert response.status_code == 503
    assert error_of(response)["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert "connection refused" not in response.text.lower() and "5432" not in response.text


def test_no_free_pooled_connection_in_time_is_a_503_overloaded_not_database_unavailable(client, override_settings):
    override_settings(overload_retry_after_seconds=2)
    response = client.get("/raise/pool-timeout")
    assert response.status_code == 503
    assert error_of(response)["code"] == "overloaded"
    assert response.headers["Retry-After"] == "2"
    assert "QueuePool" not in response.text


def test_overloaded_renders_as_a_503_with_its_retry_after_and_details(client):
    response = client.get("/raise/overloaded")
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "overloaded" and error["details"] == {"limit": "search"}
    assert response.headers["Retry-After"] == "3"


@pytest.mark.parametrize("name", ["redis", "redis-timeout"])
def test_redis_outage_is_a_503_redis_unavailable(client, name):
    response = client.get(f"/raise/{name}")
    assert response.status_code == 503
    assert error_of(response)["code"] == "redis_unavailable"
    assert response.headers["Retry-After"] == "5"


# --- request ids (api/middleware/request_id.py) --------------------------------------------------

@pytest.mark.parametrize("path", ["/raise/not-found", "/raise/database", "/no/such/route"])
def test_error_request_id_equals_the_x_request_id_header(client, path):
    response = client.get(path)
    request_id = error_of(response)["request_id"]
    assert GENERATED_ID.match(request_id)
    assert response.headers["X-Request-ID"] == request_id


def test_each_request_gets_its_own_request_id(client):
    ids = {error_of(client.get("/raise/not-found"))["request_id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("incoming", ["trace-123", "abc.DEF_456", "x" * 64])
def test_a_sane_incoming_x_request_id_is_honoured(client, incoming):
    response = client.get("/raise/not-found", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] == incoming
    assert error_of(response)["request_id"] == incoming


@pytest.mark.parametrize("incoming", ["a b<", "x" * 65, "id;drop", "a/b", ""])
def test_an_insane_incoming_x_request_id_is_replaced(client, incoming):
    response = client.get("/raise/not-found", headers={"X-Request-ID": incoming})
    request_id = response.headers["X-Request-ID"]
    assert request_id != incoming
    assert GENERATED_ID.match(request_id)
    assert error_of(response)["request_id"] == request_id


def test_a_successful_response_also_carries_a_request_id(client):
    response = client.post("/items", json={"name": "x", "count": 1})
    assert response.status_code == 200
    assert GENERATED_ID.match(response.headers["X-Request-ID"])
