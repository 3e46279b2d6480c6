"""Organization, membership, API key and audit API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.inputs import INT32_MAX, display_name
from schemas.permissions import Permission, Role

# Compared by look (name_key), so a name can't impersonate another with look-alike characters.
OrgName = display_name(200)


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: OrgName = Field(description="Unique among live organizations, compared by look: case, width, accents and "
                              "look-alike letters of other scripts don't make a name different. Invisible and "
                              "direction-changing characters are refused.")


class OrganizationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: OrgName


class LimitsUpdate(BaseModel):
    """Per-organization overrides; null removes an override (the service default applies)."""

    model_config = ConfigDict(extra="forbid")
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    max_memories: int | None = Field(default=None, ge=0, le=INT32_MAX)
    jobs_per_minute: int | None = Field(default=None, ge=1, le=INT32_MAX)
    concurrent_jobs: int | None = Field(default=None, ge=1, le=INT32_MAX)
    batch_items: int | None = Field(default=None, ge=1, le=10_000)
    purge_after_days: int | None = Field(default=None, ge=0, le=36_500, description="Days deleted rows are kept "
                                         "before the `purge` maintenance task removes them for good.")


class OrganizationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    role: Role | None = Field(default=None, description="Your role in it.")
    limits: dict[str, int] = Field(default_factory=dict, description="Overrides of the service's default limits.")
    created_at: datetime


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=100, description="The account to add.")
    role: Role = Role.MEMBER


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


class MemberOut(BaseModel):
    user_id: uuid.UUID
    username: str
    email: str | None
    role: Role
    joined_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="What the key is for.")
    role: Role = Field(default=Role.MEMBER, description="At most your own role.")
    scopes: list[Permission] | None = Field(default=None, max_length=50,
                                            description="Narrow the key to these permissions (within its role).")
    expires_at: datetime | None = None


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    prefix: str = Field(description="Shown in place of the secret: the key starts with `amk_<prefix>_`.")
    role: Role
    scopes: list[str] | None
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret. Shown this once: store it now.")


class StreamTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: uuid.UUID | None = Field(default=None, description="The job to follow; omit for the organization's "
                                                               "event stream and the WebSocket.")


class StreamTokenOut(BaseModel):
    token: str = Field(description="Pass as `?token=` to the job's event stream or the WebSocket.")
    expires_in: int


class AuditLogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    actor: str = Field(description="`user:<id>`, `api_key:<id>`, `anonymous` or `system`.")
    action: str
    target_type: str | None
    target_id: str | None
    result: str = Field(description="`success` or `failure`.")
    status_code: int | None
    request_id: str | None
    ip: str | None
    details: dict[str, Any]
    created_at: datetime
