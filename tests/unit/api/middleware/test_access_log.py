"""api/middleware/access_log.py: a log line and a latency sample per request, but no latency for a stream
and no line for a probe."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from api.middleware.access_log import AccessLog
from api.streaming import streams
from core.metrics import REGISTRY


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: str) -> dict:
        return {"id": thing_id}

    @app.get("/things/{thing_id}/follow")
    @streams
    async def follow_thing(thing_id: str) -> StreamingResponse:
        return StreamingResponse(iter(["event: one\n\n"]), media_type="text/event-stream")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    app.add_middleware(AccessLog)
    return app


def samples(route: str) -> float:
    return REGISTRY.get_sample_value("agentmem_http_request_duration_seconds_count",
                                     {"method": "GET", "route": route, "status": "200"}) or 0.0


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app())


def test_a_request_is_logged_with_its_route_template_and_timed(client, caplog):
    before = samples("/things/{thing_id}")
    with caplog.at_level(logging.INFO, logger="agentmem.access"):
        assert client.get("/things/7?full=1").status_code == 200
    [line] = [r for r in caplog.records if r.name == "agentmem.access"]
    assert line.getMessage().startswith("GET /things/7?full=1 200 ")
    assert (line.method, line.route, line.status_code) == ("GET", "/things/{thing_id}", 200)
    assert line.duration_ms >= 0
    assert samples("/things/{thing_id}") == before + 1


def test_a_route_declared_streaming_is_logged_but_kept_out_of_the_latency_histogram(client, caplog):
    before = samples("/things/{thing_id}/follow")
    with caplog.at_level(logging.INFO, logger="agentmem.access"):
        assert client.get("/things/7/follow").text == "event: one\n\n"
    assert [r.route for r in caplog.records if r.name == "agentmem.access"] == ["/things/{thing_id}/follow"]
    assert samples("/things/{thing_id}/follow") == before == 0


def test_a_probe_is_timed_but_not_logged(client, caplog):
    before = samples("/healthz")
    with caplog.at_level(logging.INFO, logger="agentmem.access"):
        assert client.get("/healthz").status_code == 200
    assert not [r for r in caplog.records if r.name == "agentmem.access"]
    assert samples("/healthz") == before + 1
