"""Compile an agent's system prompt: its instructions and core-memory blocks through a Jinja2 template.

Templates are user input, so they run in Jinja2's `SandboxedEnvironment` (no attribute access to
internals, no unsafe calls), see only plain data (dicts, strings, numbers), and are bounded: `range`
is capped, string and list repetition and powers are capped, the output is capped at
`AGENTMEM_PROMPT_MAX_CHARS` and the render at `AGENTMEM_PROMPT_RENDER_SECONDS`. A syntax error is
`template_invalid`, anything that goes wrong while rendering is `template_error`; both are 422 with
the template's line in `details.line`.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from core.errors import InvalidInput
from core.settings import get_settings

DEFAULT_TEMPLATE = """\
{{ system }}
{% if blocks %}

<memory_blocks>
The following memory blocks are currently engaged in your core memory unit:
{% for b in blocks %}

<{{ b.label }}>
{% if b.description %}
<description>
{{ b.description }}
</description>
{% endif %}
<metadata>
- chars_current={{ b.chars }}
- chars_limit={{ b.limit }}
{% if b.read_only %}
- read_only=true
{% endif %}
</metadata>
<value>
{{ b.value }}
</value>
</{{ b.label }}>
{% endfor %}

</memory_blocks>
{% endif %}
"""
TEMPLATE_NAME = "<template>"
MAX_RANGE = 10_000
MAX_REPEAT = 100_000  # characters or items a `*` may build


class _Budget(Exception):
    """The render went over its time or size budget."""


class _Environment(SandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded and a deadline checked on every call and operator."""

    intercepted_binops = frozenset({"*", "**"})
    deadline = float("inf")

    def _tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Budget(f"the template took longer than {get_settings().prompt_render_seconds:g} s to render")

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        self._tick()
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
                    raise _Budget(f"`*` would build more than {MAX_REPEAT} characters or items")
            return operator.mul(left, right)
        if isinstance(right, (int, float)) and abs(right) > 64:
            raise _Budget("`**` with an exponent over 64 is not allowed in templates")
        return operator.pow(left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self._tick()
        return super().call(context, obj, *args, **kwargs)


def _range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise _Budget(f"range() may yield at most {MAX_RANGE} numbers in a template")
    return values


def _environment() -> _Environment:
    env = _Environment(autoescape=False, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=False)
    env.globals["range"] = _range
    return env


def _line_of(exc: BaseException) -> int | None:
    """The template line an exception was raised at (Jinja2 rewrites tracebacks to template lines)."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_NAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def validate_template(source: str) -> None:
    """Refuse a template that does not parse: 422 `template_invalid` with the line."""
    try:
        _environment().parse(source, name=TEMPLATE_NAME)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"the prompt template has a syntax error on line {exc.lineno}: {exc.message}",
                           code="template_invalid", details={"line": exc.lineno, "error": exc.message}) from None


def block_context(block: Any) -> dict[str, Any]:
    """What a template sees of one block."""
    return {"id": str(block.id), "label": block.label, "value": block.value, "limit": block.char_limit,
            "chars": len(block.value), "description": block.description or "", "read_only": block.read_only,
            "version": block.version}


def template_context(agent: Any, blocks: Sequence[Any]) -> dict[str, Any]:
    """What a template sees: `system`, `agent`, `blocks` in order, and `block` by label."""
    listed = [block_context(b) for b in blocks]
    return {"system": agent.system, "blocks": listed, "block": {b["label"]: b for b in listed},
            "agent": {"id": str(agent.id), "name": agent.name, "description": agent.description or "",
                      "metadata": agent.meta}}


def render(source: str, context: dict[str, Any]) -> str:
    """Render a template in the sandbox within the time and size budget; 422 `template_error` otherwise."""
    settings = get_settings()
    env = _environment()
    validate_template(source)
    env.deadline = time.monotonic() + settings.prompt_render_seconds
    parts: list[str] = []
    size = 0
    try:
        for part in env.from_string(source).generate(**context):
            size += len(part)
            if size > settings.prompt_max_chars:
                raise _Budget(f"the prompt would be longer than {settings.prompt_max_chars} characters")
            env._tick()
            parts.append(part)
    except (TemplateError, _Budget, ArithmeticError, TypeError, ValueError, LookupError, AttributeError,
            RecursionError) as exc:
        line = _line_of(exc)
        where = f" on line {line}" if line else ""
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise InvalidInput(f"the prompt template failed{where}: {message}", code="template_error",
                           details={"line": line, "error": message}) from None
    return "".join(parts).strip() + "\n"


def compile_prompt(agent: Any, blocks: Sequence[Any]) -> tuple[str, str]:
    """The agent's system prompt and which template made it (`default` or `custom`)."""
    custom = agent.prompt_template is not None
    return render(agent.prompt_template if custom else DEFAULT_TEMPLATE, template_context(agent, blocks)), \
        ("custom" if custom else "default")
