"""The body limit, and an upload route's own limit in its place."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.errors import install_error_handlers
from api.middleware.request_limits import UPLOAD_ENVELOPE_BYTES, RequestLimits


async def _echo(request):
    return JSONResponse({"bytes": len(await request.body())})


def _client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/small", _echo, methods=["POST"]), Route("/upload", _echo, methods=["POST"])])
    install_error_handlers(app)
    limited = RequestLimits(app, max_body_bytes=1000, max_header_bytes=16_384, max_headers=100,
                            upload_limits={"/upload": 5000})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://test")


async def test_an_upload_route_takes_more_than_the_body_limit_up_to_its_own():
    async with _client() as client:
        assert (await client.post("/small", content=b"x" * 2000)).status_code == 413
        assert (await client.post("/upload", content=b"x" * 2000)).json() == {"bytes": 2000}


async def test_past_its_own_limit_an_upload_is_413_naming_the_file_limit():
    async with _client() as client:
        response = await client.post("/upload", content=b"x" * (5000 + UPLOAD_ENVELOPE_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["details"] == {"max_bytes": 5000}


async def test_a_streamed_upload_is_cut_off_while_it_is_read():
    async def chunks():
        for _ in range(200):
            yield b"y" * 1000

    async with _client() as client:
        response = await client.post("/upload", content=chunks())  # chunked: no Content-Length
    assert response.status_code == 413 and response.json()["error"]["details"] == {"max_bytes": 5000}
