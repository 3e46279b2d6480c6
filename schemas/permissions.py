"""Roles, permissions and the principal: the one place the permission matrix is written down.

Every route declares the permission it needs (see `api/deps.py`); a role grants a fixed set of
permissions; an API key carries a role and, optionally, a narrower list of scopes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    ORG_READ = "org:read"
    ORG_MANAGE = "org:manage"
    ORG_DELETE = "org:delete"
    MEMBERS_READ = "members:read"
    MEMBERS_MANAGE = "members:manage"
    KEYS_MANAGE = "keys:manage"
    AUDIT_READ = "audit:read"
    MEMORIES_READ = "memories:read"
    MEMORIES_WRITE = "memories:write"
    MEMORIES_DELETE = "memories:delete"
    JOBS_READ = "jobs:read"
    JOBS_CANCEL = "jobs:cancel"
    AGENTS_READ = "agents:read"
    AGENTS_WRITE = "agents:write"
    BLOCKS_READ = "blocks:read"
    BLOCKS_WRITE = "blocks:write"
    TOOLS_READ = "tools:read"
    TOOLS_WRITE = "tools:write"
    TOOLS_EXECUTE = "tools:execute"
    LLM_MANAGE = "llm:manage"
    CONVERSATIONS_READ = "conversations:read"
    CONVERSATIONS_WRITE = "conversations:write"
    # Not granted by any organization role: only service administrators (users.is_superuser).
    USERS_ADMIN = "users:admin"
    # MCP servers: as tools, reading for everyone, calling for members, configuring (a stdio command runs
    # on the workers) for admins and owners.
    MCP_READ = "mcp:read"
    MCP_WRITE = "mcp:write"
    MCP_EXECUTE = "mcp:execute"
    # Maintenance tasks (re-embedding, purging, consolidating…) run now: admins and owners.
    MAINTENANCE_RUN = "maintenance:run"
    # Export and import archives: an organization's whole content (tools' code, conversations) moves in
    # one file, so admins and owners.
    EXPORTS_READ = "exports:read"
    EXPORTS_WRITE = "exports:write"
    # Webhooks: admins and owners only, reading too: a webhook URL often carries a credential (a Slack-style
    # path token), and the delivery log shows what the receiver answered.
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"
    # Schedules of maintenance tasks: everyone sees them, admins and owners change them.
    SCHEDULES_READ = "schedules:read"
    SCHEDULES_WRITE = "schedules:write"


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return ROLE_ORDER.index(self)


ROLE_ORDER = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]

P = Permission
_VIEWER = frozenset({P.ORG_READ, P.MEMBERS_READ, P.MEMORIES_READ, P.JOBS_READ, P.AGENTS_READ, P.BLOCKS_READ,
                     P.TOOLS_READ, P.CONVERSATIONS_READ, P.MCP_READ, P.SCHEDULES_READ})
_MEMBER = _VIEWER | {P.MEMORIES_WRITE, P.MEMORIES_DELETE, P.JOBS_CANCEL, P.AGENTS_WRITE, P.BLOCKS_WRITE,
                     P.TOOLS_EXECUTE, P.CONVERSATIONS_WRITE, P.MCP_EXECUTE}
_ADMIN = _MEMBER | {P.ORG_MANAGE, P.MEMBERS_MANAGE, P.KEYS_MANAGE, P.AUDIT_READ, P.TOOLS_WRITE, P.LLM_MANAGE,
                    P.MCP_WRITE, P.MAINTENANCE_RUN, P.EXPORTS_READ, P.EXPORTS_WRITE, P.WEBHOOKS_READ,
                    P.WEBHOOKS_WRITE, P.SCHEDULES_WRITE}
_OWNER = _ADMIN | {P.ORG_DELETE}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER, Role.MEMBER: frozenset(_MEMBER), Role.ADMIN: frozenset(_ADMIN), Role.OWNER: frozenset(_OWNER),
}


def permissions_for(role: Role, scopes: list[str] | None = None) -> frozenset[Permission]:
    """What a role grants, narrowed to `scopes` when an API key lists them."""
    granted = ROLE_PERMISSIONS[role]
    if scopes is None:
        return granted
    return granted & {Permission(s) for s in scopes}


def can_grant(granter: Role, role: Role) -> bool:
    """Nobody hands out more than they hold: only owners make owners."""
    return role.rank <= granter.rank


class ActorType(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    SYSTEM = "system"


@dataclass(frozen=True)
class Principal:
    """Who is acting, and for which organization. Every query filters by `org_id`."""

    actor_type: ActorType
    actor_id: uuid.UUID | None
    name: str
    org_id: uuid.UUID | None = None
    role: Role | None = None
    permissions: frozenset[Permission] = frozenset()
    user_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    superuser: bool = False
    # Set for stream tokens: the one job (or None for the organization's stream) they may follow.
    stream_job_id: uuid.UUID | None = None
    token_id: str | None = None
    token_expires_at: int | None = None
    # The organization's own requests-per-minute override, read with the credential (None: role default).
    rate_limit: int | None = None

    def can(self, permission: Permission) -> bool:
        if permission is Permission.USERS_ADMIN:
            return self.superuser
        return permission in self.permissions

    @property
    def actor(self) -> str:
        """A label for logs and audit rows: `user:<id>` or `api_key:<id>`."""
        return f"{self.actor_type.value}:{self.actor_id}" if self.actor_id else self.actor_type.value
