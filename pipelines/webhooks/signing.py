"""Standard Webhooks signatures (https://www.standardwebhooks.com): the secret, and the headers a delivery carries.

The secret is `whsec_` and the base64 of 32 random bytes; the HMAC key is those bytes. A delivery is signed
over `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256, sent as `webhook-signature: v1,<base64>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret, `whsec_<base64 of 32 random bytes>`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signed_headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery: webhook-id, webhook-timestamp, webhook-signature."""
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, event_id, timestamp, body)}
