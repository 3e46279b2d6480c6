"""The `webhook_delivery` job: POST one event to one webhook, signed; log the attempt; retry or give up.

Each attempt is a row of `webhook_deliveries`. A 2xx answer is success; anything else (another status, a
redirect, which is never followed, a timeout, a refused or failed connection) fails the attempt, and the
job is retried with exponential backoff by the broker (actor options from `webhook_*_backoff_ms`) until
`webhook_max_attempts`. A URL the outbound policy refuses now fails at once. When a delivery fails for
good, the webhook's run of failures grows; at `webhook_disable_after_failures` the webhook is disabled,
with an audit row and a `webhook.disabled` event on the organization's stream. A success ends the run.

Delivery is at least once: a worker that dies after the receiver answered but before the outcome is
recorded sends the event again, with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, insert, select, update

from core import events, work_metrics
from core.crypto import decrypt_secret
from core.db import session_scope
from core.errors import AppError, PermanentJobError, TransientJobError, URLNotAllowed
from core.outbound import guarded_client
from core.settings import get_settings
from pipelines.accounts import audit
from pipelines.jobs.runner import JobContext
from pipelines.webhooks.signing import signed_headers
from schemas.enums import EventType
from schemas.tables import Webhook, WebhookDelivery

log = logging.getLogger(__name__)

USER_AGENT = "AgentMem-Webhooks/1"


@dataclass
class Attempt:
    """What one POST came to."""

    status_code: int | None = None
    duration_ms: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    response_excerpt: str | None = None
    # A failure no retry can fix (the outbound policy refused the address).
    permanent: bool = False

    @property
    def succeeded(self) -> bool:
        return self.error_code is None


async def post_event(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    """POST `body` to `url` through the outbound policy: no redirects, a whole-request deadline, and at most
    `webhook_response_max_bytes` of the answer read."""
    settings = get_settings()
    attempt, started = Attempt(), time.monotonic()
    try:
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            async with guarded_client(timeout=settings.webhook_timeout_seconds) as client:
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    attempt.status_code = response.status_code
                    excerpt = bytearray()
                    async for chunk in response.aiter_raw():
                        excerpt += chunk
                        if len(excerpt) >= settings.webhook_response_max_bytes:
                            break
                    attempt.response_excerpt = _storable(bytes(excerpt[:settings.webhook_response_max_bytes])
                                                         .decode("utf-8", "replace"))
        if 300 <= attempt.status_code < 400:
            attempt.error_code = "redirect_not_followed"
            where = response.headers.get("location", "nowhere")[:200]
            attempt.error_message = (f"the receiver answered {attempt.status_code} (a redirect, to {where}): "
                                     "redirects are not followed")
        elif not 200 <= attempt.status_code < 300:
            attempt.error_code, attempt.error_message = "http_status", f"the receiver answered {attempt.status_code}"
    except URLNotAllowed as exc:
        attempt.error_code, attempt.error_message, attempt.permanent = exc.code, exc.message, True
    except (TimeoutError, httpx.TimeoutException):
        attempt.error_code = "timeout"
        attempt.error_message = f"no complete answer within {settings.webhook_timeout_seconds:g} s"
    except httpx.ConnectError as exc:
        attempt.error_code, attempt.error_message = "connect_failed", _storable(f"could not connect: {exc}"[:1000])
    except httpx.HTTPError as exc:
        attempt.error_code, attempt.error_message = "http_error", _storable(f"{type(exc).__name__}: {exc}"[:1000])
    attempt.duration_ms = round((time.monotonic() - started) * 1000, 3)
    return attempt


def _storable(text: str) -> str:
    """Text PostgreSQL can keep: a receiver may answer with anything, NUL included."""
    return text.replace("\x00", "\ufffd")


def event_body(event: dict[str, Any]) -> bytes:
    """The request body: `{"type", "timestamp", "data"}` as compact JSON."""
    return json.dumps({"type": event["type"], "timestamp": event["timestamp"], "data": event["data"]},
                      separators=(",", ":"), ensure_ascii=False, default=str).encode()


async def deliver_webhook(ctx: JobContext) -> dict[str, Any]:
    """The `webhook_delivery` job: one attempt at POSTing the payload's event to its webhook."""
    job, event = ctx.job, ctx.job.payload["event"]
    async with session_scope() as session:
        hook = await session.get(Webhook, uuid.UUID(job.payload["webhook_id"]))
    if hook is None or hook.org_id != job.org_id:
        raise PermanentJobError("the webhook was deleted", code="webhook_not_found")
    test = bool(job.payload.get("test"))
    if not hook.enabled and not test:
        raise PermanentJobError("the webhook is disabled", code="webhook_disabled")
    try:
        secret = decrypt_secret(hook.secret_encrypted)
    except AppError as exc:  # the encryption key changed: only a new secret (rotate) helps
        raise PermanentJobError(exc.message, code=exc.code) from exc
    body = event_body(event)
    # identity: the answer is read raw up to a byte cap, never inflated (a small gzip can hold gigabytes).
    headers = {"content-type": "application/json", "user-agent": USER_AGENT, "accept-encoding": "identity",
               **signed_headers(secret, event["id"], int(time.time()), body)}
    attempt = await post_event(hook.url, body, headers)
    final = attempt.succeeded or attempt.permanent or job.attempts >= job.max_attempts
    disabled = await record_attempt(job.id, job.org_id, hook.id, event, job.attempts, attempt, final=final,
                                    counts=not test)
    await work_metrics.record_webhook("delivered" if attempt.succeeded else "failed" if final else "failed_retrying")
    if disabled is not None:
        await events.publish(EventType.WEBHOOK_DISABLED, job_id=job.id, org_id=job.org_id, data=disabled)
    if attempt.succeeded:
        return {"webhook_id": str(hook.id), "event_id": event["id"], "event_type": event["type"],
                "status_code": attempt.status_code, "attempt": job.attempts, "duration_ms": attempt.duration_ms}
    if attempt.permanent:
        raise PermanentJobError(attempt.error_message or "", code=attempt.error_code)
    raise TransientJobError(attempt.error_message or "", code=attempt.error_code)


