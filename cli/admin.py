"""`agentmem admin …`: create organizations, users and API keys straight in the database.

For real deployments (AGENTMEM_DATABASE_URL set) and for the embedded default while `agentmem up`
runs. Secrets are printed once and never stored in the clear.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from datetime import datetime

from pydantic import TypeAdapter, ValidationError

from core.db import dispose_engine, session_scope, set_database_url
from core.servers import EmbeddedPostgres
from core.settings import get_settings
from pipelines.accounts import api_keys, organizations, users
from schemas.organizations import OrgName
from schemas.permissions import Permission, Role


class AdminError(Exception):
    """A problem to report in one line, with exit code 1."""


def _connect() -> None:
    settings = get_settings()
    url = settings.database_url or EmbeddedPostgres(settings.data_dir.resolve()).running_url()
    if url is None:
        raise AdminError("no database: set AGENTMEM_DATABASE_URL, or start `agentmem up` (embedded default) first")
    set_database_url(url)


async def _find_org(session, name: str):
    org = await organizations.find_organization(session, name)
    if org is None:
        raise AdminError(f"no organization called {name!r}; create it with `agentmem admin create-org {name}`")
    return org


def _org_name(name: str) -> str:
    """The name as the API would accept it (normalized), or a one-line error."""
    try:
        return TypeAdapter(OrgName).validate_python(name)
    except ValidationError as exc:
        raise AdminError(f"invalid organization name {name!r}: {exc.errors()[0]['msg']}") from None


async def create_org(name: str, owner: str | None) -> dict:
    """Create an organization (optionally owned by an existing user)."""
    name = _org_name(name)
    async with session_scope() as session:
        owner_id = (await users.find_user(session, owner)).id if owner else None
        org = await organizations.create_organization(session, name, owner_id=owner_id)
        await session.commit()
        return {"organization_id": str(org.id), "name": org.name}


async def create_key(org_name: str, name: str, role: Role, scopes: list[Permission] | None,
                     expires_at: datetime | None) -> dict:
    """Create an API key for an organization; the secret is in the result, once."""
    async with session_scope() as session:
        org = await _find_org(session, org_name)
        row, material = await api_keys.create_key(session, org.id, name=name, role=role, scopes=scopes,
                                                  expires_at=expires_at, created_by="cli")
        await session.commit()
        return {"organization_id": str(org.id), "key_id": str(row.id), "role": row.role, "api_key": material.secret}


async def create_user(username: str, email: str | None, password: str, superuser: bool) -> dict:
    """Create an account (a superuser administers the whole service)."""
    async with session_scope() as session:
        user = await users.create_user(session, username=username, password=password, email=email,
                                       superuser=superuser)
        await session.commit()
        return {"user_id": str(user.id), "username": user.username, "superuser": user.is_superuser}


async def bootstrap(org_name: str) -> dict:
    """The development organization, and an owner key the first time only (printed once)."""
    org_name = _org_name(org_name)
    async with session_scope() as session:
        org, _ = await organizations.ensure_organization(session, org_name)
        if await api_keys.list_keys(session, org.id, include_revoked=True):
            await session.commit()
            return {"organization_id": str(org.id), "api_key": None}
        row, material = await api_keys.create_key(session, org.id, name="bootstrap owner key", role=Role.OWNER,
                                                  scopes=None, expires_at=None, created_by="agentmem up")
        await session.commit()
        return {"organization_id": str(org.id), "key_id": str(row.id), "api_key": material.secret}


def run(coro_factory) -> int:
    """Connect, run one admin coroutine, print its JSON result; errors are one line and exit 1."""
    from core.errors import AppError

    async def main():
        try:
            return await coro_factory()
        finally:
            await dispose_engine()

    try:
        _connect()
        print(json.dumps(asyncio.run(main())))
        return 0
    except (AdminError, AppError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1


def read_password(given: str | None) -> str:
    """The password from --password, else asked twice on the terminal."""
    if given:
        return given
    first = getpass.getpass("password (10+ characters): ")
    if first != getpass.getpass("again: "):
        raise SystemExit("error: the passwords differ")
    if len(first) < 10:
        raise SystemExit("error: the password needs at least 10 characters")
    return first
