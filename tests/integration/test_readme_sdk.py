"""The README's "Python SDK" section runs as written: its Python blocks, in order, as one script of a new process
against the test stack, with the URL and key in the variables the snippets read (as the CLI's are)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from schemas.permissions import Role

ROOT = Path(__file__).resolve().parents[2]


def sdk_snippets() -> list[str]:
    section = (ROOT / "README.md").read_text().split("\n## Python SDK\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_the_quick_start_blocks():
    blocks = sdk_snippets()
    assert len(blocks) >= 4
    assert "AgentMem(" in blocks[0] and ".wait(" in blocks[0] and ".search(" in blocks[0]
    assert any(".events(" in b for b in blocks) and any("AsyncAgentMem" in b for b in blocks)


async def test_the_readme_python_sdk_snippets_run_against_the_stack(stack, llm_tenant):
    script = "\n\n".join(sdk_snippets())
    env = {**stack.env, "AGENTMEM_API_URL": stack.api_url, "AGENTMEM_API_KEY": llm_tenant.keys[Role.OWNER]}
    ran = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = ran.stdout
    assert re.search(r"^job [0-9a-f-]{36} queued$", out, flags=re.M)
    assert re.search(r"^succeeded \{.+\}$", out, flags=re.M)
    # The search's best hit answers the question.
    scored = re.findall(r"^(\d\.\d{3})  (.+)$", out, flags=re.M)
    assert scored[0][1] == "Ada is allergic to peanuts."
    lines = out.splitlines()
    followed = lines.index("succeeded")   # what the events loop printed ends with the job's status
    assert re.fullmatch(r"\d+/40", lines[followed - 1])
    assert "404 not_found " in out
    # The default test model answers `echo: <the message>`, streamed as tokens.
    assert "echo: What do I keep on my roof?" in out and "echo: Thanks!" in out
    assert "Ada's sister Grace plays the cello." in out
