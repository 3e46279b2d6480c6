"""Organizations, users and API keys for integration tests, made straight in the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from core.db import session_scope
from pipelines.accounts import api_keys, organizations, users
from schemas.permissions import ROLE_ORDER, Role


@dataclass
class Tenant:
    """An organization with one API key per role."""

    org_id: uuid.UUID
    name: str
    keys: dict[Role, str] = field(default_factory=dict)
    key_ids: dict[Role, uuid.UUID] = field(default_factory=dict)

    def headers(self, role: Role = Role.OWNER) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


async def make_tenant(prefix: str = "org") -> Tenant:
    """A fresh organization with an owner, admin, member and viewer key."""
    async with session_scope() as session:
        org = await organizations.create_organization(session, f"{prefix}-{uuid.uuid4().hex[:10]}")
        tenant = Tenant(org.id, org.name)
        for role in ROLE_ORDER:
            row, material = await api_keys.create_key(session, org.id, name=f"{role.value} key", role=role,
                                                      scopes=None, expires_at=None, created_by="tests")
            tenant.keys[role], tenant.key_ids[role] = material.secret, row.id
        await session.commit()
    return tenant


@dataclass
class Account:
    id: uuid.UUID
    username: str
    password: str


async def make_user(prefix: str = "user", *, superuser: bool = False, org_id: uuid.UUID | None = None,
                    role: Role = Role.MEMBER) -> Account:
    """A fresh account (password `correct horse battery`), optionally a member of `org_id`."""
    username = f"{prefix}-{uuid.uuid4().hex[:10]}"
    password = "correct horse battery"
    async with session_scope() as session:
        user = await users.create_user(session, username=username, password=password,
                                       email=f"{username}@example.com", superuser=superuser)
        if org_id is not None:
            await organizations.add_member(session, org_id, user.id, role, Role.OWNER)
        await session.commit()
    return Account(user.id, username, password)
