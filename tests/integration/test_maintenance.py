"""Maintenance tasks run now through the API: ordinary jobs run by a real worker, refused with clear codes."""

from __future__ import annotations

from schemas.permissions import Role
from tests.support.sse import finish


async def test_the_task_list_names_each_task_with_its_parameters(as_role):
    listed = (await as_role(Role.VIEWER).get("/api/v1/maintenance")).json()
    by_name = {t["name"]: t for t in listed}
    assert "integrity" in by_name and by_name["integrity"]["params_schema"]["type"] == "object"


async def test_integrity_runs_as_a_job_and_reports_counts(owner, tenant, db):
    response = await owner.post("/api/v1/maintenance/integrity", json={})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/jobs/{response.json()['id']}"
    job = await finish(owner, response.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["kind"] == "maintenance" and job["result"]["task"] == "integrity"
    assert job["result"]["healthy"] is True and set(job["result"]["counts"]) >= {"memories_without_embedding"}
    # A memory whose embedding is missing is counted (seeded directly: the API never leaves one so).
    await db("INSERT INTO memories (id, org_id, content, metadata, content_hash) "
             "VALUES (gen_random_uuid(), :o, 'unembedded', '{}', 'h')", o=tenant.org_id)
    again = await finish(owner, (await owner.post("/api/v1/maintenance/integrity")).json()["id"])
    assert again["result"]["counts"]["memories_without_embedding"] == 1 and again["result"]["healthy"] is False


async def test_unknown_tasks_bad_parameters_and_members_are_refused(as_role):
    owner, member = as_role(Role.OWNER), as_role(Role.MEMBER)
    unknown = await owner.post("/api/v1/maintenance/defragment", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_task"
    assert "integrity" in unknown.json()["error"]["details"]["tasks"]
    bad = await owner.post("/api/v1/maintenance/integrity", json={"params": {"deep": True}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_params"
    denied = await member.post("/api/v1/maintenance/integrity", json={})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert (await owner.get("/api/v1/jobs", params={"kind": "maintenance"})).json()["items"] == []
