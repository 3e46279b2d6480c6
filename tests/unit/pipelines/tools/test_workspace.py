"""Built-in file tools over a workspace directory: confined to it, sizes capped."""

from __future__ import annotations

import os
import stat

import pytest

from pipelines.tools.workspace import (
    PathOutsideWorkspace,
    WorkspaceFileError,
    WorkspaceUnsafe,
    check_workspaces,
    file_read,
    file_save,
    file_search,
)

CAP = 1000


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a/..", "", "a\x00b", "..\\x"])
def test_paths_that_leave_the_workspace_are_refused_before_touching_the_disk(tmp_path, path):
    with pytest.raises(PathOutsideWorkspace) as caught:
        file_save(tmp_path / "org", path, "x", max_bytes=CAP)
    assert caught.value.code == "path_outside_workspace" and caught.value.status_code == 422
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "org"])
    assert not (tmp_path / "x").exists()


def test_a_symlink_pointing_out_of_the_workspace_is_refused(tmp_path):
    root, outside = tmp_path / "org", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("s3cret")
    (root / "link").symlink_to(outside)
    with pytest.raises(PathOutsideWorkspace):
        file_read(root, "link/secret", max_bytes=CAP)
    with pytest.raises(PathOutsideWorkspace):
        file_save(root, "link/new", "x", max_bytes=CAP)
    assert not (outside / "new").exists()
    assert file_search(root, query="s3cret", max_bytes=CAP)["matches"] == []


def test_save_read_and_search_round_trip(tmp_path):
    root = tmp_path / "org"
    assert file_save(root, "notes/today.md", "Buy milk\nCall Alice\n", max_bytes=CAP) == \
        {"path": "notes/today.md", "bytes": 20}
    assert file_read(root, "notes/today.md", max_bytes=CAP)["content"] == "Buy milk\nCall Alice\n"
    assert file_search(root, query="alice", max_bytes=CAP)["matches"] == \
        [{"path": "notes/today.md", "line": 2, "text": "Call Alice"}]
    assert file_search(root, glob="**/*.md", max_bytes=CAP)["matches"] == [{"path": "notes/today.md", "bytes": 20}]
    file_save(root, "notes/today.md", "replaced", max_bytes=CAP)
    assert file_read(root, "notes/today.md", max_bytes=CAP)["content"] == "replaced"


def test_sizes_are_capped_and_missing_files_say_so(tmp_path):
    root = tmp_path / "org"
    with pytest.raises(WorkspaceFileError) as caught:
        file_save(root, "big", "x" * (CAP + 1), max_bytes=CAP)
    assert caught.value.code == "file_too_large"
    with pytest.raises(WorkspaceFileError) as caught:
        file_read(root, "nothing-here", max_bytes=CAP)
    assert caught.value.code == "file_not_found"


def test_every_folder_a_save_makes_is_0700_whatever_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        file_save(tmp_path / "workspaces" / "org", "a/b/c.txt", "x", max_bytes=CAP)
    finally:
        os.umask(old)
    made = [tmp_path / "workspaces", tmp_path / "workspaces" / "org", tmp_path / "workspaces" / "org" / "a",
            tmp_path / "workspaces" / "org" / "a" / "b"]
    assert [stat.S_IMODE(folder.stat().st_mode) for folder in made] == [0o700] * 4
    assert stat.S_IMODE((made[-1] / "c.txt").stat().st_mode) == 0o600


def test_a_worker_closes_open_workspaces_when_it_starts(override_settings, tmp_path, caplog):
    override_settings(tool_workspace_dir=tmp_path / "workspaces")
    check_workspaces()  # nothing yet: nothing to do
    org = tmp_path / "workspaces" / "org"
    org.mkdir(parents=True)
    for folder in (org, org.parent):
        folder.chmod(0o755)
    check_workspaces()
    assert {stat.S_IMODE(folder.stat().st_mode) for folder in (org, org.parent)} == {0o700}
    assert "was 755, now 700" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another user needs root")
def test_a_worker_refuses_workspaces_another_user_owns(override_settings, tmp_path):
    override_settings(tool_workspace_dir=tmp_path / "workspaces")
    (tmp_path / "workspaces" / "org").mkdir(parents=True)
    os.chown(tmp_path / "workspaces" / "org", 1_900_000_000, 1_900_000_000)
    with pytest.raises(WorkspaceUnsafe, match="belongs to uid 1900000000"):
        check_workspaces()
