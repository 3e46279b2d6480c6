"""api/middleware/rate_limit.py and server_timing.py: the headers every response carries, errors included."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from api.errors import install_error_handlers
from api.middleware.rate_limit import RateLimitHeaders
from api.middleware.server_timing import ServerTiming
from core import timing
from core.errors import NotFound, TooManyRequests

BUDGET = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59", "X-RateLimit-Reset": "12"}


def charged(request: Request) -> None:  # what authentication (api.deps) leaves in the request state
    request.state.rate_limit_headers = BUDGET


def build_app() -> FastAPI:
    app = FastAPI(dependencies=[Depends(charged)])
    install_error_handlers(app)

    @app.get("/found")
    async def found() -> dict:
        with timing.stage("auth"):
            pass
        return {}

    @app.get("/missing")
    async def missing() -> dict:
        raise NotFound("nothing here")

    @app.get("/limited")
    async def limited() -> dict:
        raise TooManyRequests("slow down", headers={**BUDGET, "X-RateLimit-Remaining": "0", "Retry-After": "3"})

    app.add_middleware(RateLimitHeaders)
    app.add_middleware(ServerTiming)
    return app


CLIENT = TestClient(build_app())


def test_answers_and_errors_carry_the_rate_budget_authentication_found():
    for path, status in (("/found", 200), ("/missing", 404)):
        response = CLIENT.get(path)
        assert response.status_code == status
        assert {name: response.headers[name] for name in BUDGET} == BUDGET


def test_a_response_with_its_own_rate_headers_keeps_them_once():
    response = CLIENT.get("/limited")
    assert response.status_code == 429
    assert response.headers.get_list("X-RateLimit-Remaining") == ["0"]
    assert response.headers["Retry-After"] == "3"


def test_server_timing_names_the_stages_and_the_whole_request():
    stages = timing.parse_header(CLIENT.get("/found").headers["Server-Timing"])
    assert list(stages) == ["auth", "app"]
    assert stages["app"] >= stages["auth"] >= 0
