"""Token estimates for fitting a prompt into a model's context window.

No tokenizer is shipped for every model a provider may serve, so sizes are estimated: about four
characters per token for English text (OpenAI's rule of thumb, within ~10% for cl100k/o200k on prose),
plus a few tokens of framing per message. The budget keeps a margin for the estimate's error.
"""

from __future__ import annotations

import json
from typing import Any

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and separators, per message


def text_tokens(text: str | None) -> int:
    """Estimated tokens of a text."""
    if not text:
        return 0
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def message_tokens(role: str, content: str | None, tool_calls: list[dict[str, Any]] | None = None,
                   name: str | None = None) -> int:
    """Estimated tokens of one chat message as sent to the model."""
    total = MESSAGE_OVERHEAD + text_tokens(content) + text_tokens(name)
    for call in tool_calls or []:
        total += MESSAGE_OVERHEAD + text_tokens(call.get("name")) + text_tokens(call.get("arguments"))
    return total


def tools_tokens(tools: list[dict[str, Any]]) -> int:
    """Estimated tokens of the tool definitions sent with a request."""
    return text_tokens(json.dumps(tools, separators=(",", ":"))) if tools else 0
