"""api/middleware/audit.py: every mutating route declares its audit row, and the row says what it declares.

The declarations are checked on the real application; the recording on a tiny app whose audit rows
are captured instead of written (no database).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import uuid
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
from fastapi import Depends, FastAPI, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.app import create_app
from api.errors import install_error_handlers
from api.middleware import audit as audit_middleware
from api.middleware.audit import MUTATING, Audit, AuditLog, audited, not_audited, note_for_audit
from api.middleware.request_id import RequestId
from api.middleware.unhandled_errors import UnhandledErrors
from core.errors import NotFound
from tests.unit.test_architecture import app_routes

MUTATING_ROUTES = [r for r in app_routes(create_app().routes) if set(getattr(r, "methods", None) or ()) & MUTATING]


def label(route) -> str:
    return f"{'/'.join(sorted(route.methods))} {route.path_format}"


def noted_names(endpoint) -> set[str]:
    """The names the endpoint hands its declaration with `note_for_audit(name=…)`, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(endpoint))))
    return {keyword.arg for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "note_for_audit" for keyword in node.keywords}


def test_the_application_has_mutating_routes_to_check():
    assert len(MUTATING_ROUTES) >= 40, [label(r) for r in MUTATING_ROUTES]


def test_every_mutating_route_declares_its_audit_row_or_that_it_has_none():
    undeclared = [label(r) for r in MUTATING_ROUTES if not isinstance(getattr(r.endpoint, "__audit__", None), Audit)]
    assert not undeclared, "declare @audited(…), @audited() or @not_audited on:\n" + "\n".join(undeclared)


def test_only_search_is_left_out_of_the_audit_log():
    assert [label(r) for r in MUTATING_ROUTES if not r.endpoint.__audit__.recorded] == [
        "POST /api/v1/memories/search", "POST /api/v1/messages/search"]


@pytest.mark.parametrize("route", MUTATING_ROUTES, ids=label)
def test_a_declaration_reads_only_what_its_endpoint_takes_returns_or_notes(route):
    declaration = route.endpoint.__audit__
    known = set(inspect.signature(route.endpoint).parameters) | {"result"} | noted_names(route.endpoint)
    assert declaration.reads() <= known, f"{label(route)} reads {declaration.reads() - known}, which it never has"
    assert not (declaration.failed_too and "result" in declaration.reads()), "a failed request returns no result"


# --- what a row says ----------------------------------------------------------------------------

ORG_ID = uuid.uuid4()


class Item(BaseModel):
    name: str


def build_app() -> FastAPI:
    app = FastAPI()

    @app.post("/items")
    @audited("item", target=lambda result: result["id"], details=lambda body: {"name": body.name})
    async def create_item(body: Item) -> dict:
        return {"id": "new-item", "name": body.name}

    @app.delete("/items/{item_id}")
    @audited("item", target=lambda item_id: item_id, details=lambda item_id: {"gone": True})
    async def delete_item(item_id: uuid.UUID) -> Response:
        raise NotFound(f"item {item_id} not found")

    @app.patch("/items/{item_id}")
    @audited("item", target=lambda item_id: item_id, failed_too=True, details=lambda body: {"name": body.name})
    async def rename_item(item_id: uuid.UUID, body: Item) -> Response:
        raise NotFound(f"item {item_id} not found")

    @app.post("/sign-in")
    @audited("user", target=lambda user: user, actor=lambda user: f"user:{user}", failed_too=True)
    async def sign_in(body: Item) -> Response:
        if body.name == "wrong":
            raise NotFound("no such user")
        note_for_audit(user=body.name)
        if body.name == "no-org":
            raise NotFound("no such organization")
        return Response(status_code=204)

    @app.post("/things/{thing_id}/poke")
    @audited()
    async def poke(thing_id: uuid.UUID) -> Response:
        return Response(status_code=204)

    @app.post("/items/search")
    @not_audited
    async def search_items(body: Item) -> list:
        return []

    @app.post("/broken")
    @audited()
    async def broken() -> None:
        raise RuntimeError("a bug")

    def as_key(request: Request) -> None:  # what authentication (api.deps) leaves in the request state
        request.state.principal = SimpleNamespace(actor="api_key:k1", org_id=ORG_ID)

    @app.delete("/keyed/{item_id}", dependencies=[Depends(as_key)])
    @audited()
    async def delete_keyed(item_id: uuid.UUID) -> Response:
        return Response(status_code=204)

    install_error_handlers(app)
    app.add_middleware(UnhandledErrors)
    app.add_middleware(AuditLog)
    app.add_middleware(RequestId)
    return app


