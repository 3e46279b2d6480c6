"""Operations on the organization's data as a whole: maintenance tasks run now, exports and imports."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httpx

from agentmem.resources import Id, Resource, _fields, _job
from agentmem.transport import Call
from schemas.exports import ExportOut
from schemas.jobs import JobOut


class Maintenance(Resource):
    """Maintenance tasks run now (admins and owners)."""

    def tasks(self) -> Any:
        return self._t(Call("GET", "/maintenance", out=list[dict[str, Any]]))

    def run(self, task: str, params: dict[str, Any] | None = None, *, idempotency_key: str | None = None) -> Any:
        """Run a task now: a `Job`."""
        return self._t(Call("POST", f"/maintenance/{task}", json={"params": params or {}}, out=JobOut, then=_job,
                            idempotency_key=idempotency_key, replay_safe=True))


class Exports(Resource):
    """Exports (archives of a scope) and imports."""

    def create(self, *, scope: str = "organization", scope_id: str | None = None, include: list[str] | None = None,
               vectors: bool | None = None, idempotency_key: str | None = None) -> Any:
        """Start an export: its `Job` (the export's id is the job's; read it with `get` once it succeeded)."""
        body = _fields(scope=scope, scope_id=scope_id, include=include, vectors=vectors)
        return self._chain(Call("POST", "/exports", json=body, out=ExportOut, idempotency_key=idempotency_key,
                                replay_safe=True),
                           lambda export: Call("GET", f"/jobs/{export.id}", out=JobOut, then=_job))

    def get(self, export_id: Id) -> Any:
        """The export (`ExportOut`): state, size, sha256, manifest, expiry."""
        return self._t(Call("GET", f"/exports/{export_id}", out=ExportOut))

    def list(self, *, page_size: int = 100) -> Any:
        return self._t.pages(Call("GET", "/exports", out=ExportOut, params={"limit": page_size}))

    def download(self, export_id: Id) -> Any:
        """The archive's bytes as they arrive: a context manager (async with `AsyncAgentMem`) giving the response,
        to read with `iter_bytes()` (`aiter_bytes()`)."""
        return self._t.stream(Call("GET", f"/exports/{export_id}/download"), timeout=httpx.Timeout(30, read=300))

    def import_archive(self, content: bytes | Callable[[], Iterable[bytes]], *, size: int | None = None,
                       id_mode: str = "remap") -> Any:
        """Upload an archive made by an export and queue its import: a `Job`. `content` is the bytes, or a
        function giving them as an iterable (called again if the upload is retried) with `size`."""
        headers = {"Content-Type": "application/gzip"} | ({"Content-Length": str(size)} if size is not None else {})
        return self._t(Call("POST", "/imports", params={"id_mode": id_mode}, content=content, headers=headers,
                            out=JobOut, then=_job))
