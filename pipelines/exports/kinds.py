"""What an archive holds: one member per kind of row, which rows of a scope each takes, how ids are remapped.

Each kind is a table read in keyset order and written back as the same columns (those of its SQLModel
table; generated columns such as `fts` are left to the database). A scope (`organization`, `user`,
`agent`) picks live rows: a user's memories, blocks and conversations (with the agents those belong
to); an agent's memories (`agent_id`), the agent, its blocks, tools and conversations. Rows that
depend on others (history, versions, passages, messages) follow the rows exported with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import SQLModel

from schemas.tables import (
    Agent,
    AgentBlock,
    Block,
    BlockVersion,
    Conversation,
    Memory,
    MemoryHistory,
    MemoryPassage,
    Message,
    Tool,
)

# What a client asks to include; each group is one or more kinds.
GROUPS = ("memories", "history", "blocks", "agents", "tools", "conversations")
SCOPES = ("organization", "user", "agent")

# Live rows of the scope, per table (alias `t`); :org the organization, :value the scope's id (user or agent id
# as memories carry it), :agent the same as a uuid (NULL when it is not one: then no agent row matches).
_MEMORIES = {
    "organization": "{a}.org_id = :org AND {a}.deleted_at IS NULL",
    "user": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.user_id = :value",
    "agent": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.agent_id = :value",
}
_CONVERSATIONS = {
    "organization": "{a}.org_id = :org AND {a}.deleted_at IS NULL",
    "user": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.user_id = :value",
    "agent": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.agent_id = :agent",
}
_AGENTS = {
    "organization": "{a}.org_id = :org AND {a}.deleted_at IS NULL",
    "user": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.id IN "
            "(SELECT c.agent_id FROM conversations c WHERE " + _CONVERSATIONS["user"].format(a="c") + ")",
    "agent": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.id = :agent",
}
_BLOCKS = {
    "organization": "{a}.org_id = :org AND {a}.deleted_at IS NULL",
    "user": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.user_id = :value",
    "agent": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.id IN "
             "(SELECT ab.block_id FROM agent_blocks ab WHERE ab.agent_id = :agent AND ab.org_id = :org)",
}
_TOOLS = {
    "organization": "{a}.org_id = :org AND {a}.deleted_at IS NULL",
    "user": "false",
    "agent": "{a}.org_id = :org AND {a}.deleted_at IS NULL AND {a}.id IN "
             "(SELECT unnest(ag.tool_ids) FROM agents ag WHERE ag.id = :agent AND ag.org_id = :org)",
}


def _each(template: str, **parts: dict[str, str]) -> dict[str, str]:
    return {scope: template.format(**{k: v[scope].format(a=k[0]) for k, v in parts.items()}) for scope in SCOPES}


@dataclass(frozen=True)
class Kind:
    """One member of an archive: a table, the group that includes it, and how its rows move between organizations."""

    name: str
    table: type[SQLModel]
    group: str
    where: dict[str, str]  # scope → SQL condition on alias `t`
    key: tuple[str, ...] = ("id",)  # keyset order, unique
    # Columns naming a row exported alongside (remapped like the row's own id), and arrays of such ids.
    refs: tuple[str, ...] = ()
    ref_arrays: tuple[str, ...] = ()
    # Columns that name what stays behind (the source organization's jobs): cleared on import.
    cleared: tuple[str, ...] = ()
    vectors: tuple[str, ...] = ()
    # Whether the row's own `id` is remapped (tables keyed by their parents' ids have none).
    has_id: bool = True
    required: tuple[str, ...] = field(default=())

    @property
    def member(self) -> str:
        return f"{self.name}.jsonl"

    @property
    def columns(self) -> list[str]:
        """The columns written back: the table's own (a generated column is not one of them)."""
        return [c.name for c in self.table.__table__.columns]


KINDS: tuple[Kind, ...] = (
    Kind("tools", Tool, "tools", {s: v.format(a="t") for s, v in _TOOLS.items()}, required=("id", "name", "source")),
    Kind("agents", Agent, "agents", {s: v.format(a="t") for s, v in _AGENTS.items()}, ref_arrays=("tool_ids",),
         required=("id", "name")),
    Kind("blocks", Block, "blocks", {s: v.format(a="t") for s, v in _BLOCKS.items()},
         required=("id", "label", "value", "char_limit")),
    Kind("block_versions", BlockVersion, "blocks",
         _each("t.block_id IN (SELECT b.id FROM blocks b WHERE {b})", b=_BLOCKS), refs=("block_id",),
         cleared=("job_id",), required=("id", "block_id", "version")),
    Kind("agent_blocks", AgentBlock, "agents",
         _each("t.agent_id IN (SELECT a.id FROM agents a WHERE {a}) AND t.block_id IN "
               "(SELECT b.id FROM blocks b WHERE {b})", a=_AGENTS, b=_BLOCKS),
         key=("agent_id", "block_id"), refs=("agent_id", "block_id"), has_id=False,
         required=("agent_id", "block_id", "label")),
    Kind("memories", Memory, "memories", {s: v.format(a="t") for s, v in _MEMORIES.items()},
         cleared=("source_job_id", "source_index"), vectors=("embedding", "embedded_hash"),
         required=("id", "content", "content_hash")),
    Kind("memory_passages", MemoryPassage, "memories",
         _each("EXISTS (SELECT 1 FROM memories m WHERE m.id = t.memory_id AND m.content_hash = t.content_hash "
               "AND {m})", m=_MEMORIES), key=("memory_id", "ord"), refs=("memory_id",), has_id=False,
         required=("memory_id", "ord", "embedding")),
    Kind("memory_history", MemoryHistory, "history",
         _each("t.memory_id IN (SELECT m.id FROM memories m WHERE {m})", m=_MEMORIES), refs=("memory_id",),
         cleared=("job_id",), required=("id", "memory_id", "version", "event")),
    Kind("conversations", Conversation, "conversations", {s: v.format(a="t") for s, v in _CONVERSATIONS.items()},
         refs=("agent_id",), required=("id", "agent_id")),
    Kind("messages", Message, "conversations",
         _each("t.deleted_at IS NULL AND t.conversation_id IN (SELECT c.id FROM conversations c WHERE {c})",
               c=_CONVERSATIONS), refs=("conversation_id", "agent_id"), cleared=("job_id", "step_key"),
         vectors=("embedding",), required=("id", "conversation_id", "seq", "role")),
)
BY_NAME = {k.name: k for k in KINDS}


def selected(groups: list[str], *, vectors: bool) -> list[Kind]:
    """The kinds an export of these groups writes, in the order an import must insert them (parents first)."""
    groups = list(groups)
    # A conversation belongs to an agent, a version to a memory: without them an import could store neither.
    for group, needs in (("conversations", "agents"), ("history", "memories")):
        if group in groups and needs not in groups:
            groups.append(needs)
    # An attachment of a block to an agent needs both.
    chosen = [k for k in KINDS if k.group in groups and (k.name != "agent_blocks" or "blocks" in groups)]
    return [k for k in chosen if vectors or k.name != "memory_passages"]
