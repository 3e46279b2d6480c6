"""Workspace files over HTTP, the pipeline side: path rules, names in headers, uploads within limits, listing."""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import unquote

import pytest

from core.errors import Conflict, InvalidInput
from pipelines.tools import files, quota
from pipelines.tools.workspace import PathOutsideWorkspace, WorkspaceFileError, file_save, workspace_root


@pytest.fixture
def org(tmp_path, override_settings) -> uuid.UUID:
    override_settings(tool_workspace_dir=tmp_path / "workspaces", workspace_quota_bytes=100,
                      workspace_upload_max_bytes=60)
    return uuid.uuid4()


async def chunks(*parts: bytes):
    for part in parts:
        yield part


def upload(org, path: str, *parts: bytes):
    return asyncio.run(files.save_upload(org, path, chunks(*parts)))


def temporary_files(root) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if n.startswith(".save-") and n != quota.LOCK_NAME]


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "..\\x", "\\x", "a\x00b"])
def test_paths_out_of_the_workspace_are_refused(path):
    with pytest.raises(PathOutsideWorkspace):
        files.check_path(path)


@pytest.mark.parametrize("path, code", [("", "path_invalid"), (".", "path_invalid"), ("a/" + "n" * 256, "path_invalid"),
                                        ("x" * 1001, "path_invalid"), (".save-x", "path_reserved"),
                                        ("a/.save-quota.lock", "path_reserved")])
def test_paths_naming_no_storable_file_are_refused(path, code):
    with pytest.raises(InvalidInput) as caught:
        files.check_path(path)
    assert caught.value.code == code


@pytest.mark.parametrize("name", ["plain.txt", "résumé.pdf", 'a "quoted"\\name.txt', "日本語.md", "x;y,z=1.csv",
                                  "tab\there.txt", "emoji 🎉.json", "100%.txt"])
def test_content_disposition_names_any_file_exactly_and_safely(name):
    header = files.content_disposition(f"folder/{name}")
    assert header.startswith('attachment; filename="')
    fallback, encoded = header[len('attachment; filename="'):].split("\"; filename*=UTF-8''")
    assert unquote(encoded) == name
    assert fallback.isascii() and all(c not in fallback for c in '"\\\t\r\n') and fallback
    assert all(c not in encoded for c in ' ";\\,')


@pytest.mark.parametrize("name, kind", [
    ("a.txt", "text/plain"), ("a.md", "text/markdown"), ("a.pdf", "application/pdf"), ("a.json", "application/json"),
    ("noext", "application/octet-stream"), ("a.tar.gz", "application/gzip"), ("a.x-y", "application/octet-stream"),
])
def test_the_content_type_comes_from_the_name(name, kind):
    assert files.content_type_of(name) == kind


def test_an_upload_lands_whole_and_replaces_what_was_there(org):
    info, created = upload(org, "a/b.txt", b"hello ", b"world")
    assert created and info.bytes == 11 and info.path == "a/b.txt" and info.content_type == "text/plain"
    assert (workspace_root(org) / "a" / "b.txt").read_bytes() == b"hello world"
    info, created = upload(org, "a/b.txt", b"new")
    assert not created and info.bytes == 3
    assert temporary_files(workspace_root(org)) == []


def test_an_upload_over_a_limit_stops_and_leaves_nothing(org):
    upload(org, "keep.txt", b"k" * 50)
    with pytest.raises(files.FileTooLarge) as too_large:
        upload(org, "big.bin", b"x" * 40, b"x" * 40)
    assert too_large.value.status_code == 413 and too_large.value.details == {"max_bytes": 60}
    with pytest.raises(quota.QuotaExceeded) as over:
        upload(org, "deep/new/over.bin", b"x" * 51)
    assert over.value.status_code == 413 and over.value.details["quota_bytes"] == 100
    root = workspace_root(org)
    assert temporary_files(root) == [] and not (root / "deep").exists() and not (root / "big.bin").exists()
    assert upload(org, "keep.txt", b"r" * 60)[0].bytes == 60  # a replacement counts by its difference


def test_a_failing_stream_leaves_nothing(org):
    async def broken():
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(files.save_upload(org, "half.txt", broken()))
    assert temporary_files(workspace_root(org)) == [] and not (workspace_root(org) / "half.txt").exists()


def test_folders_and_files_in_the_way(org):
    upload(org, "d/f.txt", b"x")
    for path, code in (("d", "is_a_directory"), ("d/f.txt/g.txt", "not_a_directory")):
        with pytest.raises(Conflict) as caught:
            upload(org, path, b"y")
        assert caught.value.code == code
    with pytest.raises(files.FileNotFound):
        files.open_file(org, "d")
    with pytest.raises(files.FileNotFound):
        files.delete_file(org, "d")


def test_listing_pages_skips_temporaries_and_symlinks(org, tmp_path):
    for name in ("b/2.txt", "a.txt", "b/1.txt"):
        upload(org, name, b"x")
    root = workspace_root(org)
    (root / ".save-leftover").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"s")
    (root / "link").symlink_to(tmp_path / "outside")
    (root / "file-link").symlink_to(tmp_path / "outside" / "secret.txt")
    first, cursor = files.list_files(org, limit=2)
    rest, end = files.list_files(org, limit=2, cursor=cursor)
    assert [f.path for f in first + rest] == ["a.txt", "b/1.txt", "b/2.txt"] and end is None
    assert [f.path for f in files.list_files(org, prefix="b/")[0]] == ["b/1.txt", "b/2.txt"]
    with pytest.raises(InvalidInput) as caught:
        files.list_files(org, cursor="not base64!")
    assert caught.value.code == "invalid_cursor"


def test_a_workspace_never_written_lists_nothing(org):
    assert files.list_files(org) == ([], None)
    with pytest.raises(files.FileNotFound):
        files.open_file(org, "x.txt")


def test_file_save_obeys_the_quota_too(tmp_path, override_settings):
    override_settings(workspace_quota_bytes=10)
    root = tmp_path / "org"
    file_save(root, "a.txt", "x" * 8, max_bytes=1000)
    with pytest.raises(quota.QuotaExceeded) as caught:
        file_save(root, "b.txt", "x" * 3, max_bytes=1000)
    assert caught.value.code == "workspace_quota_exceeded"
    file_save(root, "a.txt", "y" * 10, max_bytes=1000)  # replacing: only the difference counts
    assert not (root / "b.txt").exists() and temporary_files(root) == []
    file_save(root, "sub/c.txt", "", max_bytes=1000)
    with pytest.raises(WorkspaceFileError) as beneath:
        file_save(root, "a.txt/d.txt", "", max_bytes=1000)
    assert beneath.value.code == "not_a_directory"
