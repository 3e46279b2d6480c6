"""Account and sign-in API models: registration, tokens, the current user, administration."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from schemas.permissions import ActorType, Permission, Role

Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,49}$")]
Password = Annotated[str, Field(min_length=10, max_length=256, description="At least 10 characters.")]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Username = Field(description="3–50 letters, digits, `_`, `.` or `-`; unique (case-insensitive).")
    password: Password
    email: EmailStr | None = None
    full_name: str | None = Field(default=None, max_length=200)


class LoginIn(BaseModel):
    """Also accepted as an OAuth2 password form (`username`, `password`)."""

    model_config = ConfigDict(extra="ignore")
    username: str = Field(min_length=1, max_length=320, description="Username or email.")
    password: str = Field(min_length=1, max_length=256)
    organization_id: uuid.UUID | None = Field(default=None, description="Organization to act for; default: your first.")


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=4096)


class LogoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str | None = Field(default=None, max_length=4096, description="Revoke this refresh token too.")


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    organization_id: uuid.UUID | None = Field(description="The organization the tokens act for by default.")


class MembershipOut(BaseModel):
    organization_id: uuid.UUID
    organization_name: str
    role: Role


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    username: str
    email: str | None
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime


class MeOut(UserOut):
    organizations: list[MembershipOut] = []


class WhoAmIOut(BaseModel):
    """The caller as the API sees it: what a client needs to show only what it may do."""

    actor_type: ActorType = Field(description="`user` (signed in) or `api_key`.")
    name: str = Field(description="The username, or the API key's name.")
    organization_id: uuid.UUID | None = Field(description="The organization this request acts for, if any.")
    role: Role | None = Field(description="The caller's role in that organization.")
    permissions: list[Permission] = Field(description="What the caller may do there: the role's permissions, "
                                                      "narrowed by an API key's scopes.")
    user_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    superuser: bool = False


class MeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr | None = None
    full_name: str | None = Field(default=None, max_length=200)
    password: Password | None = Field(default=None, description="A new password; needs `current_password`.")
    current_password: str | None = Field(default=None, max_length=256)


class UserAdminUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    is_active: bool


class PasswordResetOut(BaseModel):
    reset_token: str = Field(description="Single use; hand it to the user over a trusted channel.")
    expires_in: int


class PasswordResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reset_token: str = Field(min_length=1, max_length=200)
    password: Password
