"""Workspace files over HTTP, against the real stack: the same folder the file tools use, its path rules,
its limits, roles and tenants."""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import unquote, urlsplit

import pytest

from pipelines.tools.workspace import BUILTINS
from schemas.permissions import Role
from tests.integration.test_limits import api_with
from tests.support.clients import api_client
from tests.support.sse import finish


def workspace_of(stack, tenant):
    return stack.services.data_dir / "workspaces" / str(tenant.org_id)


def leftovers(folder) -> list[str]:
    """Temporary files an upload left in the workspace (the quota's lock file is no leftover)."""
    return sorted(name for _, _, names in os.walk(folder) for name in names
                  if name.startswith(".save-") and name != ".save-quota.lock")


async def raw(api_url: str, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    """A request with its target sent exactly as given (HTTP clients normalize `..` away)."""
    parts = urlsplit(api_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, {}


async def builtin(client, name: str, arguments: dict) -> dict:
    response = await client.post(f"/api/v1/tools/{BUILTINS[name].id}/execute", json={"arguments": arguments})
    assert response.status_code == 202, response.text
    return await finish(client, response.json()["id"])


async def test_upload_list_download_replace_and_delete(owner, stack, tenant, db):
    first = await owner.put("/api/v1/files/notes/plan.md", content=b"# Plan\nship it\n")
    assert first.status_code == 201, first.text
    assert first.json()["path"] == "notes/plan.md" and first.json()["bytes"] == 15
    assert first.json()["content_type"] == "text/markdown"
    assert (workspace_of(stack, tenant) / "notes" / "plan.md").read_bytes() == b"# Plan\nship it\n"
    again = await owner.put("/api/v1/files/notes/plan.md", content=b"# Plan v2\n")
    assert again.status_code == 200 and again.json()["bytes"] == 10
    await owner.put("/api/v1/files/data.bin", content=bytes(range(256)) * 40)

    listed = (await owner.get("/api/v1/files")).json()
    assert [(f["path"], f["bytes"], f["content_type"]) for f in listed["items"]] == [
        ("data.bin", 10240, "application/octet-stream"), ("notes/plan.md", 10, "text/markdown")]
    assert listed["next_cursor"] is None and all(f["modified"] for f in listed["items"])

    download = await owner.get("/api/v1/files/data.bin")
    assert download.status_code == 200 and download.content == bytes(range(256)) * 40
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-length"] == "10240"
    assert download.headers["content-disposition"] == "attachment; filename=\"data.bin\"; filename*=UTF-8''data.bin"
    assert download.headers["x-content-type-options"] == "nosniff"

    assert (await owner.delete("/api/v1/files/notes/plan.md")).status_code == 204
    gone = await owner.get("/api/v1/files/notes/plan.md")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "file_not_found"
    again_gone = await owner.delete("/api/v1/files/notes/plan.md")
    assert again_gone.status_code == 404 and again_gone.json()["error"]["code"] == "file_not_found"
    rows = await db("SELECT action, target_type, result, details FROM audit_logs WHERE org_id = :o AND "
                    "target_type = 'file' ORDER BY created_at", o=tenant.org_id)
    assert [(r[0], r[2], r[3]["path"]) for r in rows] == [
        ("upload_file", "success", "notes/plan.md"), ("upload_file", "success", "notes/plan.md"),
        ("upload_file", "success", "data.bin"), ("delete_file", "success", "notes/plan.md"),
        ("delete_file", "failure", "notes/plan.md")]
    assert rows[0][3]["bytes"] == 15


@pytest.mark.parametrize("name", ["résumé 2024.pdf", 'quote "and" back\\slash.txt', "日本語のメモ.txt",
                                  "semi;colon, comma=equals.csv", "emoji 🎉.json"])
async def test_any_file_name_downloads_under_its_own_name(owner, name):
    url = "/api/v1/files/names/" + name.replace("%", "%25")
    assert (await owner.put(url, content=b"x")).status_code == 201
    download = await owner.get(url)
    assert download.status_code == 200 and download.content == b"x"
    disposition = download.headers["content-disposition"]
    fallback, encoded = disposition.split("; filename=", 1)[1].split("; filename*=UTF-8''")
    assert unquote(encoded) == name, disposition
    assert fallback.isascii() and fallback.count('"') == 2 and "\\" not in fallback
    assert (await owner.get("/api/v1/files", params={"prefix": "names/"})).json()["items"][0]["path"] == "names/" + name


async def test_a_file_uploaded_over_http_is_read_by_the_file_tools_and_the_other_way(owner):
    assert (await owner.put("/api/v1/files/shared/in.txt", content="bonjour, l'équipe\n".encode())).status_code == 201
    read = await builtin(owner, "file_read", {"path": "shared/in.txt"})
    assert read["status"] == "succeeded" and read["result"]["output"]["content"] == "bonjour, l'équipe\n"
    found = await builtin(owner, "file_search", {"query": "équipe"})
    assert [m["path"] for m in found["result"]["output"]["matches"]] == ["shared/in.txt"]
    saved = await builtin(owner, "file_save", {"path": "shared/out.txt", "content": "written by the tool"})
    assert saved["status"] == "succeeded", saved
    download = await owner.get("/api/v1/files/shared/out.txt")
    assert download.status_code == 200 and download.text == "written by the tool"
    listed = (await owner.get("/api/v1/files", params={"prefix": "shared/"})).json()["items"]
    assert [f["path"] for f in listed] == ["shared/in.txt", "shared/out.txt"]


@pytest.mark.parametrize("target", [
    "/api/v1/files/../../etc/passwd", "/api/v1/files/a/../../escape.txt", "/api/v1/files/%2e%2e/escape.txt",
    "/api/v1/files/%2E%2E%2F%2E%2E%2Fescape.txt", "/api/v1/files//etc/passwd", "/api/v1/files/%2Fetc%2Fpasswd",
    "/api/v1/files/..%5C..%5Cescape.txt", "/api/v1/files/\\etc\\passwd",
])
@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
async def test_paths_out_of_the_workspace_are_refused_and_write_nothing(stack, tenant, method, target):
    before = sorted(os.listdir(stack.services.data_dir))
    status, body = await raw(stack.api_url, method, target, tenant.headers(), b"escaped" if method == "PUT" else b"")
    assert status == 422 and body["error"]["code"] == "path_outside_workspace", (status, body)
    assert sorted(os.listdir(stack.services.data_dir)) == before
    assert not (stack.services.data_dir / "escape.txt").exists()
    assert not (stack.services.data_dir / "workspaces" / "escape.txt").exists()


async def test_nul_and_reserved_and_empty_paths_are_refused(owner):
    nul = await owner.put("/api/v1/files/a%00b.txt", content=b"x")
    assert nul.status_code == 422 and nul.json()["error"]["details"]["errors"][0]["type"] == "string_contains_nul"
    reserved = await owner.put("/api/v1/files/.save-quota.lock", content=b"x")
    assert reserved.status_code == 422 and reserved.json()["error"]["code"] == "path_reserved"
    empty = await owner.get("/api/v1/files/")
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "path_invalid"
    long_name = await owner.put("/api/v1/files/" + "n" * 256, content=b"x")
    assert long_name.status_code == 422 and long_name.json()["error"]["code"] == "path_invalid"
    assert (await owner.get("/api/v1/files")).json()["items"] == []


async def test_symlinks_planted_in_the_workspace_lead_nowhere_outside(owner, stack, tenant, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    folder = workspace_of(stack, tenant)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / "out").symlink_to(outside)
    (folder / "secret-link.txt").symlink_to(outside / "secret.txt")
    for method, path in [("GET", "out/secret.txt"), ("PUT", "out/new.txt"), ("DELETE", "out/secret.txt"),
                         ("GET", "secret-link.txt"), ("PUT", "secret-link.txt"), ("DELETE", "secret-link.txt")]:
        body = b"overwritten" if method == "PUT" else None
        response = await owner.request(method, f"/api/v1/files/{path}", content=body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "path_outside_workspace", (
            method, path, response.text)
    assert sorted(os.listdir(outside)) == ["secret.txt"] and (outside / "secret.txt").read_text() == "not yours"
    assert (await owner.get("/api/v1/files")).json()["items"] == []


async def test_folders_and_files_in_the_way_are_conflicts(owner):
    assert (await owner.put("/api/v1/files/dir/file.txt", content=b"x")).status_code == 201
    on_folder = await owner.put("/api/v1/files/dir", content=b"x")
    assert on_folder.status_code == 409 and on_folder.json()["error"]["code"] == "is_a_directory"
    under_file = await owner.put("/api/v1/files/dir/file.txt/deeper.txt", content=b"x")
    assert under_file.status_code == 409 and under_file.json()["error"]["code"] == "not_a_directory"
    assert (await owner.get("/api/v1/files/dir")).status_code == 404
    assert (await owner.delete("/api/v1/files/dir")).status_code == 404
    assert [f["path"] for f in (await owner.get("/api/v1/files")).json()["items"]] == ["dir/file.txt"]


async def test_listing_pages_by_path_and_filters_by_prefix(owner):
    for name in ["b/2.txt", "a.txt", "b/1.txt", "c.txt", "b/3.txt"]:
        assert (await owner.put(f"/api/v1/files/{name}", content=name.encode())).status_code == 201
    seen, cursor = [], None
    while True:
        page = (await owner.get("/api/v1/files", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        seen += [f["path"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a.txt", "b/1.txt", "b/2.txt", "b/3.txt", "c.txt"]
    prefixed = (await owner.get("/api/v1/files", params={"prefix": "b/"})).json()["items"]
    assert [f["path"] for f in prefixed] == ["b/1.txt", "b/2.txt", "b/3.txt"]
    bad = await owner.get("/api/v1/files", params={"cursor": "!!not-a-cursor!!"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


async def test_viewers_read_members_and_viewers_may_not_write(as_role):
    owner, member, viewer = as_role(Role.OWNER), as_role(Role.MEMBER), as_role(Role.VIEWER)
    assert (await owner.put("/api/v1/files/team.txt", content=b"by the owner")).status_code == 201
    assert (await viewer.get("/api/v1/files/team.txt")).content == b"by the owner"
    assert [f["path"] for f in (await viewer.get("/api/v1/files")).json()["items"]] == ["team.txt"]
    for client in (viewer, member):
        for response in (await client.put("/api/v1/files/team.txt", content=b"changed"),
                         await client.delete("/api/v1/files/team.txt")):
            assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
            assert "tools:write" in response.text
    assert (await owner.get("/api/v1/files/team.txt")).content == b"by the owner"


async def test_another_organization_sees_none_of_the_files_and_cant_name_them(owner, as_role, other_tenant, tenant,
                                                                               stack):
    assert (await owner.put("/api/v1/files/private/plan.txt", content=b"ours")).status_code == 201
    other = as_role(Role.OWNER, of=other_tenant)
    assert (await other.get("/api/v1/files")).json()["items"] == []
    for response in (await other.get("/api/v1/files/private/plan.txt"),
                     await other.delete("/api/v1/files/private/plan.txt")):
        assert response.status_code == 404 and response.json()["error"]["code"] == "file_not_found"
    status, body = await raw(stack.api_url, "GET", f"/api/v1/files/../{tenant.org_id}/private/plan.txt",
                             other_tenant.headers())
    assert status == 422 and body["error"]["code"] == "path_outside_workspace"
    # The same path in the other organization is its own file.
    assert (await other.put("/api/v1/files/private/plan.txt", content=b"theirs")).status_code == 201
    assert (await owner.get("/api/v1/files/private/plan.txt")).content == b"ours"


@pytest.fixture(scope="module")
def small_api(stack):
    proc, url = api_with(stack, "api-small-files", AGENTMEM_WORKSPACE_UPLOAD_MAX_BYTES="1000",
                         AGENTMEM_WORKSPACE_QUOTA_BYTES="2500")
    yield url
    proc.stop()


async def test_a_file_over_the_size_limit_is_a_413_and_leaves_nothing(small_api, tenant, stack):
    async with api_client(small_api, headers=tenant.headers()) as client:
        announced = await client.put("/api/v1/files/big.bin", content=b"x" * 1001)

        async def chunks():  # no Content-Length: counted as it streams
            for _ in range(50):
                yield b"y" * 100

        streamed = await client.put("/api/v1/files/big.bin", content=chunks())
        for response in (announced, streamed):
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert error["code"] == "file_too_large" and error["details"] == {"max_bytes": 1000}
        assert (await client.get("/api/v1/files/big.bin")).status_code == 404
        assert (await client.put("/api/v1/files/exact.bin", content=b"x" * 1000)).status_code == 201
    assert leftovers(workspace_of(stack, tenant)) == []


async def test_the_quota_counts_every_file_and_a_replacement_only_by_its_difference(small_api, tenant, stack):
    async with api_client(small_api, headers=tenant.headers()) as client:
        for name in ("one.bin", "two.bin"):
            assert (await client.put(f"/api/v1/files/{name}", content=b"x" * 1000)).status_code == 201
        over = await client.put("/api/v1/files/three.bin", content=b"x" * 600)
        assert over.status_code == 413, over.text
        error = over.json()["error"]
        assert error["code"] == "workspace_quota_exceeded"
        assert error["details"]["quota_bytes"] == 2500 and error["details"]["used_bytes"] == 2000
        assert (await client.put("/api/v1/files/one.bin", content=b"z" * 1000)).status_code == 200
        assert (await client.put("/api/v1/files/three.bin", content=b"x" * 500)).status_code == 201
        assert (await client.delete("/api/v1/files/two.bin")).status_code == 204
        assert (await client.put("/api/v1/files/four.bin", content=b"x" * 1000)).status_code == 201
        listed = (await client.get("/api/v1/files")).json()["items"]
    assert sum(f["bytes"] for f in listed) == 2500
    assert leftovers(workspace_of(stack, tenant)) == []


async def test_concurrent_uploads_never_pass_the_quota_together(small_api, tenant, stack):
    async with api_client(small_api, headers=tenant.headers()) as client:
        responses = await asyncio.gather(*(client.put(f"/api/v1/files/c{i}.bin", content=b"x" * 900)
                                           for i in range(6)))
        statuses = sorted(r.status_code for r in responses)
        listed = (await client.get("/api/v1/files")).json()["items"]
    assert statuses == [201, 201, 413, 413, 413, 413], statuses
    assert sum(f["bytes"] for f in listed) == 1800
    assert leftovers(workspace_of(stack, tenant)) == []

