"""An organization's webhooks: create (its secret made here, shown once), list, change, delete, rotate the
secret; the delivery log; and redelivery as a new job.

The secret is stored encrypted (core.crypto, as LLM provider keys): the server must sign with it, so it
can't be hashed. A URL must pass the outbound policy when stored (core.outbound.check_url), and again at
every delivery, when the connection is made.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import encrypt_secret
from core.errors import Conflict, InvalidInput, NotFound
from core.outbound import check_url
from core.settings import get_settings
from pipelines.jobs import lifecycle
from pipelines.pages import newest_first
from pipelines.webhooks.signing import new_secret
from schemas.enums import JobKind
from schemas.permissions import Principal
from schemas.tables import Job, Webhook, WebhookDelivery
from schemas.webhooks import ALL_EVENTS, EVENT_TYPES, WebhookCreate, WebhookUpdate


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


def check_event_types(event_types: list[str]) -> list[str]:
    """The types as given if each is known (or `*`); else 422 `unknown_event_type` listing the known ones."""
    unknown = [t for t in event_types if t != ALL_EVENTS and t not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"unknown event type {unknown[0][:100]!r}", code="unknown_event_type",
                           details={"unknown": [t[:100] for t in unknown], "event_types": [ALL_EVENTS, *EVENT_TYPES]})
    return event_types


def subscribed(hook: Webhook, event_type: str) -> bool:
    """Whether the webhook takes events of this type."""
    return ALL_EVENTS in hook.event_types or event_type in hook.event_types


async def create_webhook(session: AsyncSession, org_id: uuid.UUID, data: WebhookCreate) -> tuple[Webhook, str]:
    """A new webhook and its secret (the only time the secret is seen in clear)."""
    check_event_types(data.event_types)
    await check_url(data.url)
    secret = new_secret()
    row = Webhook(org_id=org_id, url=data.url, event_types=data.event_types, description=data.description,
                  enabled=data.enabled, secret_encrypted=encrypt_secret(secret))
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row, secret


async def list_webhooks(session: AsyncSession, org_id: uuid.UUID, *, limit: int,
                        cursor: str | None) -> tuple[list[Webhook], str | None]:
    """A page of the organization's webhooks, newest first."""
    return await newest_first(session, select(Webhook).where(Webhook.org_id == org_id), Webhook, limit=limit,
                              cursor=cursor)


async def get_webhook(session: AsyncSession, org_id: uuid.UUID, webhook_id: uuid.UUID, *,
                      for_update: bool = False) -> Webhook:
    """The organization's webhook, or 404 `webhook_not_found` (also for another organization's)."""
    query = select(Webhook).where(Webhook.id == webhook_id, Webhook.org_id == org_id)
    row = (await session.execute(query.with_for_update() if for_update else query)).scalar_one_or_none()
    if row is None:
        raise WebhookNotFound(f"webhook {webhook_id} not found", details={"webhook_id": str(webhook_id)})
    return row


async def update_webhook(session: AsyncSession, org_id: uuid.UUID, webhook_id: uuid.UUID,
                         data: WebhookUpdate) -> Webhook:
    """Change the given fields; enabling a disabled webhook starts its run of failures again from zero."""
    row = await get_webhook(session, org_id, webhook_id, for_update=True)
    if data.event_types is not None:
        row.event_types = check_event_types(data.event_types)
    if data.url is not None:
        await check_url(data.url)
        row.url = data.url
    if data.description is not None:
        row.description = data.description
    if data.enabled is not None and data.enabled != row.enabled:
        row.enabled = data.enabled
        if data.enabled:
            row.consecutive_failures, row.disabled_at, row.disabled_reason = 0, None, None
        else:
            row.disabled_at, row.disabled_reason = func.now(), "disabled by a user"
    row.updated_at = func.now()
    await session.flush()
    await session.refresh(row)
    return row


async def rotate_secret(session: AsyncSession, org_id: uuid.UUID, webhook_id: uuid.UUID) -> tuple[Webhook, str]:
    """A new secret for the webhook, in use from the next attempt on; the old one stops signing at once."""
    row = await get_webhook(session, org_id, webhook_id, for_update=True)
    secret = new_secret()
    row.secret_encrypted, row.updated_at = encrypt_secret(secret), func.now()
    await session.flush()
    await session.refresh(row)
    return row, secret


async def delete_webhook(session: AsyncSession, org_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """Delete the webhook and its delivery log; its queued deliveries fail with `webhook_not_found`."""
    row = await get_webhook(session, org_id, webhook_id)
    await session.delete(row)
    await session.flush()


async def list_deliveries(session: AsyncSession, org_id: uuid.UUID, webhook_id: uuid.UUID, *, limit: int,
                          cursor: str | None) -> tuple[list[WebhookDelivery], str | None]:
    """A page of the webhook's delivery attempts, newest first."""
    await get_webhook(session, org_id, webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.org_id == org_id, WebhookDelivery.webhook_id == webhook_id)
    return await newest_first(session, query, WebhookDelivery, limit=limit, cursor=cursor)


def delivery_payload(webhook_id: uuid.UUID, event: dict[str, Any]) -> dict[str, Any]:
    """A `webhook_delivery` job's payload: the webhook, and the event (`id`, `type`, `timestamp`, `data`)."""
    return {"webhook_id": str(webhook_id), "event": event}


async def redeliver(session: AsyncSession, who: Principal, webhook_id: uuid.UUID, delivery_id: uuid.UUID, *,
                    key: str | None) -> Job:
    """A new `webhook_delivery` job for the event of a logged attempt (the same `webhook-id`, signed anew)."""
    hook = await get_webhook(session, who.org_id, webhook_id)
    attempt = (await session.execute(select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.org_id == who.org_id,
        WebhookDelivery.webhook_id == webhook_id))).scalar_one_or_none()
    if attempt is None:
        raise NotFound(f"delivery {delivery_id} not found", code="webhook_delivery_not_found",
                       details={"delivery_id": str(delivery_id)})
    if not hook.enabled:
        raise Conflict("the webhook is disabled: enable it (PATCH enabled: true) before redelivering",
                       code="webhook_disabled", details={"webhook_id": str(webhook_id)})
    original = (await session.execute(select(Job).where(Job.id == attempt.job_id, Job.org_id == who.org_id))
                ).scalar_one_or_none()
    if original is None or "event" not in original.payload:
        raise Conflict("the event of this delivery is no longer kept", code="webhook_event_gone",
                       details={"delivery_id": str(delivery_id)})
    payload = {**delivery_payload(webhook_id, original.payload["event"]), "redelivery_of": str(delivery_id)}
    job, _ = await lifecycle.submit(session, who, kind=JobKind.WEBHOOK_DELIVERY, payload=payload, total=1, key=key,
                                    max_attempts=get_settings().webhook_max_attempts)
    return job


TEST_EVENT = "webhook.test"


async def send_test(session: AsyncSession, who: Principal, webhook_id: uuid.UUID, *, key: str | None) -> Job:
    """A `webhook_delivery` job of one attempt sending a `webhook.test` event, even to a disabled webhook; its
    outcome does not count in the webhook's run of failures."""
    await get_webhook(session, who.org_id, webhook_id)
    event = {"id": "msg_" + uuid.uuid4().hex, "type": TEST_EVENT,
             "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
             "data": {"webhook_id": str(webhook_id)}}
    job, _ = await lifecycle.submit(session, who, kind=JobKind.WEBHOOK_DELIVERY,
                                    payload={**delivery_payload(webhook_id, event), "test": True}, total=1, key=key,
                                    max_attempts=1)
    return job
