"""Documents in: each type uploaded, ingested by a real worker and found by meaning; failures store nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

from core import queue
from schemas.enums import JobKind
from schemas.permissions import Role
from tests.support import documents
from tests.support.sse import finish, follow

BILLING = "Invoices are emailed on the first business day of each month, with the usage of the month before."
REFUNDS = "A refund reaches the customer's bank account within five working days of the approval."
KITCHEN = "The office kitchen closes at three in the afternoon and reopens the next morning."
QUESTION = "how long until I get my money back?"


def handbook(kind: str) -> tuple[str, bytes]:
    """The same handbook in each format: three topics, refunds under Billing › Refunds (page 2 of the PDF)."""
    if kind == "txt":
        return "handbook.txt", f"{BILLING}\n\n{KITCHEN}\n\n{REFUNDS}\n".encode()
    if kind == "md":
        return "handbook.md", (f"# Billing\n\n{BILLING}\n\n## Refunds\n\n{REFUNDS}\n\n# Office\n\n{KITCHEN}\n").encode()
    if kind == "html":
        return "handbook.html", (f"<!DOCTYPE html><html><head><style>h1 {{color: red}}</style></head><body>"
                                 f"<h1>Billing</h1><p>{BILLING}</p><h2>Refunds</h2><p>{REFUNDS}</p>"
                                 f"<script>var tracking = 1;</script><h1>Office</h1><p>{KITCHEN}</p></body></html>"
                                 ).encode()
    if kind == "pdf":
        return "handbook.pdf", documents.pdf([f"{BILLING}\n\n{KITCHEN}", REFUNDS])
    return "handbook.docx", documents.docx([("h1", "Billing"), ("p", BILLING), ("h2", "Refunds"), ("p", REFUNDS),
                                            ("h1", "Office"), ("p", KITCHEN)])


async def upload(client: httpx.AsyncClient, filename: str, data: bytes, **fields) -> httpx.Response:
    return await client.post("/api/v1/sources", files={"file": (filename, data, "application/octet-stream")},
                             data={k: str(v) for k, v in fields.items()})


async def ingested(client: httpx.AsyncClient, filename: str, data: bytes, **fields) -> tuple[dict, dict]:
    response = await upload(client, filename, data, **fields)
    assert response.status_code == 202, response.text
    source = response.json()
    return source, await finish(client, source["job_id"])


async def live_memories(db, job_id: str) -> int:
    [[count]] = await db("SELECT count(*) FROM memories WHERE source_job_id = :j AND deleted_at IS NULL", j=job_id)
    return count


async def search(client: httpx.AsyncClient, query: str, scope: str) -> list[dict]:
    response = await client.post("/api/v1/memories/search", json={"query": query, "user_id": scope, "top_k": 3})
    assert response.status_code == 200, response.text
    return response.json()["hits"]


@pytest.mark.parametrize("kind", ["txt", "md", "html", "pdf", "docx"])
async def test_each_type_is_ingested_and_a_passage_is_found_by_meaning(kind, owner, scope, db):
    filename, data = handbook(kind)
    source, job = await ingested(owner, filename, data, user_id=scope, chunk_size=150, chunk_overlap=0,
                                 metadata='{"team": "finance"}')
    assert job["status"] == "succeeded", job
    assert job["result"]["chunks"] == job["result"]["inserted"] == 3, job["result"]
    found = (await owner.get(f"/api/v1/sources/{source['id']}")).json()
    assert found["status"] == "ready" and found["chunks"] == 3 and found["memories"] == 3, found
    assert found["media_type"] == {"txt": "text/plain", "md": "text/markdown", "html": "text/html",
                                   "pdf": "application/pdf"}.get(kind, found["media_type"])
    [top, *_] = await search(owner, QUESTION, scope)
    memory = top["memory"]
    assert "five working days" in memory["content"], memory
    assert memory["user_id"] == scope
    meta = memory["metadata"]
    assert meta["source_id"] == source["id"] and meta["filename"] == filename and meta["team"] == "finance"
    assert meta["char_end"] > meta["char_start"] >= 0 and meta["chunks"] == 3
    if kind == "pdf":
        assert (meta["page"], meta["page_end"]) == (2, 2) and found["pages"] == 2
    if kind in ("md", "html", "docx"):
        assert meta["headings"] == ["Billing", "Refunds"]
        assert memory["content"].startswith("Billing › Refunds\n\n")
    if kind == "html":
        assert "tracking" not in memory["content"] and await live_memories(db, job["id"]) == 3


async def test_progress_is_reported_per_batch_of_chunks(owner, scope):
    text = "\n\n".join(f"Paragraph {n} says something about topic number {n}." for n in range(30))
    response = await upload(owner, "many.txt", text.encode(), user_id=scope, chunk_size=100, chunk_overlap=0)
    # From the stream's start: without Last-Event-ID the stream begins now, and a quick worker has already
    # published its first progress event by the time the follower connects.
    events = await follow(owner, response.json()["job_id"], last_event_id="0-0")
    job = (await owner.get(f"/api/v1/jobs/{response.json()['job_id']}")).json()
    chunks = job["result"]["chunks"]
    assert job["status"] == "succeeded" and job["progress"]["done"] == job["progress"]["total"] == chunks > 16, job
    # The stack embeds 8 chunks a step (AGENTMEM_INGEST_CHUNK_SIZE): one event after extracting, then one a step.
    done = [e.data["data"]["done"] for e in events if e.event == "progress"]
    assert done[0] == 0 and done[-1] == chunks and len(done) >= 1 + chunks // 8, done


async def test_a_redelivered_job_stores_each_chunk_once(owner, scope, db):
    filename, data = handbook("md")
    source, job = await ingested(owner, filename, data, user_id=scope, chunk_size=150)
    assert job["status"] == "succeeded" and job["result"]["inserted"] == 3
    # As if the worker died after storing but before recording the outcome: the row runnable, the message again.
    await db("UPDATE jobs SET status = 'queued', finished_at = NULL, result = NULL WHERE id = :j", j=job["id"])
    queue.send(JobKind.INGEST_SOURCE, job["id"])
    again = await finish(owner, job["id"])
    assert again["status"] == "succeeded" and again["attempts"] == 2, again
    assert (again["result"]["inserted"], again["result"]["already_stored"]) == (0, 3)
    assert await live_memories(db, job["id"]) == 3
    assert (await owner.get(f"/api/v1/sources/{source['id']}")).json()["status"] == "ready"


async def test_a_corrupt_pdf_fails_clearly_and_stores_nothing(owner, scope, db):
    source, job = await ingested(owner, "broken.pdf", documents.corrupt_pdf(), user_id=scope)
    assert job["status"] == "failed" and job["error"]["code"] == "source_unreadable", job
    assert job["attempts"] == 1  # permanent: not retried
    found = (await owner.get(f"/api/v1/sources/{source['id']}")).json()
    assert found["status"] == "failed" and found["error"]["code"] == "source_unreadable" and found["memories"] == 0
    assert await live_memories(db, job["id"]) == 0
    assert await db("SELECT 1 FROM memories m JOIN memory_history h ON h.memory_id = m.id "
                    "WHERE m.source_job_id = :j", j=job["id"]) == []


async def test_a_document_without_text_fails_as_empty(owner, scope, db):
    source, job = await ingested(owner, "blank.pdf", documents.pdf([""]), user_id=scope)
    assert job["status"] == "failed" and job["error"]["code"] == "source_empty", job
    assert await live_memories(db, job["id"]) == 0


async def test_a_failed_source_is_replaced_by_the_same_upload(owner, scope):
    first, job = await ingested(owner, "broken.pdf", documents.corrupt_pdf(), user_id=scope)
    assert job["status"] == "failed"
    again = await upload(owner, "broken.pdf", documents.corrupt_pdf(), user_id=scope)
    assert again.status_code == 202 and again.json()["id"] != first["id"], again.text
    assert (await owner.get(f"/api/v1/sources/{first['id']}")).status_code == 404


async def test_an_oversized_upload_is_413_and_stores_nothing(owner, tenant, stack, db):
    limit = int(stack.env["AGENTMEM_SOURCE_MAX_BYTES"])
    response = await upload(owner, "big.txt", b"a" * (limit + 1))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["details"] == {"max_bytes": limit}
    assert await db("SELECT id FROM sources WHERE org_id = :o", o=tenant.org_id) == []
    assert await db("SELECT id FROM jobs WHERE org_id = :o", o=tenant.org_id) == []


async def test_a_streamed_upload_is_cut_off_at_the_limit_while_it_is_read(owner, tenant, stack, db):
    limit = int(stack.env["AGENTMEM_SOURCE_MAX_BYTES"])
    boundary = uuid.uuid4().hex

    async def body():  # chunked: no Content-Length to refuse it by
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
               f"Content-Type: text/plain\r\n\r\n").encode()
        for _ in range(limit // 65_536 + 4):
            yield b"b" * 65_536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await owner.post("/api/v1/sources", content=body(),
                                headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large", response.text
    assert await db("SELECT id FROM sources WHERE org_id = :o", o=tenant.org_id) == []


async def test_binary_junk_is_415_naming_the_accepted_types(owner, tenant, db):
    response = await upload(owner, "photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/pdf" in error["details"]["accepted"]
    assert await db("SELECT id FROM sources WHERE org_id = :o", o=tenant.org_id) == []


async def test_identical_bytes_again_are_the_same_source_and_no_second_job(owner, tenant, scope, db):
    filename, data = handbook("md")
    first = await upload(owner, filename, data, user_id=scope)
    second = await upload(owner, "renamed.md", data, user_id=scope)
    assert (first.status_code, second.status_code) == (202, 200), second.text
    assert second.json()["id"] == first.json()["id"] and second.json()["job_id"] == first.json()["job_id"]
    assert second.headers["location"] == f"/api/v1/sources/{first.json()['id']}"
    assert await db("SELECT count(*) FROM jobs WHERE org_id = :o AND kind = 'ingest_source'",
                    o=tenant.org_id) == [(1,)]
    elsewhere = await upload(owner, filename, data, user_id=f"{scope}-other")
    assert elsewhere.status_code == 202 and elsewhere.json()["id"] != first.json()["id"]


async def test_deleting_a_source_removes_its_memories_from_search(owner, scope, db):
    filename, data = handbook("md")
    source, job = await ingested(owner, filename, data, user_id=scope, chunk_size=150)
    assert any(h["memory"]["metadata"].get("source_id") == source["id"] for h in await search(owner, QUESTION, scope))
    memory_id = (await search(owner, QUESTION, scope))[0]["memory"]["id"]
    deleted = await owner.delete(f"/api/v1/sources/{source['id']}")
    assert deleted.status_code == 204, deleted.text
    assert await search(owner, QUESTION, scope) == []
    assert await live_memories(db, job["id"]) == 0
    assert (await owner.get(f"/api/v1/sources/{source['id']}")).status_code == 404
    assert (await owner.get(f"/api/v1/sources/{source['id']}/content")).status_code == 404
    assert source["id"] not in (await owner.get("/api/v1/sources")).text
    history = (await owner.get(f"/api/v1/memories/{memory_id}/history")).json()["items"]
    assert [h["event"] for h in history] == ["ADD", "DELETE"]
    assert await db("SELECT 1 FROM source_blobs WHERE source_id = :s", s=source["id"]) == []


async def test_a_delete_while_the_job_runs_leaves_no_memories(owner, scope, db):
    text = "\n\n".join(f"Section {n} explains the rules for item {n} in detail." for n in range(60))
    response = await upload(owner, "rules.txt", text.encode(), user_id=scope, chunk_size=100)
    assert response.status_code == 202
    source = response.json()
    assert (await owner.delete(f"/api/v1/sources/{source['id']}")).status_code == 204
    job = await finish(owner, source["job_id"])
    # Whichever point it reached (queued, embedding, storing), the deleted source keeps no memory.
    assert job["status"] in ("cancelled", "succeeded"), job
    assert await live_memories(db, source["job_id"]) == 0


async def test_the_original_bytes_come_back_with_their_type_and_name(owner, scope):
    data = documents.docx([("h1", "Plan"), ("p", "Ship it on Friday.")])
    source, _ = await ingested(owner, "Plan Ä.docx", data, user_id=scope)
    response = await owner.get(f"/api/v1/sources/{source['id']}/content")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert response.headers["content-disposition"] == "attachment; filename*=UTF-8''Plan%20%C3%84.docx"


async def test_sources_are_listed_newest_first_in_cursor_pages(owner, scope):
    ids = [(await upload(owner, f"n{n}.txt", f"Note number {n}.".encode(), user_id=scope)).json()["id"]
           for n in range(3)]
    first = (await owner.get("/api/v1/sources", params={"user_id": scope, "limit": 2})).json()
    rest = (await owner.get("/api/v1/sources", params={"user_id": scope, "cursor": first["next_cursor"]})).json()
    assert [s["id"] for s in first["items"] + rest["items"]] == ids[::-1] and rest["next_cursor"] is None


@pytest.mark.parametrize("fields,where", [
    ({"metadata": "{not json"}, "metadata"), ({"metadata": "[1, 2]"}, "metadata"),
    ({"metadata": '{"x": NaN}'}, "body"), ({"chunk_size": "200", "chunk_overlap": "150"}, "chunk_overlap"),
    ({"chunk_size": "50"}, "chunk_size"), ({"user_id": "a\x00b"}, "user_id")])
async def test_bad_form_fields_are_422_and_store_nothing(fields, where, owner, tenant, db):
    response = await upload(owner, "ok.txt", b"A fine document.", **fields)
    assert response.status_code == 422 and where in response.text, response.text
    assert await db("SELECT id FROM sources WHERE org_id = :o", o=tenant.org_id) == []


async def test_a_viewer_reads_but_may_not_upload_or_delete(as_role, scope):
    owner, viewer = as_role(Role.OWNER), as_role(Role.VIEWER)
    source, _ = await ingested(owner, "v.txt", b"Viewers can read this.", user_id=scope)
    refused = await upload(viewer, "v2.txt", b"Viewers can't write this.", user_id=scope)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert (await viewer.delete(f"/api/v1/sources/{source['id']}")).status_code == 403
    assert (await viewer.get(f"/api/v1/sources/{source['id']}")).json()["status"] == "ready"


async def test_another_organizations_source_is_not_found(as_role, other_tenant, scope, db):
    owner, stranger = as_role(Role.OWNER), as_role(Role.OWNER, of=other_tenant)
    source, job = await ingested(owner, "secret.txt", b"The launch code is tangerine.", user_id=scope)
    for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        response = await stranger.request(method, f"/api/v1/sources/{source['id']}{path}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", response.text
    assert source["id"] not in (await stranger.get("/api/v1/sources")).text
    assert await live_memories(db, job["id"]) == 1
