"""core/security.py: password hashes, API key material, signed tokens and each way they fail, revocation."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from pydantic import SecretStr

from core import security
from core.errors import Unauthorized

SECRET = "unit-tests-signing-key-" + "0123456789abcdef" * 3  # long enough for HS512 too


@pytest.fixture(autouse=True)
def signing_key(override_settings):
    return override_settings(jwt_secret=SecretStr(SECRET), jwt_issuer="agentmem", jwt_audience="agentmem-api",
                             jwt_algorithm="HS256", jwt_leeway_seconds=30)


@pytest.fixture
def revocations(fake_redis, monkeypatch):
    monkeypatch.setattr(security, "get_redis", lambda: fake_redis)
    return fake_redis


def refused(token: str, typ: str = "access") -> Unauthorized:
    with pytest.raises(Unauthorized) as exc:
        security.decode_token(token, typ)
    assert exc.value.status_code == 401 and exc.value.headers == {"WWW-Authenticate": "Bearer"}
    return exc.value


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {"iss": "agentmem", "aud": "agentmem-api", "sub": "user-1", "typ": "access", "iat": now, "nbf": now,
            "exp": now + 600, "jti": uuid.uuid4().hex} | overrides
    return {k: v for k, v in base.items() if v is not None}


def signed(key: str = SECRET, **overrides) -> str:
    return jwt.encode(claims(**overrides), key, algorithm="HS256")


# --- Passwords ---------------------------------------------------------------------------------

def test_a_password_hash_is_argon2id_salted_and_verifies_only_its_password():
    first, second = security.hash_password("correct horse battery"), security.hash_password("correct horse battery")
    assert first.startswith("$argon2id$") and first != second
    assert security.verify_password("correct horse battery", first)
    assert security.verify_password("correct horse battery", second)
    assert not security.verify_password("correct horse batterY", first)
    assert not security.verify_password("", first)


def test_an_unknown_user_never_verifies_not_even_with_the_dummy_password():
    assert not security.verify_password("agentmem-dummy-password", None)
    assert not security.verify_password("anything at all", None)


def test_a_malformed_stored_hash_does_not_verify():
    assert not security.verify_password("correct horse battery", "not-an-argon2-hash")


# --- API key material ----------------------------------------------------------------------------

def test_new_api_keys_carry_their_prefix_and_only_a_digest_is_kept():
    key, other = security.new_api_key(), security.new_api_key()
    assert key.secret.startswith(f"amk_{key.prefix}_") and len(key.prefix) == 12
    assert set(key.prefix) <= set("0123456789abcdef")
    assert key.secret_hash == security.digest(key.secret) and key.secret not in key.secret_hash
    assert (key.prefix, key.secret) != (other.prefix, other.secret)
    assert security.api_key_prefix(key.secret) == key.prefix


def test_a_secret_with_underscores_keeps_its_prefix():
    assert security.api_key_prefix("amk_0123456789ab_sec_ret_") == "0123456789ab"


@pytest.mark.parametrize("value", [
    "", "amk_", "amk_0123456789ab", "amk_0123456789ab_", "amk_0123456789a_secret", "amk_0123456789abc_secret",
    "AMK_0123456789ab_secret", "sk_0123456789ab_secret", "eyJhbGciOiJIUzI1NiJ9.e30.sig",
], ids=["empty", "marker only", "no separator", "no secret", "short prefix", "long prefix", "upper case",
        "another marker", "a jwt"])
def test_things_not_shaped_like_an_api_key_have_no_prefix(value):
    assert security.api_key_prefix(value) is None


def test_digest_is_the_sha256_hex_of_the_secret():
    assert security.digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert security.digest("abc") != security.digest("abd")


def test_a_presented_key_matches_only_its_own_digest():
    key = security.new_api_key()
    assert security.api_key_matches(key.secret, key.secret_hash)
    assert not security.api_key_matches(key.secret + "x", key.secret_hash)
    assert not security.api_key_matches(security.new_api_key().secret, key.secret_hash)


# --- The signing key -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", *sorted(security.PLACEHOLDER_SECRETS), "CHANGEME", "x" * 31],
                         ids=lambda v: "unset" if v is None else (v[:12] or "empty"))
def test_a_missing_placeholder_or_short_signing_key_is_refused(override_settings, value):
    override_settings(jwt_secret=None if value is None else SecretStr(value))
    with pytest.raises(RuntimeError, match="AGENTMEM_JWT_SECRET"):
        security.check_secret_strength()


def test_a_long_random_signing_key_is_accepted(override_settings):
    override_settings(jwt_secret=SecretStr("k" * 32))
    assert security.check_secret_strength() == "k" * 32


def test_tokens_are_neither_issued_nor_accepted_without_a_proper_key(override_settings):
    token, _ = security.encode_token("access", "user-1", 60)
    override_settings(jwt_secret=SecretStr("changeme"))
    with pytest.raises(RuntimeError):
        security.encode_token("access", "user-1", 60)
    with pytest.raises(RuntimeError):
        security.decode_token(token, "access")


# --- Tokens --------------------------------------------------------------------------------------

def test_a_token_round_trips_with_its_claims():
    token, issued = security.encode_token("refresh", "user-1", 600, org="org-1")
    decoded = security.decode_token(token, "refresh")
    assert decoded == issued
    assert (decoded["sub"], decoded["typ"], decoded["org"]) == ("user-1", "refresh", "org-1")
    assert (decoded["iss"], decoded["aud"]) == ("agentmem", "agentmem-api")
    assert decoded["exp"] - int(decoded["iat"]) == 600 and len(decoded["jti"]) == 32


def test_each_token_has_its_own_id():
    first, _ = security.encode_token("access", "user-1", 60)
    second, _ = security.encode_token("access", "user-1", 60)
    assert security.decode_token(first, "access")["jti"] != security.decode_token(second, "access")["jti"]


def test_issue_times_are_ordered_within_one_second():
    # A password change in the same second as a sign-in must revoke the earlier token and spare the later one.
    _, before = security.encode_token("access", "user-1", 60)
    changed_at = time.time()
    _, after = security.encode_token("access", "user-1", 60)
    assert before["iat"] <= changed_at <= after["iat"]
    assert before["iat"] < after["iat"]


def test_an_expired_token_is_refused_as_expired():
    token, _ = security.encode_token("access", "user-1", -60)
    assert refused(token).code == "token_expired"


def test_a_token_expired_within_the_leeway_is_accepted():
    token, _ = security.encode_token("access", "user-1", -5)
    assert security.decode_token(token, "access")["sub"] == "user-1"


def test_the_leeway_is_a_setting(override_settings):
    token, _ = security.encode_token("access", "user-1", -5)
    override_settings(jwt_leeway_seconds=0)
    assert refused(token).code == "token_expired"


def test_a_token_not_valid_yet_is_refused():
    later = int(time.time()) + 600
    assert refused(signed(nbf=later, exp=later + 600)).code == "token_not_yet_valid"


def test_a_token_for_another_audience_is_refused(override_settings):
    token, _ = security.encode_token("access", "user-1", 60)
    override_settings(jwt_audience="another-api")
    assert refused(token).code == "token_wrong_audience"


def test_a_token_from_another_issuer_is_refused():
    assert refused(signed(iss="someone-else")).code == "token_wrong_issuer"


def test_a_token_signed_with_another_key_is_refused():
    assert refused(signed(key="another-signing-key-0123456789abcdefghij")).code == "token_invalid"


def test_a_token_with_a_changed_payload_is_refused():
    header, _, signature = signed().split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(sub="admin")).encode()).rstrip(b"=").decode()
    assert refused(f"{header}.{forged}.{signature}").code == "token_invalid"


def test_an_unsigned_alg_none_token_is_refused():
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    assert refused(f"{header}.{payload}.").code == "token_invalid"


def test_a_token_signed_with_another_algorithm_is_refused():
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert refused(token).code == "token_invalid"


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "jti", "typ"])
def test_a_token_missing_a_required_claim_is_refused(claim):
    assert refused(signed(**{claim: None})).code == "token_invalid"


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "amk_0123456789ab_secret"])
def test_garbage_is_refused_as_invalid(garbage):
    assert refused(garbage).code == "token_invalid"


@pytest.mark.parametrize("typ,expected", [("refresh", "access"), ("access", "refresh"), ("access", "stream")])
def test_a_token_of_another_type_is_refused(typ, expected):
    token, _ = security.encode_token(typ, "user-1", 60)
    assert refused(token, expected).code == "token_wrong_type"


# --- Revocation ----------------------------------------------------------------------------------

async def test_a_revoked_token_stays_revoked_for_its_lifetime_and_the_leeway(revocations):
    jti = uuid.uuid4().hex
    assert not await security.is_token_revoked(jti)
    assert await security.revoke_token(jti, int(time.time()) + 100)
    assert await security.is_token_revoked(jti)
    assert 100 < await revocations.ttl(f"agentmem:revoked:{jti}") <= 130
    assert not await security.is_token_revoked(uuid.uuid4().hex)


async def test_a_token_revoked_after_its_expiry_stays_revoked_while_the_leeway_accepts_it(revocations):
    jti = uuid.uuid4().hex
    assert await security.revoke_token(jti, int(time.time()) - 10)
    assert await security.is_token_revoked(jti)
    assert 0 < await revocations.ttl(f"agentmem:revoked:{jti}") <= 20


async def test_only_the_first_of_several_revocations_wins(revocations):
    jti = uuid.uuid4().hex
    expires = int(time.time()) + 100
    outcomes = [await security.revoke_token(jti, expires) for _ in range(3)]
    assert outcomes == [True, False, False]
