"""Reading `/metrics` in tests: every sample by name and labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of the API's exposition."""
    reply = await client.get("/metrics")
    assert reply.status_code == 200, reply.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def growth(before: dict, after: dict):
    """`grew(name, labels)`: how much a sample rose between two scrapes (absent counts 0)."""
    def grew(name: str, labels: tuple = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)
    return grew
