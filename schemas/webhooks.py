"""Webhook API models: endpoints, the event types they subscribe to, and the delivery log.

The signing secret goes out once (on create and on rotate), never again.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.inputs import check_http_url

# What a webhook can subscribe to; `*` is every type, those added later included.
EVENT_TYPES: dict[str, str] = {
    "job.succeeded": "A job finished: `data` has `id`, `kind`, `status`, `attempts`, `result` (or a summary).",
    "job.failed": "A job failed for good: `data` has `id`, `kind`, `status`, `attempts` and `error`.",
    "memory.created": "Memories were added: `data.memory_ids` (at most 1000 per event) and the `job_id` that did it.",
    "memory.updated": "Memories changed: `data.memory_ids` and `job_id`, as for `memory.created`.",
    "memory.deleted": "Memories were deleted: `data.memory_ids` and `job_id`, as for `memory.created`.",
    "block.rewritten": "A `block_rewrite` job succeeded: `data` has `block_id`, `job_id` and the job's `result`.",
    "schedule.failed": "A job a schedule started failed: `data` has `schedule_id`, `job_id`, `kind` and `error`.",
}
ALL_EVENTS = "*"
MAX_EVENT_TYPES = 50


def _unique(values: list[str] | None) -> list[str] | None:
    return None if values is None else list(dict.fromkeys(values))


class _Checked(BaseModel):
    @field_validator("url", check_fields=False)
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_http_url(value)

    @field_validator("event_types", check_fields=False)
    @classmethod
    def _event_types(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value)


class WebhookCreate(_Checked):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, description="Where events are POSTed. It must pass the outbound policy: no "
                     "private, loopback or link-local address unless `AGENTMEM_OUTBOUND_ALLOW` lists it.")
    event_types: list[str] = Field(default_factory=lambda: [ALL_EVENTS], min_length=1, max_length=MAX_EVENT_TYPES,
                                   description="Event types to send (`GET /api/v1/webhooks/event-types`); `*` "
                                   "(the default) is all of them, future ones included.")
    description: str = Field(default="", max_length=4000)
    enabled: bool = True


class WebhookUpdate(_Checked):
    """Fields to change; omitted ones stay. Enabling a webhook again resets its run of failures."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, max_length=2000)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=MAX_EVENT_TYPES)
    description: str | None = Field(default=None, max_length=4000)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _not_null(self) -> WebhookUpdate:
        for name in ("url", "event_types", "description", "enabled"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` can't be null")
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one field")
        return self


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    consecutive_failures: int = Field(description="Deliveries that failed for good in a row; at "
                                      "`AGENTMEM_WEBHOOK_DISABLE_AFTER_FAILURES` the webhook is disabled.")
    disabled_at: datetime | None
    disabled_reason: str | None
    last_delivery_at: datetime | None
    last_success_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> WebhookOut:
        return cls.model_validate(row, from_attributes=True)


class WebhookSecretOut(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_…`, Standard Webhooks). Shown this once: store it.")

    @classmethod
    def with_secret(cls, row: Any, secret: str) -> WebhookSecretOut:
        return cls(**WebhookOut.from_row(row).model_dump(), secret=secret)


class WebhookEventTypeOut(BaseModel):
    type: str
    description: str


class WebhookDeliveryOut(BaseModel):
    """One attempt at delivering one event."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    job_id: uuid.UUID = Field(description="The `webhook_delivery` job: one per event and webhook, redelivery "
                              "makes another.")
    event_id: str = Field(description="The `webhook-id` header: the same for every attempt and redelivery of an "
                          "event (receivers deduplicate by it).")
    event_type: str
    attempt: int
    succeeded: bool
    status_code: int | None
    duration_ms: float | None
    error_code: str | None = Field(description="`http_status`, `redirect_not_followed`, `timeout`, "
                                   "`connect_failed`, `url_not_allowed`, `http_error`; null on success.")
    error_message: str | None
    response_excerpt: str | None = Field(description="The start of the receiver's answer "
                                         "(`AGENTMEM_WEBHOOK_RESPONSE_MAX_BYTES`).")
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> WebhookDeliveryOut:
        return cls.model_validate(row, from_attributes=True)
