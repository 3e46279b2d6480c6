"""Encryption of secrets kept in the database (LLM provider API keys) with Fernet.

The key comes from `AGENTMEM_ENCRYPTION_KEY`, or, when that is unset, is derived from
`AGENTMEM_JWT_SECRET`. Either way it goes through HKDF with a label of its own, so the derived key
differs from anything else made from the same secret (the JWT signing key uses the secret as is).
Changing the key makes stored secrets unreadable: they have to be entered again.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.errors import AppError
from core.settings import get_settings

KEY_LABEL = b"agentmem/stored-secrets/fernet/v1"


def _master_secret() -> str:
    settings = get_settings()
    if settings.encryption_key and settings.encryption_key.get_secret_value():
        return settings.encryption_key.get_secret_value()
    if settings.jwt_secret and settings.jwt_secret.get_secret_value():
        return settings.jwt_secret.get_secret_value()
    raise AppError("no key to encrypt stored secrets: set AGENTMEM_ENCRYPTION_KEY (or AGENTMEM_JWT_SECRET)",
                   code="encryption_key_missing")


@lru_cache(maxsize=4)
def _fernet(master: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_LABEL).derive(master.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_secret(plain: str) -> str:
    """Encrypt `plain` for storage; the result is ASCII text (a Fernet token)."""
    return _fernet(_master_secret()).encrypt(plain.encode()).decode("ascii")


def decrypt_secret(token: str) -> str:
    """Decrypt what `encrypt_secret` produced; AppError `secret_unreadable` if the key has changed."""
    try:
        return _fernet(_master_secret()).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, ValueError) as exc:
        raise AppError("a stored secret can't be decrypted: the encryption key has changed since it was saved; "
                       "enter the secret again", code="secret_unreadable") from exc


def secret_hint(plain: str) -> str:
    """What may be shown of a secret: its last four characters (nothing of a short one)."""
    return f"…{plain[-4:]}" if len(plain) >= 12 else "…"
