"""Sign-up, sign-in, tokens and the current account."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited, note_for_audit
from api.routing import CheckedRoute
from core.errors import BadRequest
from core.settings import get_settings
from pipelines.accounts import auth, limits, organizations, users
from schemas.accounts import (
    LoginIn,
    LogoutIn,
    MembershipOut,
    MeOut,
    MeUpdate,
    PasswordResetIn,
    RefreshIn,
    RegisterIn,
    TokenOut,
    UserOut,
    WhoAmIOut,
)
from schemas.common import ErrorOut
from schemas.permissions import Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/auth", tags=["auth"],
                   responses=error_responses(401, 422, 429, 503))
SignedIn = Annotated[Principal, Depends(Allow(None))]
Me = Annotated[Principal, Depends(Allow(None, user_only=True))]

# The route reads its body itself (JSON or a form): its schema is written out here, not referenced.
LOGIN_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": LoginIn.model_json_schema()},
    "application/x-www-form-urlencoded": {"schema": LoginIn.model_json_schema()}}}}


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserOut,
             responses={409: {"model": ErrorOut, "description": "Username or email taken"}})
@audited("user", target=lambda result: result.id, actor=lambda result: f"user:{result.id}",
         details=lambda result: {"username": result.username})
async def register(body: RegisterIn, session: SessionDep) -> UserOut:
    """Create an account. Sign in next, then create an organization or ask to be added to one."""
    user = await users.create_user(session, username=body.username, password=body.password,
                                   email=str(body.email) if body.email else None, full_name=body.full_name)
    await session.commit()
    return UserOut.model_validate(user)


async def _login_body(request: Request) -> LoginIn:
    raw = await request.body()
    try:
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            return LoginIn.model_validate(form)
        return LoginIn.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequest("the request body is not valid JSON", code="malformed_json") from exc
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    except UnicodeDecodeError as exc:
        raise BadRequest("the form is not valid UTF-8", code="malformed_form") from exc


@router.post("/login", response_model=TokenOut, openapi_extra=LOGIN_BODY,
             responses={429: {"model": ErrorOut, "description": "Too many sign-in attempts from this address"}})
@audited("user", target=lambda user: user.id, actor=lambda user: f"user:{user.id}", failed_too=True)
async def login(request: Request, session: SessionDep) -> TokenOut:
    """Sign in with a username (or email) and password, as JSON or an OAuth2 password form.

    Returns an access token (a JWT for `Authorization: Bearer …`) and a refresh token.
    """
    client = request.client.host if request.client else "unknown"
    await limits.take(f"login:{client}", get_settings().rate_limit_login)
    body = await _login_body(request)
    user = await users.authenticate(session, body.username, body.password)
    note_for_audit(user=user)
    return TokenOut(**await auth.issue_tokens(session, user, body.organization_id))


@router.post("/refresh", response_model=TokenOut)
@audited()
async def refresh(body: RefreshIn, session: SessionDep) -> TokenOut:
    """Trade a refresh token for a new pair. Each refresh token works once."""
    return TokenOut(**await auth.refresh_tokens(session, body.refresh_token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
@audited()
async def logout(who: SignedIn, body: LogoutIn | None = None) -> Response:
    """Revoke the access token you sent (and the refresh token, if given), effective at once."""
    await auth.logout(who, body.refresh_token if body else None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _me_out(session, user) -> MeOut:
    memberships = [MembershipOut(organization_id=org.id, organization_name=org.name, role=role)
                   for org, role in await organizations.list_for_user(session, user.id)]
    return MeOut(**UserOut.model_validate(user).model_dump(), organizations=memberships)


@router.get("/me", response_model=MeOut)
async def get_me(who: Me, session: SessionDep) -> MeOut:
    """Your account and your organizations with your role in each."""
    return await _me_out(session, await users.get_user(session, who.user_id))


@router.get("/whoami", response_model=WhoAmIOut)
async def whoami(who: SignedIn) -> WhoAmIOut:
    """Who you are for this request: user or API key, the organization acted for, your role there and your
    permissions (a key's scopes applied). Clients use it to offer only what you may do, as the console does."""
    return WhoAmIOut(actor_type=who.actor_type, name=who.name, organization_id=who.org_id, role=who.role,
                     permissions=sorted(who.permissions), user_id=who.user_id, key_id=who.key_id,
                     superuser=who.superuser)


@router.patch("/me", response_model=MeOut, responses={409: {"model": ErrorOut, "description": "Email taken"}})
@audited("user", target=lambda result: result.id)
async def update_me(body: MeUpdate, who: Me, session: SessionDep) -> MeOut:
    """Change your email, name or password (a new password needs `current_password` and signs out other tokens)."""
    user = await users.get_user(session, who.user_id)
    user = await users.update_user(session, user, email=str(body.email) if body.email else None,
                                   full_name=body.full_name, new_password=body.password,
                                   current_password=body.current_password, fields=body.model_fields_set)
    await session.commit()
    return await _me_out(session, user)


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: {"model": ErrorOut, "description": "You are an organization's last owner"}})
@audited("user", target=lambda who: who.user_id)
async def delete_me(who: Me, session: SessionDep) -> Response:
    """Delete your account and leave every organization. Refused while you are an organization's last owner."""
    user = await users.get_user(session, who.user_id)
    await users.delete_user(session, user)
    await session.commit()
    await auth.logout(who, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password-reset", status_code=status.HTTP_204_NO_CONTENT)
@audited("user", target=lambda user: user.id, actor=lambda user: f"user:{user.id}")
async def reset_password(body: PasswordResetIn, session: SessionDep) -> Response:
    """Set a new password with a reset token from an administrator. Tokens issued before stop working."""
    user = await users.reset_password(session, body.reset_token, body.password)
    await session.commit()
    note_for_audit(user=user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