async def record_attempt(job_id: uuid.UUID, org_id: uuid.UUID, webhook_id: uuid.UUID, event: dict[str, Any],
                         number: int, attempt: Attempt, *, final: bool, counts: bool = True) -> dict[str, Any] | None:
    """Log the attempt and, when the delivery is settled (and `counts`: not a test), the webhook's run of
    failures; what the `webhook.disabled` event says if this delivery disabled the webhook, else None."""
    settings = get_settings()
    async with session_scope() as session:
        # Locked: a delete waits for this attempt's row (which it then removes with the rest of the log).
        locked = select(Webhook.id).where(Webhook.id == webhook_id).with_for_update()
        if (await session.execute(locked)).first() is None:
            raise PermanentJobError("the webhook was deleted", code="webhook_not_found")
        await session.execute(insert(WebhookDelivery).values(
            id=uuid.uuid4(), org_id=org_id, webhook_id=webhook_id, job_id=job_id, event_id=event["id"],
            event_type=event["type"], attempt=number, succeeded=attempt.succeeded, status_code=attempt.status_code,
            duration_ms=attempt.duration_ms, error_code=attempt.error_code, error_message=attempt.error_message,
            response_excerpt=attempt.response_excerpt))
        values: dict[str, Any] = {"last_delivery_at": func.now()}
        if attempt.succeeded and counts:
            values |= {"consecutive_failures": 0, "last_success_at": func.now()}
        elif final and counts:
            values["consecutive_failures"] = Webhook.consecutive_failures + 1
        failures = (await session.execute(update(Webhook).where(Webhook.id == webhook_id).values(**values)
                                          .returning(Webhook.consecutive_failures))).scalar_one_or_none()
        disabled = None
        if failures is not None and not attempt.succeeded and final and counts \
                and failures >= settings.webhook_disable_after_failures:
            reason = f"{failures} deliveries in a row failed; the last: {attempt.error_code}"
            done = (await session.execute(update(Webhook).where(Webhook.id == webhook_id, Webhook.enabled.is_(True))
                                          .values(enabled=False, disabled_at=func.now(), disabled_reason=reason,
                                                  updated_at=func.now()).returning(Webhook.id))).first()
            if done is not None:
                disabled = {"webhook_id": str(webhook_id), "consecutive_failures": failures, "reason": reason}
                await audit.record(session, org_id=org_id, actor="system", action="webhook.disabled",
                                   result="success", target_type="webhook", target_id=str(webhook_id),
                                   details={"consecutive_failures": failures, "last_error_code": attempt.error_code,
                                            "job_id": str(job_id)})
        await session.commit()
    if disabled is not None:
        log.warning("webhook %s disabled after %d failed deliveries", webhook_id, disabled["consecutive_failures"])
    return disabled
