"""The audit log of mutations: a row for every POST, PUT, PATCH and DELETE, written before the response
starts, so a client that saw the answer can read its entry.

What the row says is declared on the route, under its path:

    @router.patch("/{block_id}", ...)
    @audited("block", target=lambda block_id: block_id, failed_too=True,
             details=lambda body: {"fields": sorted(body.model_fields_set)})
    async def update_block(block_id: uuid.UUID, body: BlockUpdate, ...) -> BlockOut:

A declaration's callables get what their parameters name, as an endpoint gets its own from FastAPI:
any parameter of the endpoint, `result` (what it returned), or a value the endpoint learned and handed
over with `note_for_audit` (whom a password signed in).

- A request the endpoint answered is described by its declaration.
- One it refused (it raised) too if the route says `failed_too=True`, provided nothing the declaration
  reads is missing (`result` always is).
- Any other request, and every request to a route declared `@audited()`, has the path's last parameter
  as sent for its target (`/memories/{memory_id}`: `memory` and that id), and no details.
- Who acted, for which organization, is the authenticated principal (which `api.deps` leaves in the
  request state) unless the declaration names them: sign-up and sign-in identify someone without
  credentials.
- `@not_audited` marks a POST that changes nothing (search).
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from api.middleware.base import Middleware, on_response_start
from core.db import autocommit_scope
from core.errors import infrastructure_errors
from core.logging import request_id_var
from pipelines.accounts import audit

log = logging.getLogger("agentmem.access")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Description:
    """What a declaration says about one request: its target, details, and who acted if not the caller."""

    target_type: str | None
    target_id: str | None
    details: dict[str, Any] = field(default_factory=dict)
    org_id: uuid.UUID | None = None
    actor: str | None = None


@functools.cache
def _reads(function: Callable) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def _call(function: Callable, known: dict[str, Any]) -> Any:
    return function(**{name: known[name] for name in _reads(function)})


@dataclass(frozen=True)
class Audit:
    """A route's audit declaration (see the module's docstring); made by `audited` and `not_audited`."""

    recorded: bool = True
    target_type: str | Callable[..., str] | None = None
    target: Callable[..., object] | None = None
    details: Callable[..., dict[str, Any]] | None = None
    org_id: Callable[..., uuid.UUID] | None = None
    actor: Callable[..., str] | None = None
    failed_too: bool = False

    def reads(self) -> set[str]:
        """Every name the declaration's callables read."""
        parts = (self.target_type, self.target, self.details, self.org_id, self.actor)
        return {name for part in parts if callable(part) for name in _reads(part)}

    def describe(self, known: dict[str, Any]) -> Description | None:
        """The request's description from what it made known; None if the declaration reads anything else."""
        if self.target is None or not self.reads() <= known.keys():
            return None
        target_type = _call(self.target_type, known) if callable(self.target_type) else self.target_type
        return Description(target_type=target_type, target_id=str(_call(self.target, known)),
                           details=_call(self.details, known) if self.details else {},
                           org_id=_call(self.org_id, known) if self.org_id else None,
                           actor=_call(self.actor, known) if self.actor else None)


class _Pending:
    """The description of the request in flight, once its endpoint has returned or raised."""

    description: Description | None = None


_pending: ContextVar[_Pending | None] = ContextVar("audit_pending", default=None)
_noted: ContextVar[dict[str, Any] | None] = ContextVar("audit_noted", default=None)


def audited(target_type: str | Callable[..., str] | None = None, target: Callable[..., object] | None = None,
            *, details: Callable[..., dict[str, Any]] | None = None,
            org_id: Callable[..., uuid.UUID] | None = None, actor: Callable[..., str] | None = None,
            failed_too: bool = False):
    """Declare what a mutating route's audit row says: the target's type and id, details, and, for a route
    that identifies someone without credentials, the actor and organization. `@audited()`: the path's
    last parameter is the target. Put it under the `@router` decorator."""
    if (target_type is None) != (target is None):
        raise TypeError("name both the target's type and its id, or neither (the path's last parameter)")
    declaration = Audit(target_type=target_type, target=target, details=details, org_id=org_id, actor=actor,
                        failed_too=failed_too)

    def declare(endpoint):
        if declaration.target is None:
            endpoint.__audit__ = declaration
            return endpoint

        @functools.wraps(endpoint)  # FastAPI reads the endpoint's own signature through it
        async def described(**arguments):
            noted: dict[str, Any] = {}
            token = _noted.set(noted)
            try:
                result = await endpoint(**arguments)
            except Exception:
                if declaration.failed_too:
                    _describe(declaration, arguments | noted)
                raise
            finally:
                _noted.reset(token)
            _describe(declaration, arguments | noted | {"result": result})
            return result

        described.__audit__ = declaration
        return described

    return declare


def not_audited(endpoint):
    """Declare a POST that changes nothing (search): the audit log leaves it out."""
    endpoint.__audit__ = Audit(recorded=False)
    return endpoint


def note_for_audit(**facts: Any) -> None:
    """Hand the route's audit declaration what only the endpoint learns (whom a password signed in, the
    strategy a rewrite uses); the declaration reads each by its name."""
    noted = _noted.get()
    if noted is None:
        raise RuntimeError("note_for_audit() is for endpoints declared with @audited(type, target=…)")
    noted.update(facts)


def _describe(declaration: Audit, known: dict[str, Any]) -> None:
    pending = _pending.get()
    if pending is not None:
        pending.description = declaration.describe(known)


def declaration_of(route) -> Audit:
    """The matched route's declaration (`scope["route"]`); undeclared or unmatched: audited by its path."""
    return getattr(getattr(route, "endpoint", None), "__audit__", None) or Audit()


def _by_path(scope) -> tuple[str | None, str | None]:
    # The path's last parameter: `/memories/{memory_id}` → ("memory", its id as sent).
    params = scope.get("path_params") or {}
    if scope.get("route") is None or not params:
        return None, None
    name = list(params)[-1]
    # As sent, so possibly long or holding a NUL (a refused request too is audited): kept to what the column holds.
    return name.removesuffix("_id"), str(params[name]).replace("\x00", "\\0")[:100]


async def write_audit(scope, description: Description | None, status_code: int) -> None:
    """The audit row of a mutating request; a database outage is logged, never made a failed request."""
    route = scope.get("route")
    principal = scope.get("state", {}).get("principal")
    described = description or Description(*_by_path(scope))
    client = scope.get("client")
    try:
        async with autocommit_scope() as session:  # one INSERT: no BEGIN and COMMIT round trips
            await audit.record(session, org_id=described.org_id or (principal.org_id if principal else None),
                               actor=described.actor or (principal.actor if principal else "anonymous"),
                               action=getattr(route, "name", None) or "unmatched",
                               result="success" if status_code < 400 else "failure",
                               target_type=described.target_type, target_id=described.target_id,
                               status_code=status_code, request_id=request_id_var.get(),
                               ip=client[0] if client else None, details=described.details)
            await session.commit()
    except infrastructure_errors() as exc:
        log.error("audit entry for %s %s not written: %s", scope.get("method"), scope["path"], exc)


class AuditLog(Middleware):
    """Record each mutating HTTP request as its route declares, before answering."""

    async def handle(self, scope, receive, send) -> None:
        if scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        pending = _Pending()

        async def record_before_answering(message) -> None:
            if declaration_of(scope.get("route")).recorded:
                # Before the response leaves: a client that saw the answer can read its audit entry.
                await write_audit(scope, pending.description, message["status"])

        token = _pending.set(pending)
        try:
            await self.app(scope, receive, on_response_start(send, record_before_answering))
        finally:
            _pending.reset(token)
