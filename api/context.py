"""What the request middleware learns while a request runs: who acted, on what, and their rate budget.

The middleware puts one mutable `RequestInfo` in a context variable; dependencies and routes fill
it in. Mutating a shared object (rather than setting context variables deeper down) keeps it
visible to the middleware whatever task or context copy the endpoint ran in.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from schemas.permissions import Principal


@dataclass
class RequestInfo:
    ip: str | None = None
    principal: Principal | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)
    target_type: str | None = None
    target_id: str | None = None
    org_id: uuid.UUID | None = None
    actor: str | None = None  # for requests that identify someone without credentials (sign-in, sign-up)
    details: dict = field(default_factory=dict)


request_info_var: ContextVar[RequestInfo | None] = ContextVar("request_info", default=None)


def audit_target(target_type: str, target_id: object, org_id: uuid.UUID | None = None, actor: str | None = None,
                 **details: object) -> None:
    """Name the row a request created or changed (and, for sign-in, who acted), for its audit entry."""
    info = request_info_var.get()
    if info is not None:
        info.target_type, info.target_id = target_type, str(target_id)
        if org_id is not None:
            info.org_id = org_id
        if actor is not None:
            info.actor = actor
        info.details.update(details)


def read_only(endpoint):
    """Mark a POST endpoint that changes nothing (e.g. search): the audit log skips it."""
    endpoint.__audited__ = False
    return endpoint
