"""Export and import through the API with real workers; scoped bulk delete of memories."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile

import httpx

from cli.exports import export_to_file, import_file
from schemas.permissions import Role
from tests.support.sse import finish
from tests.support.stack import free_port, wait_http

FACTS = ["Alice's favourite fruit is the mango, ripe and yellow.",
         "Alice works as a structural engineer on bridges in Lisbon.",
         "Alice's dog is a border collie called Pixel.",
         "Alice plays the cello in an amateur orchestra every Thursday.",
         "Alice is allergic to peanuts and carries an epinephrine pen.",
         "Alice's brother Tomas lives in Montreal and teaches chemistry."]
QUERIES = ["what does Alice eat", "her pet", "music hobby", "where does her family live", "job"]


async def _ingest(client, items: list[str], **scope) -> None:
    response = await client.post("/api/v1/memories", json={"items": [{"content": c} for c in items], **scope})
    assert response.status_code == 202, response.text
    job = await finish(client, response.json()["id"])
    assert job["status"] == "succeeded", job


async def _ranked(client, query: str, user_id: str) -> list[str]:
    response = await client.post("/api/v1/memories/search", json={"query": query, "user_id": user_id, "top_k": 6})
    assert response.status_code == 200, response.text
    return [hit["memory"]["content"] for hit in response.json()["hits"]]


async def _export(client, body: dict) -> tuple[dict, bytes]:
    response = await client.post("/api/v1/exports", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/exports/{response.json()['id']}"
    job = await finish(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    export = (await client.get(f"/api/v1/exports/{job['id']}")).json()
    download = await client.get(export["download_url"])
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/gzip"
    assert download.headers["content-disposition"].startswith("attachment; filename=")
    return export, download.content


async def _import(client, data: bytes, id_mode: str = "remap") -> dict:
    response = await client.post("/api/v1/imports", params={"id_mode": id_mode}, content=data,
                                 headers={"Content-Type": "application/gzip"})
    assert response.status_code == 202, response.text
    return await finish(client, response.json()["id"])


async def _seed_org(owner, scope: str) -> dict:
    await _ingest(owner, FACTS, user_id=scope)
    tool = (await owner.post("/api/v1/tools", json={"name": f"t{scope[-6:]}", "language": "python",
                                                     "source": "print('hi')"})).json()
    agent = (await owner.post("/api/v1/agents", json={"name": "exporter", "tool_ids": [tool["id"]]})).json()
    block = await owner.post("/api/v1/blocks", json={"label": "persona", "value": "helpful", "user_id": scope})
    assert block.status_code == 201, block.text
    conversation = (await owner.post(f"/api/v1/agents/{agent['id']}/conversations",
                                     json={"title": "hello", "user_id": scope})).json()
    message = await owner.post(f"/api/v1/conversations/{conversation['id']}/messages",
                               json={"content": "remember me", "respond": False})
    assert message.status_code in (200, 201, 202), message.text
    return {"agent": agent, "tool": tool, "conversation": conversation}


async def test_export_then_import_into_a_fresh_organization_gives_the_same_search_results(
        as_role, tenant, other_tenant, scope):
    source, target = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    seeded = await _seed_org(source, scope)
    export, data = await _export(source, {})
    manifest = export["manifest"]
    assert manifest["format_version"] == 1 and manifest["source"]["org_id"] == str(tenant.org_id)
    assert manifest["members"]["memories"]["count"] == len(FACTS)
    assert manifest["members"]["memory_history"]["count"] == len(FACTS)
    assert manifest["embedding"]["dims"] > 0 and export["sha256"] and export["size_bytes"] == len(data)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.getnames()[-1] == "manifest.json"
        assert {"memories.jsonl", "agents.jsonl", "tools.jsonl", "messages.jsonl"} <= set(tar.getnames())

    job = await _import(target, data)
    assert job["status"] == "succeeded", job
    assert job["result"]["vectors"] == "kept" and job["result"]["inserted"]["memories"] == len(FACTS)
    for query in QUERIES:
        assert await _ranked(target, query, scope) == await _ranked(source, query, scope), query
    # The agent, its tool, its conversation and its message came along, under new ids, tied together.
    [agent] = (await target.get("/api/v1/agents")).json()["items"]
    [tool] = [t for t in (await target.get("/api/v1/tools")).json() if t["name"] == seeded["tool"]["name"]]
    assert tool["id"] != seeded["tool"]["id"] and agent["id"] != seeded["agent"]["id"]
    assert agent["tool_ids"] == [tool["id"]]
    [conversation] = (await target.get(f"/api/v1/agents/{agent['id']}/conversations")).json()["items"]
    messages = (await target.get(f"/api/v1/conversations/{conversation['id']}/messages")).json()["items"]
    assert [m["content"] for m in messages] == ["remember me"]
    memory = (await target.get("/api/v1/memories", params={"user_id": scope})).json()["items"][0]
    versions = (await target.get(f"/api/v1/memories/{memory['id']}/history")).json()["items"]
    assert [v["event"] for v in versions] == ["ADD"]

    # The same archive again: nothing new anywhere.
    again = await _import(target, data)
    assert again["status"] == "succeeded", again
    assert set(again["result"]["inserted"].values()) == {0}
    assert len((await target.get("/api/v1/memories", params={"user_id": scope})).json()["items"]) == len(FACTS)
    assert len((await target.get("/api/v1/agents")).json()["items"]) == 1
    assert len([t for t in (await target.get("/api/v1/tools")).json() if t["name"] == tool["name"]]) == 1


async def test_a_truncated_or_altered_archive_fails_the_import_and_stores_nothing(as_role, other_tenant, scope, db):
    source, target = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    await _ingest(source, FACTS, user_id=scope)
    _, data = await _export(source, {"include": ["memories", "history"]})

    truncated = await _import(target, data[: len(data) * 2 // 3])
    assert truncated["status"] == "failed" and truncated["error"]["code"] == "archive_corrupt", truncated

    # Altered content under the original manifest: the member's checksum no longer matches.
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar:
            members[info.name] = tar.extractfile(info).read()
    members["memories.jsonl"] = members["memories.jsonl"].replace(b"mango", b"mangp")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    altered = await _import(target, buffer.getvalue())
    assert altered["status"] == "failed" and altered["error"]["code"] == "archive_checksum_mismatch", altered

    not_an_archive = await _import(target, gzip.compress(b"just some text\n"))
    assert not_an_archive["status"] == "failed" and not_an_archive["error"]["code"] == "archive_corrupt"
    assert (await target.get("/api/v1/memories")).json()["items"] == []
    empty = await target.post("/api/v1/imports", content=b"")
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "archive_empty"
    # Bytes that aren't gzip at all are refused at once, and no archive row is kept for them.
    archives = await db("SELECT count(*) FROM archives WHERE org_id = :org", org=other_tenant.org_id)
    plain = await target.post("/api/v1/imports", content=b"id,content\n1,not an archive\n")
    assert plain.status_code == 422 and plain.json()["error"]["code"] == "archive_not_gzip"
    assert await db("SELECT count(*) FROM archives WHERE org_id = :org", org=other_tenant.org_id) == archives


async def test_without_vectors_the_import_embeds_again_and_search_agrees(as_role, other_tenant, scope):
    source, target = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    await _ingest(source, FACTS, user_id=scope)
    export, data = await _export(source, {"scope": "user", "scope_id": scope, "include": ["memories"],
                                          "vectors": False})
    assert set(export["manifest"]["members"]) == {"memories"}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        first = json.loads(tar.extractfile("memories.jsonl").readline())
    assert first["embedding"] is None and "org_id" not in first
    job = await _import(target, data)
    assert job["status"] == "succeeded" and job["result"]["vectors"] == "recomputed", job
    assert job["result"]["embedded"] == len(FACTS)
    for query in QUERIES:
        assert await _ranked(target, query, scope) == await _ranked(source, query, scope), query


async def test_keeping_ids_that_another_organization_holds_fails_with_nothing_stored(as_role, other_tenant, scope):
    source, target = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    await _ingest(source, FACTS[:2], user_id=scope)
    _, data = await _export(source, {"include": ["memories"]})
    job = await _import(target, data, id_mode="keep")
    assert job["status"] == "failed" and job["error"]["code"] == "id_conflict", job
    assert (await target.get("/api/v1/memories")).json()["items"] == []


async def test_exports_are_the_organizations_own_admins_only_and_expire(as_role, other_tenant, scope, db):
    owner = as_role(Role.OWNER)
    await _ingest(owner, FACTS[:1], user_id=scope)
    export, _ = await _export(owner, {"include": ["memories"]})
    stranger = as_role(Role.OWNER, of=other_tenant)
    for path in (f"/api/v1/exports/{export['id']}", f"/api/v1/exports/{export['id']}/download"):
        response = await stranger.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    member = as_role(Role.MEMBER)
    assert (await member.post("/api/v1/exports", json={})).status_code == 403
    assert (await member.get(f"/api/v1/exports/{export['id']}")).status_code == 403
    invalid = await owner.post("/api/v1/exports", json={"scope": "user"})
    assert invalid.status_code == 422

    listed = (await owner.get("/api/v1/exports")).json()["items"]
    assert [e["id"] for e in listed] == [export["id"]] and listed[0]["download_url"]
    assert (await stranger.get("/api/v1/exports")).json()["items"] == []
    await db("UPDATE archives SET expires_at = now() - interval '1 second' WHERE id = :id", id=export["id"])
    gone = await owner.get(f"/api/v1/exports/{export['id']}/download")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "export_expired"
    assert (await owner.get(f"/api/v1/exports/{export['id']}")).json()["expired"] is True
    assert (await owner.get("/api/v1/exports")).json()["items"][0]["download_url"] is None


async def test_deleting_a_scope_leaves_nothing_of_it_searchable_and_others_untouched(owner, scope):
    other = scope + "-other"
    await _ingest(owner, FACTS, user_id=scope)
    await _ingest(owner, FACTS[:2], user_id=other)
    refused = await owner.delete("/api/v1/memories")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "scope_required"
    kept = (await owner.get("/api/v1/memories", params={"user_id": scope})).json()["items"][0]

    response = await owner.delete("/api/v1/memories", params={"user_id": scope})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/jobs/{response.json()['id']}"
    job = await finish(owner, response.json()["id"])
    assert job["status"] == "succeeded" and job["kind"] == "delete_memories", job
    assert job["result"]["deleted"] == len(FACTS)
    for query in QUERIES:
        assert await _ranked(owner, query, scope) == []
    assert (await owner.get("/api/v1/memories", params={"user_id": scope})).json()["items"] == []
    assert len(await _ranked(owner, "Alice", other)) == 2
    versions = (await owner.get(f"/api/v1/memories/{kept['id']}/history")).json()["items"]
    assert [v["event"] for v in versions] == ["ADD", "DELETE"]

    again = await finish(owner, (await owner.delete("/api/v1/memories", params={"user_id": scope})).json()["id"])
    assert again["status"] == "succeeded" and again["result"]["deleted"] == 0


async def test_the_cli_exports_to_a_file_and_imports_it_elsewhere(stack, as_role, tenant, other_tenant, scope,
                                                                   tmp_path, capsys):
    source, target = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    await _ingest(source, FACTS, user_id=scope)
    archive = tmp_path / "alice.tar.gz"
    code = await asyncio.to_thread(export_to_file, archive, api_url=stack.api_url, api_key=tenant.keys[Role.OWNER],
                                   scope="user", scope_id=scope, include=["memories", "history"], vectors=True)
    assert code == 0 and archive.stat().st_size > 0
    assert "wrote" in capsys.readouterr().out
    code = await asyncio.to_thread(import_file, archive, api_url=stack.api_url,
                                   api_key=other_tenant.keys[Role.OWNER], id_mode="remap")
    assert code == 0
    assert await _ranked(target, QUERIES[0], scope) == await _ranked(source, QUERIES[0], scope)
    archive.write_bytes(archive.read_bytes()[:100])
    failed = await asyncio.to_thread(import_file, archive, api_url=stack.api_url,
                                     api_key=other_tenant.keys[Role.OWNER], id_mode="remap")
    assert failed == 1


async def test_user_and_agent_scopes_take_only_their_rows_and_an_agents_memories_follow_it(
        as_role, other_tenant, scope):
    source, target = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    seeded = await _seed_org(source, scope)
    await _ingest(source, ["Somebody else entirely likes tea."], user_id=scope + "-other")
    agent_id = seeded["agent"]["id"]
    await _ingest(source, ["The exporter agent answers in French."], agent_id=agent_id)

    user, _ = await _export(source, {"scope": "user", "scope_id": scope})
    counts = {name: m["count"] for name, m in user["manifest"]["members"].items()}
    assert counts["memories"] == len(FACTS) and counts["blocks"] == 1 and counts["tools"] == 0
    assert counts["conversations"] == 1 and counts["messages"] == 1 and counts["agents"] == 1

    agent, data = await _export(source, {"scope": "agent", "scope_id": agent_id})
    counts = {name: m["count"] for name, m in agent["manifest"]["members"].items()}
    assert counts["memories"] == 1 and counts["agents"] == 1 and counts["tools"] == 1
    assert counts["conversations"] == 1 and counts["blocks"] == 0
    job = await _import(target, data)
    assert job["status"] == "succeeded", job
    [imported] = (await target.get("/api/v1/agents")).json()["items"]
    memories = (await target.get("/api/v1/memories", params={"agent_id": imported["id"]})).json()["items"]
    assert [m["content"] for m in memories] == ["The exporter agent answers in French."]
    upload = await source.get(f"/api/v1/exports/{job['id']}")  # an import's id is no export
    assert upload.status_code == 404


async def test_an_import_past_the_memory_quota_fails_before_writing(as_role, other_tenant, scope, db):
    source, target = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    await _ingest(source, FACTS, user_id=scope)
    _, data = await _export(source, {"include": ["memories"]})
    await db("UPDATE organizations SET limits = CAST(:l AS jsonb) WHERE id = :o", l='{"max_memories": 3}',
             o=other_tenant.org_id)
    job = await _import(target, data)
    assert job["status"] == "failed" and job["error"]["code"] == "quota_max_memories", job
    assert (await target.get("/api/v1/memories")).json()["items"] == []


async def test_an_upload_over_the_import_limit_is_refused_while_read_and_leaves_nothing(stack, tenant, db):
    port = free_port()
    api = stack.spawn("api-small-imports", ["-m", "cli.main", "api", "--port", str(port)],
                      env=stack.env | {"AGENTMEM_IMPORT_MAX_BYTES": "4096"})
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60, api)
        before = (await db("SELECT count(*) FROM archives WHERE org_id = :o", o=tenant.org_id))[0][0]

        async def chunked():  # no Content-Length: refused while streaming, not from the header
            for _ in range(64):
                yield b"x" * 1024

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers=tenant.headers(Role.OWNER)) as c:
            response = await c.post("/api/v1/imports", content=chunked())
            assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
            announced = await c.post("/api/v1/imports", content=b"x" * 200_000)
            assert announced.status_code == 413
        after = (await db("SELECT count(*) FROM archives WHERE org_id = :o", o=tenant.org_id))[0][0]
        assert after == before
    finally:
        api.stop()
