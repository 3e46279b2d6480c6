"""Event type filters: known types or `*`, and what a webhook is subscribed to."""

import pytest

from core.errors import InvalidInput
from pipelines.webhooks.hooks import check_event_types, subscribed
from schemas.tables import Webhook


def test_unknown_event_types_are_refused_with_the_known_ones():
    with pytest.raises(InvalidInput) as refused:
        check_event_types(["job.failed", "job.exploded"])
    assert refused.value.code == "unknown_event_type"
    assert refused.value.details["unknown"] == ["job.exploded"]
    assert {"*", "job.failed", "memory.created", "schedule.failed"} <= set(refused.value.details["event_types"])
    assert check_event_types(["*", "memory.deleted"]) == ["*", "memory.deleted"]


def test_a_star_subscribes_to_every_type():
    assert subscribed(Webhook(event_types=["*"]), "block.rewritten")
    assert subscribed(Webhook(event_types=["job.failed"]), "job.failed")
    assert not subscribed(Webhook(event_types=["job.failed"]), "job.succeeded")
