"""The archive format on its own: written with checksums, read back, and every kind of damage refused."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from pipelines.exports.archive import (
    ArchiveChecksumMismatch,
    ArchiveCorrupt,
    ArchiveUnsupported,
    ArchiveWriter,
    read_rows,
    validate,
)
from pipelines.exports.kinds import BY_NAME, selected

MEMORY = {"id": "00000000-0000-0000-0000-000000000001", "content": "a fact", "content_hash": "h"}


def _write(folder, rows=(MEMORY,)):
    writer = ArchiveWriter(folder)
    writer.open(BY_NAME["memories"])
    writer.write(BY_NAME["memories"], list(rows))
    return writer.finish({"source": {"scope": "organization"}})


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {info.name: tar.extractfile(info).read() for info in tar}


def _pack(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def test_an_archive_reads_back_with_its_manifest_last_and_checksums_that_match(tmp_path):
    path, manifest = _write(tmp_path, [MEMORY, MEMORY | {"id": "00000000-0000-0000-0000-000000000002"}])
    assert list(_members(path))[-1] == "manifest.json"
    assert validate(path) == manifest and manifest["members"]["memories"]["count"] == 2
    assert [r["id"] for batch in read_rows(path, BY_NAME["memories"], 1) for r in batch] == [
        MEMORY["id"], "00000000-0000-0000-0000-000000000002"]


def test_a_truncated_archive_is_corrupt(tmp_path):
    path, _ = _write(tmp_path, [MEMORY] * 200)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArchiveCorrupt):
        validate(path)


def test_a_changed_member_no_longer_matches_its_checksum(tmp_path):
    path, _ = _write(tmp_path)
    members = _members(path)
    members["memories.jsonl"] = members["memories.jsonl"].replace(b"a fact", b"a lie!")
    _pack(path, members)
    with pytest.raises(ArchiveChecksumMismatch):
        validate(path)


@pytest.mark.parametrize("damage,error", [
    (lambda m: m.pop("manifest.json"), ArchiveCorrupt),
    (lambda m: m.update({"secrets.jsonl": b"{}\n"}), ArchiveCorrupt),
    (lambda m: m.update({"memories.jsonl": b'{"id": "x"}\n'}), ArchiveCorrupt),  # lacks required fields
    (lambda m: m.update({"memories.jsonl": b"not json\n"}), ArchiveCorrupt),
    (lambda m: m.update({"manifest.json": json.dumps(json.loads(m["manifest.json"]) | {"format_version": 99})
                         .encode()}), ArchiveUnsupported),
])
def test_damaged_archives_are_refused_with_a_clear_code(tmp_path, damage, error):
    path, _ = _write(tmp_path)
    members = _members(path)
    damage(members)
    _pack(path, members)
    with pytest.raises(error):
        validate(path)


def test_conversations_bring_their_agents_and_no_vectors_means_no_passages():
    names = [k.name for k in selected(["conversations"], vectors=True)]
    assert names == ["agents", "conversations", "messages"]
    assert "memory_passages" not in [k.name for k in selected(["memories"], vectors=False)]
    assert [k.name for k in selected(["memories"], vectors=True)] == ["memories", "memory_passages"]


def test_a_line_too_long_to_be_a_row_is_refused_without_being_held(tmp_path, monkeypatch):
    monkeypatch.setattr("pipelines.exports.archive.MAX_LINE_BYTES", 100)
    path, _ = _write(tmp_path, [MEMORY | {"content": "x" * 200}])
    with pytest.raises(ArchiveCorrupt, match="over 100 bytes"):
        validate(path)
