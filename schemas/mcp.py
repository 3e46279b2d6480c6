"""MCP server API models (AgentMem as an MCP client). Env values and headers go in, never out: responses
name only their keys."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.inputs import check_http_url

Transport = Literal["stdio", "streamable_http"]
# A server's name is part of what a model calls its tools: mcp__<server>__<tool>.
SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"
ENV_KEY = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"
MAX_ARGS = 100
MAX_SECRETS = 50
# Headers the HTTP client sets itself, or that would change where and how a request goes.
RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "accept", "connection", "transfer-encoding",
                              "mcp-session-id", "mcp-protocol-version", "last-event-id"})


def _check_env(env: dict[str, str] | None) -> dict[str, str] | None:
    if env is None:
        return None
    if len(env) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} entries")
    for key, value in env.items():
        if not re.fullmatch(ENV_KEY, key):
            raise ValueError(f"{key[:100]!r} is not an environment variable name (letters, digits, `_`)")
        if len(value) > 8000 or "\x00" in value:
            raise ValueError(f"the value of {key} is longer than 8000 characters or holds a NUL")
    return env


def _check_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    if headers is None:
        return None
    if len(headers) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} headers")
    for name, value in headers.items():
        if not re.fullmatch(HEADER_NAME, name):
            raise ValueError(f"{name[:100]!r} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"the {name} header is set by the client itself")
        if len(value) > 8000 or any(c in value for c in "\r\n\x00"):
            raise ValueError(f"the value of {name} is longer than 8000 characters or holds a line break")
    return headers


def _check_args(args: list[str] | None) -> list[str] | None:
    if args is not None and any(len(a) > 4000 or "\x00" in a for a in args):
        raise ValueError("each argument is at most 4000 characters, without NUL")
    return args


class _CheckedFields(BaseModel):
    """The checks a server's env, headers, URL and arguments pass, on a create and on an update alike."""

    @field_validator("env", check_fields=False)
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_env(value)

    @field_validator("headers", check_fields=False)
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_headers(value)

    @field_validator("url", check_fields=False)
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_http_url(value)

    @field_validator("args", check_fields=False)
    @classmethod
    def _args(cls, value: list[str] | None) -> list[str] | None:
        return _check_args(value)


class McpServerCreate(_CheckedFields):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=SERVER_NAME, description="Unique in the organization (case-insensitive); letters, "
                      "digits, `_` and `-`. An agent's model sees the server's tools as `mcp__<name>__<tool>`.")
    description: str = Field(default="", max_length=4000)
    transport: Transport = Field(description="`stdio` (a command the workers run in the sandbox) or "
                                 "`streamable_http` (a URL).")
    command: str | None = Field(default=None, min_length=1, max_length=500, description=(
        "stdio: the program: an absolute path, or a name on the sandbox's PATH (/usr/local/bin:/usr/bin:/bin)."))
    args: list[str] = Field(default_factory=list, max_length=MAX_ARGS, description="stdio: its arguments.")
    env: dict[str, str] | None = Field(default=None, description="stdio: environment variables (secrets welcome): "
                                       "stored encrypted, never returned (see `env_keys`).")
    network: bool = Field(default=False, description="stdio: give the server the network. Off: no network at all "
                          "(a network namespace with only a downed loopback).")
    url: str | None = Field(default=None, max_length=2000, description="streamable_http: the server's endpoint; "
                            "it must pass the outbound policy (no private addresses unless AGENTMEM_OUTBOUND_ALLOW).")
    headers: dict[str, str] | None = Field(default=None, description="streamable_http: headers sent with every "
                                           "request (e.g. Authorization): stored encrypted, never returned.")
    timeout_seconds: float | None = Field(default=None, gt=0, description="Timeout of a tool call (default "
                                          "`AGENTMEM_MCP_TIMEOUT_SECONDS`, at most `…_MAX_SECONDS`).")

    @model_validator(mode="after")
    def _fits_transport(self) -> McpServerCreate:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio server needs `command`")
            if self.url is not None or self.headers:
                raise ValueError("`url` and `headers` are for streamable_http servers")
        else:
            if not self.url:
                raise ValueError("a streamable_http server needs `url`")
            if self.command is not None or self.args or self.env or self.network:
                raise ValueError("`command`, `args`, `env` and `network` are for stdio servers")
        return self


class McpServerUpdate(_CheckedFields):
    """Fields to change; omitted ones stay. `env` and `headers` replace the stored ones whole (null: none);
    `timeout_seconds: null` returns to the default. The transport can't change."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, pattern=SERVER_NAME)
    description: str | None = Field(default=None, max_length=4000)
    command: str | None = Field(default=None, min_length=1, max_length=500)
    args: list[str] | None = Field(default=None, max_length=MAX_ARGS)
    env: dict[str, str] | None = None
    network: bool | None = None
    url: str | None = Field(default=None, max_length=2000)
    headers: dict[str, str] | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _not_null(self) -> McpServerUpdate:
        for name in ("name", "description", "command", "args", "network", "url"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` can't be null")
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one field")
        return self


class McpServerInfo(BaseModel):
    name: str
    version: str
    protocol_version: str | None = None
    instructions: str | None = None


class McpServerOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    transport: Transport
    command: str | None
    args: list[str]
    env_keys: list[str] = Field(description="Names of the stored environment variables (values are never returned).")
    network: bool
    url: str | None
    header_names: list[str] = Field(description="Names of the stored headers (values are never returned).")
    timeout_seconds: float | None
    version: int = Field(description="Bumped by every change; a running stdio server of an older version is "
                         "replaced at its next call.")
    server_info: McpServerInfo | None = Field(description="What the server said of itself at the last test.")
    tools_count: int | None = Field(description="Tools in the cache; null before the first test.")
    tools_refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> McpServerOut:
        return cls(id=row.id, name=row.name, description=row.description, transport=row.transport,
                   command=row.command, args=list(row.args or []), env_keys=list(row.env_keys or []),
                   network=row.network, url=row.url, header_names=list(row.header_names or []),
                   timeout_seconds=row.timeout_seconds, version=row.version,
                   server_info=McpServerInfo(**row.server_info) if row.server_info else None,
                   tools_count=len(row.tools) if row.tools is not None else None,
                   tools_refreshed_at=row.tools_refreshed_at, created_at=row.created_at, updated_at=row.updated_at)


class McpToolOut(BaseModel):
    name: str
    title: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] = Field(description="JSON Schema of the arguments; calls are checked against it.")
    annotations: dict[str, Any] | None = Field(default=None, description="The server's hints (`readOnlyHint`, "
                                               "`idempotentHint`…): an idempotent or read-only call is retried "
                                               "when the server dies under it.")


class McpToolsOut(BaseModel):
    server_id: uuid.UUID
    refreshed_at: datetime | None = Field(description="When the list was fetched; null: never (run `POST "
                                          "/api/v1/mcp/servers/{id}/test`).")
    tools: list[McpToolOut]


class McpToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Checked against the tool's cached "
                                      "`input_schema` when the server has been tested.")
