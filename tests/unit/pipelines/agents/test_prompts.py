"""pipelines/agents/prompts.py: agents' prompts compile through a sandboxed, bounded Jinja2 template;
errors name the line."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest

from core.errors import InvalidInput
from pipelines.agents import prompts


def agent(template: str | None = None, system: str = "You are a helpful assistant.") -> SimpleNamespace:
    return SimpleNamespace(id=uuid.uuid4(), name="helper", description=None, meta={"team": "care"}, system=system,
                           prompt_template=template)


def block(label: str, value: str, **extra) -> SimpleNamespace:
    fields = {"id": uuid.uuid4(), "label": label, "value": value, "char_limit": 200, "description": None,
              "read_only": False, "version": 1} | extra
    return SimpleNamespace(**fields)


BLOCKS = [block("persona", "I am Sam, a patient tutor.", description="Who you are"),
          block("human", "Name: Alice. Learns Portuguese.", read_only=True)]


def test_default_template_writes_the_instructions_then_each_block_with_its_limits():
    text, kind = prompts.compile_prompt(agent(), BLOCKS)
    assert kind == "default" and text.startswith("You are a helpful assistant.\n")
    assert "<persona>\n<description>\nWho you are\n</description>" in text
    assert "<value>\nI am Sam, a patient tutor.\n</value>\n</persona>" in text
    assert f"- chars_current={len(BLOCKS[1].value)}\n- chars_limit=200\n- read_only=true" in text
    assert text.index("<persona>") < text.index("<human>")
    assert "<description>" not in text.split("<human>")[1]  # no description, no empty section


def test_default_template_without_blocks_is_just_the_instructions():
    assert prompts.compile_prompt(agent(), [])[0] == "You are a helpful assistant.\n"


def test_custom_template_sees_blocks_by_label_the_agent_and_loops():
    template = ("{{ system }} ({{ agent.name }}, {{ agent.metadata.team }})\n"
                "{% for b in blocks %}[{{ b.label }}:{{ b.chars }}/{{ b.limit }}]{% endfor %}\n"
                "Human says: {{ block.human.value | upper }}")
    text, kind = prompts.compile_prompt(agent(template), BLOCKS)
    assert kind == "custom"
    # trim_blocks: the line break right after a block tag (`{% endfor %}`) is dropped, as in Jinja2's docs.
    assert text == ("You are a helpful assistant. (helper, care)\n[persona:26/200][human:31/200]"
                    "Human says: NAME: ALICE. LEARNS PORTUGUESE.\n")


def test_a_syntax_error_is_template_invalid_with_its_line():
    with pytest.raises(InvalidInput) as caught:
        prompts.validate_template("line one\n{% for b in blocks %}\n{{ b.label }}\n")
    assert caught.value.code == "template_invalid" and caught.value.details["line"] == 3


@pytest.mark.parametrize(("template", "line", "says"), [
    ("ok\n{{ missing }}", 2, "'missing' is undefined"),
    ("a\nb\n{{ block.nobody.value }}", 3, "nobody"),
    ("{{ 1 / 0 }}", 1, "division by zero"),
    ("x\n{{ ''.__class__.__mro__ }}", 2, "unsafe"),
    ("{% for i in range(10 ** 6) %}{% endfor %}", 1, "range()"),
    ("{{ 'a' * 10 ** 7 }}", 1, "`*`"),
])
def test_a_render_failure_is_template_error_with_its_line(template, line, says):
    with pytest.raises(InvalidInput) as caught:
        prompts.compile_prompt(agent(template), BLOCKS)
    assert caught.value.code == "template_error"
    assert caught.value.details["line"] == line and says in caught.value.details["error"]


def test_rendering_is_bounded_in_time():
    template = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    start = time.monotonic()
    with pytest.raises(InvalidInput) as caught:
        prompts.compile_prompt(agent(template), BLOCKS)
    assert caught.value.code == "template_error" and "took longer" in caught.value.details["error"]
    assert time.monotonic() - start < 10


def test_rendering_is_bounded_in_size(monkeypatch):
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "prompt_max_chars", 1000)
    with pytest.raises(InvalidInput) as caught:
        prompts.compile_prompt(agent("{% for i in range(5000) %}{{ i }}{% endfor %}"), BLOCKS)
    assert caught.value.code == "template_error" and "longer than 1000" in caught.value.details["error"]
