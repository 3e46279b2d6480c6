"""core/crypto.py: stored secrets are encrypted, readable only with the same key, and never shown whole."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from core.crypto import decrypt_secret, encrypt_secret, secret_hint
from core.errors import AppError

JWT_SECRET = "unit-tests-jwt-secret-" + "0123456789abcdef" * 2
PROVIDER_KEY = "sk-proj-" + "A1b2C3d4" * 6


@pytest.fixture(autouse=True)
def keys(override_settings):
    return override_settings(jwt_secret=SecretStr(JWT_SECRET), encryption_key=None)


def test_a_secret_round_trips_and_is_not_stored_in_the_clear():
    token = encrypt_secret(PROVIDER_KEY)
    assert PROVIDER_KEY not in token and PROVIDER_KEY[-12:] not in token
    assert decrypt_secret(token) == PROVIDER_KEY
    # Fernet is randomised: the same secret twice gives two different tokens.
    assert encrypt_secret(PROVIDER_KEY) != token


def test_the_key_derived_from_the_jwt_secret_is_not_the_jwt_secret_itself():
    token = encrypt_secret(PROVIDER_KEY)
    naive = Fernet(base64.urlsafe_b64encode(hashlib.sha256(JWT_SECRET.encode()).digest()))
    with pytest.raises(InvalidToken):
        naive.decrypt(token.encode())


def test_the_encryption_key_setting_takes_precedence_over_the_jwt_secret(override_settings):
    from_jwt = encrypt_secret(PROVIDER_KEY)
    override_settings(encryption_key=SecretStr("a dedicated encryption key for stored secrets"))
    dedicated = encrypt_secret(PROVIDER_KEY)
    assert decrypt_secret(dedicated) == PROVIDER_KEY
    with pytest.raises(AppError) as caught:
        decrypt_secret(from_jwt)
    assert caught.value.code == "secret_unreadable"


def test_rotating_the_key_makes_stored_secrets_unreadable_with_a_clear_error(override_settings):
    token = encrypt_secret(PROVIDER_KEY)
    override_settings(jwt_secret=SecretStr(JWT_SECRET + "-rotated"))
    with pytest.raises(AppError) as caught:
        decrypt_secret(token)
    assert caught.value.code == "secret_unreadable" and "again" in caught.value.message
    assert PROVIDER_KEY not in caught.value.message


def test_garbage_in_the_column_is_unreadable_not_a_crash():
    with pytest.raises(AppError) as caught:
        decrypt_secret("not-a-fernet-token")
    assert caught.value.code == "secret_unreadable"


def test_without_any_key_nothing_is_encrypted(override_settings):
    override_settings(jwt_secret=None, encryption_key=None)
    with pytest.raises(AppError) as caught:
        encrypt_secret(PROVIDER_KEY)
    assert caught.value.code == "encryption_key_missing" and "AGENTMEM_ENCRYPTION_KEY" in caught.value.message


@pytest.mark.parametrize("secret, hint", [(PROVIDER_KEY, "…C3d4"), ("sk-12345678901", "…8901"), ("short", "…")])
def test_the_hint_shows_at_most_the_last_four_characters(secret, hint):
    assert secret_hint(secret) == hint
