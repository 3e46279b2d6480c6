"""The sample file the quick start ingests is valid, line by line, for the CLI and the API."""

import json
from pathlib import Path

from cli.client import _read_items

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "memories.jsonl"


def test_the_quick_start_sample_reads_without_problems():
    items, problems = _read_items(SAMPLE)
    assert problems == []
    assert len(items) == sum(1 for line in SAMPLE.read_text().splitlines() if line.strip()) >= 10
    assert {item["user_id"] for item in items} == {"alice", "bob"}


def test_the_readme_quick_start_ingests_the_shipped_sample():
    readme = (SAMPLE.parents[1] / "README.md").read_text()
    assert "agentmem ingest examples/memories.jsonl" in readme
    first = json.loads(SAMPLE.read_text().splitlines()[0])
    assert first["content"] in readme
