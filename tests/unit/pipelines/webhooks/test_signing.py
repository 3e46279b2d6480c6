"""Standard Webhooks signatures: the specification's published test vector, and secrets of the right shape."""

import base64

from pipelines.webhooks.signing import new_secret, signature, signed_headers
from tests.support.webhook_receiver import verify

# The Standard Webhooks specification's test vector: matching it is what lets any of its libraries verify us.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID, TIMESTAMP, BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'


def test_signature_matches_the_specifications_test_vector():
    assert signature(SECRET, MSG_ID, TIMESTAMP, BODY) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_tests_receiver_accepts_the_vector_and_refuses_changes():
    headers = signed_headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    assert headers["webhook-id"] == MSG_ID and headers["webhook-timestamp"] == str(TIMESTAMP)
    assert verify(SECRET, headers, BODY, now=TIMESTAMP + 10)
    assert not verify(SECRET, headers, BODY + b" ", now=TIMESTAMP)
    assert not verify(SECRET, {**headers, "webhook-id": "msg_other"}, BODY, now=TIMESTAMP)
    assert not verify(SECRET, headers, BODY, now=TIMESTAMP + 301)  # a replay outside the tolerance


def test_new_secrets_are_whsec_and_32_random_bytes():
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
