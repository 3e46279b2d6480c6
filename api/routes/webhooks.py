"""Webhooks of your organization: endpoints that receive signed events (Standard Webhooks), their delivery log,
and redelivery."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.jobs import lifecycle
from pipelines.webhooks import hooks
from schemas.common import ErrorOut, Page
from schemas.jobs import JobOut
from schemas.permissions import Permission as P, Principal
from schemas.webhooks import (
    EVENT_TYPES,
    WebhookCreate,
    WebhookDeliveryOut,
    WebhookEventTypeOut,
    WebhookOut,
    WebhookSecretOut,
    WebhookUpdate,
)

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/webhooks", tags=["webhooks"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.WEBHOOKS_READ))]
Writer = Annotated[Principal, Depends(Allow(P.WEBHOOKS_WRITE))]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=500)]
NOT_FOUND = {404: {"model": ErrorOut, "description": "`webhook_not_found`: no such webhook in your organization"}}
INVALID = {422: {"model": ErrorOut, "description": "Invalid input, `unknown_event_type` (`details.event_types` "
                                                   "lists the known ones), `url_not_allowed` (the outbound policy) "
                                                   "or `url_unresolvable`"}}


@router.get("/event-types", response_model=list[WebhookEventTypeOut])
async def list_webhook_event_types(who: Reader) -> list[WebhookEventTypeOut]:
    """The event types a webhook can subscribe to, and what each event's `data` holds."""
    return [WebhookEventTypeOut(type=t, description=d) for t, d in EVENT_TYPES.items()]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookSecretOut, responses=INVALID)
@audited("webhook", target=lambda result: result.id, details=lambda result: {"event_types": result.event_types})
async def create_webhook(body: WebhookCreate, session: SessionDep, who: Writer) -> WebhookSecretOut:
    """Register an endpoint for events of your organization (admins and owners).

    The answer carries the signing `secret` (`whsec_…`) this once; it is stored encrypted and never
    returned again (rotate it with `POST /api/v1/webhooks/{id}/rotate-secret`). Every delivery is a
    POST of `{"type", "timestamp", "data"}` with the Standard Webhooks headers `webhook-id`,
    `webhook-timestamp` and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
    `{id}.{timestamp}.{body}` keyed by the secret's base64-decoded part).
    """
    row, secret = await hooks.create_webhook(session, who.org_id, body)
    await session.commit()
    return WebhookSecretOut.with_secret(row, secret)


@router.get("", response_model=Page[WebhookOut])
async def list_webhooks(session: SessionDep, who: Reader, limit: Limit = 50, cursor: Cursor = None) -> Page[WebhookOut]:
    """Your organization's webhooks, newest first (never their secrets)."""
    rows, next_cursor = await hooks.list_webhooks(session, who.org_id, limit=limit, cursor=cursor)
    return Page[WebhookOut](items=[WebhookOut.from_row(r) for r in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=NOT_FOUND)
async def get_webhook(webhook_id: uuid.UUID, session: SessionDep, who: Reader) -> WebhookOut:
    """One webhook: whether it is enabled, its run of failed deliveries and why it was disabled, if it was."""
    return WebhookOut.from_row(await hooks.get_webhook(session, who.org_id, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut, responses={**NOT_FOUND, **INVALID})
@audited("webhook", target=lambda webhook_id: webhook_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_webhook(webhook_id: uuid.UUID, body: WebhookUpdate, session: SessionDep, who: Writer) -> WebhookOut:
    """Change some fields; omitted ones stay. `enabled: true` turns a disabled webhook back on and resets its run
    of failures; events that happened while it was disabled are not sent."""
    row = await hooks.update_webhook(session, who.org_id, webhook_id, body)
    await session.commit()
    return WebhookOut.from_row(row)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses=NOT_FOUND)
@audited("webhook", target=lambda webhook_id: webhook_id, failed_too=True)
async def delete_webhook(webhook_id: uuid.UUID, session: SessionDep, who: Writer) -> Response:
    """Delete a webhook and its delivery log; its queued deliveries fail with `webhook_not_found`."""
    await hooks.delete_webhook(session, who.org_id, webhook_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookSecretOut, responses=NOT_FOUND)
@audited("webhook", target=lambda webhook_id: webhook_id, failed_too=True)
async def rotate_webhook_secret(webhook_id: uuid.UUID, session: SessionDep, who: Writer) -> WebhookSecretOut:
    """Replace the signing secret; the answer carries the new one this once. Attempts from now on are signed
    with it (an attempt already sending keeps the old signature)."""
    row, secret = await hooks.rotate_secret(session, who.org_id, webhook_id)
    await session.commit()
    return WebhookSecretOut.with_secret(row, secret)


@router.post("/{webhook_id}/test", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "Idempotency-Key reused with another "
                                                                             "request"}})
@audited("job", target=lambda result: result.id, details=lambda webhook_id: {"webhook_id": str(webhook_id)})
async def test_webhook(webhook_id: uuid.UUID, session: SessionDep, who: Writer, response: Response,
                       key: IdempotencyKey = None) -> JobOut:
    """Send a signed `webhook.test` event now (`data.webhook_id`), as a `webhook_delivery` job of one attempt,
    logged like any delivery. It works on a disabled webhook too (to check a fixed receiver before enabling it)
    and does not count in its run of failures."""
    job = await hooks.send_test(session, who, webhook_id, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)


@router.get("/{webhook_id}/deliveries", response_model=Page[WebhookDeliveryOut], responses=NOT_FOUND)
async def list_webhook_deliveries(webhook_id: uuid.UUID, session: SessionDep, who: Reader, limit: Limit = 50,
                                  cursor: Cursor = None) -> Page[WebhookDeliveryOut]:
    """The webhook's delivery log, newest first: one entry per attempt, with the receiver's status code, the
    time it took, the error if any and the start of its answer. Attempts of one event share `job_id` and
    `event_id`."""
    rows, next_cursor = await hooks.list_deliveries(session, who.org_id, webhook_id, limit=limit, cursor=cursor)
    return Page[WebhookDeliveryOut](items=[WebhookDeliveryOut.from_row(r) for r in rows], next_cursor=next_cursor)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
             response_model=JobOut,
             responses={404: {"model": ErrorOut, "description": "`webhook_not_found` or `webhook_delivery_not_found`"},
                        409: {"model": ErrorOut, "description": "`webhook_disabled`, `webhook_event_gone`, or an "
                                                                "Idempotency-Key reused with another request"}})
@audited("job", target=lambda result: result.id,
         details=lambda webhook_id, delivery_id: {"webhook_id": str(webhook_id), "delivery_id": str(delivery_id)})
async def redeliver_webhook_delivery(webhook_id: uuid.UUID, delivery_id: uuid.UUID, session: SessionDep,
                                     who: Writer, response: Response, key: IdempotencyKey = None) -> JobOut:
    """Send the event of a logged attempt again as a new `webhook_delivery` job (with its own retries): the same
    `webhook-id`, a new timestamp and signature. The webhook must be enabled."""
    job = await hooks.redeliver(session, who, webhook_id, delivery_id, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)
