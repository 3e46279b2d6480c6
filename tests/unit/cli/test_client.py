"""Reading a JSONL file for `agentmem ingest`: good lines become items, bad ones are named with their line."""

from pathlib import Path

from cli.client import _read_items


def test_plain_text_lines_are_refused_with_the_shape_a_line_must_have(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("I am allergic to peanuts\n\n[1, 2]\n", encoding="utf-8")
    items, problems = _read_items(path)
    assert items == []
    assert [p.split(":")[0] for p in problems] == ["line 1", "line 3"]
    assert all("each line must be one memory such as" in p and '"content"' in p for p in problems)


def test_an_object_with_a_bad_field_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "memories.jsonl"
    path.write_text('{"content": "kept"}\n{"content": ""}\n', encoding="utf-8")
    items, problems = _read_items(path)
    assert [i["content"] for i in items] == ["kept"]
    assert len(problems) == 1 and problems[0].startswith("line 2: content:")
