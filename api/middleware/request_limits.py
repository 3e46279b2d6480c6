"""Request size limits, before any route runs: header count and bytes (431), body bytes (413).

A body announced larger than the limit is refused before it is read; a body that grows past it while
streaming (chunked, or a lying Content-Length) is cut off at the limit with the same error, raised
from `receive`, so no route ever holds more than `max_body_bytes` of it.

An upload route (`upload_limits`: path → most bytes of its file) has its own limit instead: the
file's, plus room for the multipart envelope and form fields; the route checks the file's exact size.
"""

from __future__ import annotations

from api.errors import error_response
from core.errors import AppError


class PayloadTooLarge(AppError):
    status_code, code = 413, "payload_too_large"


# What a multipart body may hold besides an upload's file: boundaries, part headers, form fields.
UPLOAD_ENVELOPE_BYTES = 65_536


def upload_too_large(max_bytes: int) -> PayloadTooLarge:
    """The error for an uploaded file over its route's limit."""
    return PayloadTooLarge(f"the upload is larger than {max_bytes} bytes", details={"max_bytes": max_bytes})


class RequestLimits:
    """Pure ASGI middleware: refuse oversized headers and bodies with the API's error shape."""

    def __init__(self, app, *, max_body_bytes: int, max_header_bytes: int, max_headers: int,
                 upload_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes, self.max_header_bytes, self.max_headers = max_body_bytes, max_header_bytes, max_headers
        self.upload_limits = upload_limits or {}

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than {self.max_body_bytes} bytes",
                               details={"max_bytes": self.max_body_bytes})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        size = sum(len(name) + len(value) for name, value in headers)
        if len(headers) > self.max_headers or size > self.max_header_bytes:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1009})
                return
            response = error_response(431, "request_headers_too_large",
                                      f"send at most {self.max_headers} headers of {self.max_header_bytes} bytes "
                                      "in all", {"headers": len(headers), "bytes": size})
            await response(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = self.upload_limits.get(scope.get("path", ""))
        limit = self.max_body_bytes if upload is None else upload + UPLOAD_ENVELOPE_BYTES

        def too_large() -> PayloadTooLarge:
            return self._too_large() if upload is None else upload_too_large(upload)

        length = dict(headers).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            exc = too_large()
            await error_response(exc.status_code, exc.code, exc.message, exc.details)(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large()
            return message

        await self.app(scope, limited_receive, send)