@pytest.fixture
def rows(monkeypatch) -> list[dict]:
    """The audit rows the tiny app records, in order."""
    recorded: list[dict] = []

    class Session:
        async def commit(self) -> None:
            pass

    @asynccontextmanager
    async def autocommit_scope():
        yield Session()

    async def record(session, **row) -> None:
        recorded.append(row)

    monkeypatch.setattr(audit_middleware, "autocommit_scope", autocommit_scope)
    monkeypatch.setattr(audit_middleware.audit, "record", record)
    return recorded


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(), raise_server_exceptions=False)


def test_an_answered_request_is_recorded_as_its_route_declares(client, rows):
    response = client.post("/items", json={"name": "spoon"})
    assert response.status_code == 200
    [row] = rows
    assert (row["action"], row["result"], row["status_code"]) == ("create_item", "success", 200)
    assert (row["target_type"], row["target_id"], row["details"]) == ("item", "new-item", {"name": "spoon"})
    assert (row["actor"], row["org_id"], row["request_id"]) == ("anonymous", None, response.headers["x-request-id"])


def test_the_actor_and_organization_are_the_authenticated_principals(client, rows):
    assert client.delete(f"/keyed/{uuid.uuid4()}").status_code == 204
    assert [(r["actor"], r["org_id"]) for r in rows] == [("api_key:k1", ORG_ID)]


def test_a_refused_request_names_the_path_as_sent_unless_declared_failed_too(client, rows):
    as_sent = uuid.uuid4().hex.upper()
    assert client.delete(f"/items/{as_sent}").status_code == 404
    assert client.patch(f"/items/{as_sent}", json={"name": "fork"}).status_code == 404
    deleted, renamed = rows
    assert (deleted["target_type"], deleted["target_id"], deleted["details"]) == ("item", as_sent, {})
    assert (renamed["target_type"], renamed["target_id"], renamed["details"]) == (
        "item", str(uuid.UUID(as_sent)), {"name": "fork"})
    assert [r["result"] for r in rows] == ["failure", "failure"]


def test_what_the_endpoint_noted_identifies_the_actor_once_it_is_known(client, rows):
    assert client.post("/sign-in", json={"name": "wrong"}).status_code == 404
    assert client.post("/sign-in", json={"name": "no-org"}).status_code == 404
    assert client.post("/sign-in", json={"name": "alice"}).status_code == 204
    assert [(r["actor"], r["target_type"], r["target_id"], r["result"]) for r in rows] == [
        ("anonymous", None, None, "failure"), ("user:no-org", "user", "no-org", "failure"),
        ("user:alice", "user", "alice", "success")]


def test_audited_without_a_target_names_the_paths_last_parameter(client, rows):
    thing_id = str(uuid.uuid4())
    assert client.post(f"/things/{thing_id}/poke").status_code == 204
    assert [(r["action"], r["target_type"], r["target_id"]) for r in rows] == [("poke", "thing", thing_id)]


def test_a_route_declared_not_audited_and_reads_leave_no_row(client, rows):
    assert client.post("/items/search", json={"name": "x"}).status_code == 200
    assert client.get("/items").status_code == 405
    assert rows == []


def test_unmatched_and_crashed_mutations_are_recorded_as_failures(client, rows):
    assert client.post("/no/such/route").status_code == 404
    assert client.post("/broken").status_code == 500
    assert [(r["action"], r["result"], r["status_code"]) for r in rows] == [
        ("unmatched", "failure", 404), ("broken", "failure", 500)]


async def test_the_row_is_written_before_the_response_starts(rows):
    app = build_app()
    seen_at_start: list[int] = []

    async def receive():
        return {"type": "http.request", "body": b'{"name": "cup"}', "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            seen_at_start.append(len(rows))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/items", "raw_path": b"/items", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "client": ("10.0.0.7", 5000),
             "server": ("test", 80)}
    await app(scope, receive, send)
    assert seen_at_start == [1]
    assert rows[0]["ip"] == "10.0.0.7"


def test_audited_needs_both_the_target_type_and_its_id_or_neither():
    with pytest.raises(TypeError):
        audited("block")
    with pytest.raises(TypeError):
        audited(target=lambda result: result.id)


async def test_note_for_audit_outside_an_audited_endpoint_is_a_mistake_said_at_once():
    with pytest.raises(RuntimeError):
        note_for_audit(user="alice")
