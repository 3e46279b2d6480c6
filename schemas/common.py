"""Shapes shared by every resource: error bodies and cursor pages."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. `not_found`, `invalid_input`.")
    message: str = Field(description="What went wrong, for humans.")
    details: dict[str, Any] = Field(default_factory=dict, description=(
        "Structured context, always an object (`{}` when there is none): the limit, id or permission involved, "
        "e.g. `{\"max_bytes\": 1000}`; for invalid input `{\"errors\": [{\"loc\", \"msg\", \"type\"}]}`, one entry "
        "per offending field."))
    request_id: str | None = Field(default=None, description="Quote this when reporting a problem.")


class ErrorOut(BaseModel):
    error: ErrorBody


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page; null at the end.")
