"""Maintenance tasks through the API, as the tests run them: run one now and wait for its report."""

from __future__ import annotations

from tests.support.sse import finish


async def run_task(client, task: str, params: dict | None = None, *, timeout: float = 180) -> dict:
    """Run `task` now (`POST /api/v1/maintenance/{task}`), follow its job to the end; the task's report."""
    response = await client.post(f"/api/v1/maintenance/{task}", json={"params": params or {}})
    assert response.status_code == 202, response.text
    job = await finish(client, response.json()["id"], timeout=timeout)
    assert job["status"] == "succeeded", job
    assert job["result"]["task"] == task
    return job["result"]


async def seed(client, scope: str, contents: list[str]) -> None:
    """Store `contents` as memories of user `scope` and wait for the ingest to succeed."""
    response = await client.post("/api/v1/memories", json={"items": [{"content": c} for c in contents],
                                                           "user_id": scope})
    assert response.status_code == 202, response.text
    job = await finish(client, response.json()["id"])
    assert job["status"] == "succeeded", job


async def memory_history(client, memory_id: str) -> list[dict]:
    """A memory's versions, oldest first."""
    return (await client.get(f"/api/v1/memories/{memory_id}/history")).json()["items"]
