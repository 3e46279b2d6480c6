"""Secrets: password hashing, API key material, signed tokens and their revocation list.

Passwords use argon2id (slow on purpose). API key secrets are 256 random bits, so a single SHA-256
is enough to store them and lets every request find its key by an indexed prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import Unauthorized
from core.redis import get_redis
from core.settings import get_settings

API_KEY_PREFIX = "amk_"
_hasher = PasswordHasher()
# Verifying against this when a username is unknown keeps sign-in time the same for both cases.
_DUMMY_HASH = _hasher.hash("agentmem-dummy-password")
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "jwt-secret", "your-secret-key"}


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True if `password` matches; constant work whether or not a hash exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def digest(secret: str) -> str:
    """SHA-256 hex digest for high-entropy secrets (API keys, reset tokens)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    secret: str      # shown to the user once
    prefix: str      # stored, shown in listings, used to find the row
    secret_hash: str  # stored


def new_api_key() -> NewApiKey:
    """Fresh key material: `amk_<prefix>_<secret>`."""
    prefix = secrets.token_hex(6)
    secret = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewApiKey(secret=secret, prefix=prefix, secret_hash=digest(secret))


def api_key_prefix(secret: str) -> str | None:
    """The lookup prefix of something shaped like an API key, else None."""
    if not secret.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, rest = secret[len(API_KEY_PREFIX):].partition("_")
    return prefix if sep and len(prefix) == 12 and rest else None


def api_key_matches(secret: str, secret_hash: str) -> bool:
    """Constant-time comparison of a presented key with the stored hash."""
    return hmac.compare_digest(digest(secret), secret_hash)


def check_secret_strength() -> str:
    """The signing key, or a clear error if it is missing or a placeholder."""
    settings = get_settings()
    value = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if not value:
        raise RuntimeError("AGENTMEM_JWT_SECRET is not set: set it to a random string of 32+ characters "
                           "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)")
    if value.lower() in PLACEHOLDER_SECRETS or len(value) < 32:
        raise RuntimeError("AGENTMEM_JWT_SECRET is a placeholder or shorter than 32 characters; refusing to start")
    return value


def encode_token(typ: str, subject: str, lifetime_seconds: int, **claims: Any) -> tuple[str, dict[str, Any]]:
    """Sign a token of type `typ` (access, refresh, stream); returns (token, claims)."""
    settings = get_settings()
    issued_at = time.time()
    now = int(issued_at)
    # `iat` keeps its fraction (RFC 7519 allows it): a password change revokes tokens issued earlier in the
    # same second, and not those issued just after it.
    payload = {"iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": subject, "typ": typ,
               "iat": issued_at, "nbf": now, "exp": now + lifetime_seconds, "jti": uuid.uuid4().hex, **claims}
    token = jwt.encode(payload, check_secret_strength(), algorithm=settings.jwt_algorithm)
    return token, payload


def decode_token(token: str, typ: str) -> dict[str, Any]:
    """Verify signature, issuer, audience, times and type; each failure has its own error code."""
    settings = get_settings()
    try:
        claims = jwt.decode(token, check_secret_strength(), algorithms=[settings.jwt_algorithm],
                            audience=settings.jwt_audience, issuer=settings.jwt_issuer,
                            leeway=settings.jwt_leeway_seconds,
                            options={"require": ["exp", "iat", "sub", "jti", "typ", "aud", "iss"]})
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the token has expired; sign in again or refresh it", code="token_expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthorized("the token was issued for another audience", code="token_wrong_audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise Unauthorized("the token was issued by someone else", code="token_wrong_issuer") from exc
    except jwt.ImmatureSignatureError as exc:
        raise Unauthorized("the token is not valid yet", code="token_not_yet_valid") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("the token is malformed or its signature does not verify", code="token_invalid") from exc
    if claims.get("typ") != typ:
        raise Unauthorized(f"a {claims.get('typ')!r} token can't be used here (expected {typ!r})",
                           code="token_wrong_type")
    return claims


def _revoked_key(jti: str) -> str:
    return f"agentmem:revoked:{jti}"


async def revoke_token(jti: str, expires_at: int) -> bool:
    """Put a token on the revocation list for the rest of its lifetime; False if it was on it already.

    One atomic SET NX: of several requests spending the same single-use token at once, exactly one wins.
    """
    remaining = max(1, expires_at - int(time.time()) + get_settings().jwt_leeway_seconds)
    return bool(await get_redis().set(_revoked_key(jti), "1", ex=remaining, nx=True))


async def is_token_revoked(jti: str) -> bool:
    """True if the token was revoked (logout, refresh rotation)."""
    return bool(await get_redis().exists(_revoked_key(jti)))
