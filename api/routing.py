"""The route class every router uses: request-wide input checks, once, before any model validates.

PostgreSQL text cannot hold NUL, and JSON's `NaN`/`Infinity` (or `1e400`, a double's infinity) are
not numbers any column or scorer should see. Rather than guard each field, every request is checked
here as a whole: its path, its query parameters, a form body's fields and a JSON body (decoded once,
strictly, by `StrictRequest.json`, which FastAPI then reuses). A refused input is a 422
`invalid_input` naming where it was, and nothing runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import UploadFile

from core.errors import InvalidInput
from schemas.inputs import InputRejected, nul_rejected, strict_json_loads

JSON_TYPES = ("application/json",)
# A route documenting its body as this media type reads the bytes itself, as a stream (uploads).
RAW_BODY = "application/octet-stream"


class StrictRequest(Request):
    """A request whose JSON body is decoded by `strict_json_loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json_loads(await self.body())
        return self._json


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json"))


def _rejected(exc: InputRejected) -> InvalidInput:
    return InvalidInput(f"the request is invalid: {'.'.join(map(str, exc.loc))}: {exc.message}",
                        details=[exc.detail()])


async def check_request(request: StrictRequest, *, raw_body: bool = False) -> None:
    """Refuse NUL anywhere in the path, query or form, and a JSON body that isn't strictly acceptable.

    Bodies are checked by their content type, also on routes that read them themselves (sign-in); not
    on a route whose body is raw bytes (`raw_body`: a file upload, streamed, whatever its content type)."""
    if "\x00" in request.url.path:
        raise _rejected(nul_rejected(("path",)))
    for key, value in request.query_params.multi_items():
        if "\x00" in key or "\x00" in value:
            raise _rejected(nul_rejected(("query", key.replace("\x00", "\\u0000"))))
    if request.method in ("GET", "HEAD", "OPTIONS") or raw_body:
        return
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        for key, value in parse_qsl((await request.body()).decode("latin-1"), keep_blank_values=True):
            if "\x00" in key or "\x00" in value:
                raise _rejected(nul_rejected(("body", key.replace("\x00", "\\u0000"))))
    elif content_type.startswith("multipart/form-data"):
        await _check_multipart(request)
    elif (not content_type or _is_json(content_type)) and await request.body():
        try:
            await request.json()
        except InputRejected as exc:
            raise _rejected(exc) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # FastAPI decodes again and answers 400 `malformed_json`, as it always did


async def _check_multipart(request: StrictRequest) -> None:
    """NUL in a multipart form's field names, text fields or file names (file contents are the route's to judge).

    The form is parsed once here (files spool to disk past 1 MiB) and kept on the request for the route."""
    form = await request.form()  # a malformed body: Starlette's 400
    for key, value in form.multi_items():
        name = (value.filename or "") if isinstance(value, UploadFile) else value
        if "\x00" in key or "\x00" in name:
            raise _rejected(nul_rejected(("body", key.replace("\x00", "\\u0000"))))


BODY_ERRORS = {
    400: "`malformed_json`: the body is not valid JSON",
    413: "`payload_too_large`: the body is larger than `AGENTMEM_MAX_BODY_BYTES`",
}


class IdConvertor(Convertor[str]):
    """A path segment shaped like a UUID (any case, hyphens optional); FastAPI then parses it."""

    regex = "[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: Any) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())
ID_PARAMETER = re.compile(r"\{(\w+_id)\}")


def path_pattern(template: str) -> re.Pattern:
    """The paths a documented path template (`/memories/{memory_id}`) matches, as the router matches them."""
    pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: IdConvertor.regex if m.group(1).endswith("_id") else "[^/]+",
                     re.escape(template))
    return re.compile(f"^{pattern}$")


class CheckedRoute(APIRoute):
    """An APIRoute that checks the request as a whole (`check_request`) before FastAPI reads it, and
    documents the errors that check and the body limit give.

    Every `{…_id}` path parameter matches only an id, so `/memories/search` is the search route's path
    and never "the memory called search": a method the path lacks is a 405 naming the ones it has."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(ID_PARAMETER.sub(r"{\1:id}", path), endpoint, **kwargs)
        if self.body_field is not None or (self.openapi_extra or {}).get("requestBody"):
            from schemas.common import ErrorOut

            for status, description in BODY_ERRORS.items():
                self.responses.setdefault(status, {"model": ErrorOut, "description": description})

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body = (self.openapi_extra or {}).get("requestBody", {}).get("content", {})
        raw_body = RAW_BODY in body

        async def checked(request: Request) -> Response:
            strict = StrictRequest(request.scope, request.receive)
            await check_request(strict, raw_body=raw_body)
            return await handler(strict)

        return checked
