"""api/deps.py: every route declares who may call it, the OpenAPI page says so, and stream tokens stay on their job."""

from __future__ import annotations

import uuid
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, WebSocket
from fastapi.routing import APIRoute, APIWebSocketRoute

from api.app import ROUTERS, create_app
from api.deps import PUBLIC_ROUTES, Allow, AllowSocket, SessionDep, can_follow, route_guard
from schemas.permissions import ActorType, Permission, Principal, Role, permissions_for


def routes_of(routers) -> list[APIRoute | APIWebSocketRoute]:
    return [r for router in routers for r in router.routes if isinstance(r, (APIRoute, APIWebSocketRoute))]


def route_label(route) -> str:
    return f"{' '.join(sorted(getattr(route, 'methods', None) or ['WEBSOCKET']))} {route.path_format}"


def undeclared_routes(routers) -> list[str]:
    """Routes that neither declare an `Allow` (anywhere in their dependencies) nor are listed as public."""
    return [route_label(r) for r in routes_of(routers) if route_guard(r) is None and r.path_format not in PUBLIC_ROUTES]


def test_every_route_of_the_application_declares_a_permission_or_is_public():
    routes = routes_of(ROUTERS)
    assert any(isinstance(r, APIWebSocketRoute) for r in routes), "the WebSocket route must be checked too"
    assert len(routes) >= 30, [route_label(r) for r in routes]
    assert undeclared_routes(ROUTERS) == []


def test_public_routes_all_exist_and_declare_no_permission():
    by_path = {r.path_format: r for r in routes_of(ROUTERS)}
    assert not PUBLIC_ROUTES - set(by_path), "PUBLIC_ROUTES lists paths no route has"
    assert [p for p in sorted(PUBLIC_ROUTES) if route_guard(by_path[p]) is not None] == []


def test_the_check_reports_a_new_route_that_declares_no_permission():
    router = APIRouter(prefix="/api/v1/widgets")

    @router.get("/{widget_id}")
    async def get_widget(widget_id: uuid.UUID, session: SessionDep) -> dict:
        """An unguarded route: it has dependencies, none of them an Allow."""
        return {}

    @router.websocket("/live")
    async def widget_socket(ws: WebSocket) -> None:
        """An unguarded socket."""

    assert undeclared_routes([router]) == ["GET /api/v1/widgets/{widget_id}", "WEBSOCKET /api/v1/widgets/live"]


WIDGET_READER = Allow(Permission.MEMORIES_READ)


async def widget_context(who: Annotated[Principal, Depends(WIDGET_READER)]) -> Principal:
    """A dependency that itself depends on the guard (module level: annotations are resolved in module globals)."""
    return who


def test_the_check_accepts_a_permission_declared_anywhere_in_the_dependencies():
    router = APIRouter(prefix="/api/v1/widgets")

    @router.get("", dependencies=[Depends(Allow(Permission.MEMORIES_READ))])
    async def list_widgets() -> list:
        """Guarded on the decorator."""
        return []

    @router.get("/{widget_id}")
    async def get_widget(widget_id: uuid.UUID, who: Annotated[Principal, Depends(widget_context)]) -> dict:
        """Guarded through a dependency of a dependency."""
        return {}

    @router.websocket("/live")
    async def widget_socket(ws: WebSocket, who: Annotated[object, Depends(AllowSocket(Permission.JOBS_READ))]) -> None:
        """A guarded socket."""

    assert undeclared_routes([router]) == []
    assert route_guard(router.routes[1]) is WIDGET_READER


@pytest.fixture(scope="module")
def openapi() -> dict:
    return create_app().openapi()


GUARDED_HTTP = [pytest.param(r, id=route_label(r)) for r in routes_of(ROUTERS)
                if isinstance(r, APIRoute) and route_guard(r) is not None]


@pytest.mark.parametrize("route", GUARDED_HTTP)
def test_every_guarded_operation_documents_its_permission_and_security(route, openapi):
    guard = route_guard(route)
    for method in route.methods - {"HEAD"}:
        operation = openapi["paths"][route.path_format][method.lower()]
        assert operation["x-permission"] == (guard.permission.value if guard.permission else "signed-in")
        assert f"`{operation['x-permission']}`" in operation["description"]
        schemes = {name for requirement in operation.get("security", []) for name in requirement}
        assert {"Bearer", "ApiKey"} <= schemes, operation.get("security")
        assert ("StreamToken" in schemes) == guard.stream


@pytest.mark.parametrize("path", sorted(PUBLIC_ROUTES))
def test_public_operations_ask_for_no_credentials(path, openapi):
    for operation in openapi["paths"][path].values():
        assert "x-permission" not in operation and not operation.get("security")


def principal(stream_job_id: uuid.UUID | None = None, *, token: bool = False) -> Principal:
    if token:
        return Principal(ActorType.API_KEY, uuid.uuid4(), "stream token", org_id=uuid.uuid4(),
                         permissions=frozenset({Permission.JOBS_READ}), stream_job_id=stream_job_id,
                         token_id=uuid.uuid4().hex)
    return Principal(ActorType.API_KEY, uuid.uuid4(), "api key", org_id=uuid.uuid4(), role=Role.VIEWER,
                     permissions=permissions_for(Role.VIEWER))


def test_a_job_stream_token_follows_its_job_only():
    job, other = uuid.uuid4(), uuid.uuid4()
    who = principal(job, token=True)
    assert can_follow(who, job)
    assert not can_follow(who, other)
    assert not can_follow(who, None)  # None: the organization's stream


def test_an_organization_stream_token_follows_the_stream_and_any_job():
    who = principal(None, token=True)
    assert can_follow(who, None)
    assert can_follow(who, uuid.uuid4())


def test_principals_without_a_stream_token_follow_anything():
    who = principal()
    assert can_follow(who, None)
    assert can_follow(who, uuid.uuid4())
