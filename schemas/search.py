"""Search API models: modes, fusion weights, structured filters, explained hits."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from schemas.inputs import Metadata
from schemas.memories import MemoryOut, ScopeId

MAX_QUERY_CHARS = 4_000
FILTER_FIELD = r"^(user_id|agent_id|run_id|created_at|metadata(\.[A-Za-z0-9_-]{1,64}){1,5})$"
MAX_FILTER_NODES = 50


class Condition(BaseModel):
    """One test on a field: `{"field": "metadata.topic", "op": "eq", "value": "travel"}`."""

    model_config = ConfigDict(extra="forbid")

    field: Annotated[str, StringConstraints(pattern=FILTER_FIELD)] = Field(
        description="`user_id`, `agent_id`, `run_id`, `created_at`, or `metadata.<key>[.<key>…]`.")
    op: Literal["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "contains"] = Field(
        description="`in`/`nin` take a list; `gt`…`lte` compare numbers, or strings (ISO dates) as text; "
                    "`contains`: a substring of a string, or an element of an array.")
    value: Any

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        if self.op in ("in", "nin") and (not isinstance(self.value, list) or not 1 <= len(self.value) <= 100):
            raise ValueError(f"`{self.op}` needs a list of 1 to 100 values")
        if self.op in ("gt", "gte", "lt", "lte") and (isinstance(self.value, bool)
                                                     or not isinstance(self.value, (int, float, str))):
            raise ValueError(f"`{self.op}` compares a number or a string")
        if self.field == "created_at" and self.op not in ("eq", "gt", "gte", "lt", "lte"):
            raise ValueError("created_at supports eq, gt, gte, lt and lte")
        if self.field == "created_at":
            try:
                datetime.fromisoformat(str(self.value))
            except ValueError:
                raise ValueError("created_at compares with an ISO 8601 date-time") from None
        return self


def _filter_kind(value: Any) -> str:
    """A condition has a `field`; anything else is read as a group (so errors name the right shape)."""
    keys = value.keys() if isinstance(value, dict) else vars(value) if isinstance(value, BaseModel) else ()
    return "condition" if "field" in keys else "group"


class FilterGroup(BaseModel):
    """`{"AND": [...]}` or `{"OR": [...]}` of conditions and nested groups."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    all_of: list[FilterNode] | None = Field(default=None, alias="AND", min_length=1, max_length=50)
    any_of: list[FilterNode] | None = Field(default=None, alias="OR", min_length=1, max_length=50)

    @model_validator(mode="after")
    def _one_kind(self) -> FilterGroup:
        if (self.all_of is None) == (self.any_of is None):
            raise ValueError("a filter group has exactly one of AND or OR")
        return self

    def size(self) -> int:
        return 1 + sum(c.size() if isinstance(c, FilterGroup) else 1 for c in (self.all_of or self.any_of or []))


FilterNode = Annotated[Annotated[Condition, Tag("condition")] | Annotated[FilterGroup, Tag("group")],
                      Discriminator(_filter_kind)]
FilterGroup.model_rebuild()


class Weights(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vector: float = Field(ge=0, le=10)
    text: float = Field(ge=0, le=10)
    rrf_k: float | None = Field(default=None, ge=1, le=1000, description="Fusion constant; default the service's.")
    adapt: float | None = Field(default=None, ge=0, le=4, description="Convex fusion: how strongly each side's "
                                "weight follows how decisive its scores are for this query (0: fixed weights); "
                                "default the service's.")


class Feedback(BaseModel):
    """Pseudo-relevance feedback: how the query's embedding is refined by the first pass's best hits."""

    model_config = ConfigDict(extra="forbid")
    docs: int | None = Field(default=None, ge=1, le=50, description="How many of the first pass's best hits "
                                                                     "refine the query; default: the service's.")
    weight: float | None = Field(default=None, ge=0, le=4, description="Weight of their mean embedding, added to "
                                                                       "the query's; default: the service's.")
    contrast: float | None = Field(default=None, ge=0, le=4, description="Rocchio's negative term: this times "
                                   "the mean embedding of all the first pass's vector candidates is subtracted "
                                   "with the best hits' mean, so what they share with everything found (a "
                                   "conversation's own topic) pulls nothing; default: the service's.")


class TextFeedback(BaseModel):
    """Text-side pseudo-relevance feedback (RM3): words of the first pass's best hits added to the query's."""

    model_config = ConfigDict(extra="forbid")
    docs: int | None = Field(default=None, ge=1, le=50, description="First-pass hits read; default the service's.")
    terms: int | None = Field(default=None, ge=1, le=50, description="Words added; default the service's.")
    weight: float | None = Field(default=None, ge=0, le=4, description="Weight of the added words against the "
                                                                       "query's own (1); default the service's.")


# An object is read as settings, anything else as on/off: a bad object gets one error, not two.
FeedbackChoice = Annotated[Annotated[bool, Tag("on_off")] | Annotated[Feedback, Tag("object")],
                           Discriminator(lambda v: "object" if isinstance(v, (dict, Feedback)) else "on_off")]
TextFeedbackChoice = Annotated[Annotated[bool, Tag("on_off")] | Annotated[TextFeedback, Tag("object")],
                               Discriminator(lambda v: "object" if isinstance(v, (dict, TextFeedback)) else "on_off")]


class MemorySearchIn(BaseModel):
    """Find memories by meaning and by words, fused; narrowed by scope, metadata and time."""

    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
    mode: Literal["hybrid", "vector", "text"] = Field(
        default="hybrid", description="`hybrid` fuses `vector` (embedding cosine, HNSW) and `text` (full-text, "
                                      "BM25) candidates (see `fusion`).")
    fusion: Literal["convex", "rrf"] | None = Field(
        default=None, description="How `hybrid` fuses the two sides: `convex` mixes their scores, each standardized "
                                  "within its candidates, weighted, mapped into (0, 1); `rrf` sums `weight / (rrf_k + "
                                  "rank)`. Default: the service's (`convex`).")
    weights: Weights | None = Field(default=None, description="Fusion weights; default: the service's tuned ones.")
    feedback: FeedbackChoice | None = Field(
        default=None, description="Refine the query by its first results (pseudo-relevance feedback): the mean "
                                  "embedding of the best first-pass hits (fused ones, in `hybrid`) is added to the "
                                  "query's, and the vector side searches again. `true`, `false`, or `{docs, weight}`. "
                                  "Default: the service's setting in `hybrid` (off unless "
                                  "`AGENTMEM_SEARCH_FEEDBACK` is on), off in `vector` (plain nearest neighbours); "
                                  "`text` mode has no embedding to refine.")
    text_feedback: TextFeedbackChoice | None = Field(
        default=None, description="Expand the query's words by its first results (RM3): the words most typical of "
                                  "the best first-pass hits are added, weighted, and the text side searches again. "
                                  "`true`, `false`, or `{docs, terms, weight}`. Default: the service's.")
    passages: bool | None = Field(default=None, description="Score a long memory by its best passage (true), or "
                                                            "by its first only. Default: the service's (true).")
    recency: bool | None = Field(default=None, description="When near-duplicate hits disagree, rank the newer first "
                                                           "(by `metadata.date`, else `created_at`). Default: the "
                                                           "service's.")
    time: Literal["boost", "filter", "off"] | None = Field(
        default=None, description="Time in the query (`last week`, `in March`, `before the trip`): `boost` ranks "
                                  "memories of that time higher, `filter` keeps only them, `off` ignores it. Memory "
                                  "time: `metadata.date` (ISO 8601) if given, else `created_at`. Default: the "
                                  "service's.")
    as_of: datetime | None = Field(default=None, description="When the query is asked: what `last week` is relative "
                                                             "to. Default: now.")
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None
    metadata: Metadata | None = Field(default=None, description="Exact-match filter: every key must equal.")
    filters: FilterNode | None = Field(default=None, description="Structured filter (AND/OR).")
    created_after: datetime | None = None
    created_before: datetime | None = None
    top_k: int = Field(default=10, ge=1, le=100)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="Drop hits whose `score` (the mode's own score) is lower. In "
                                                "hybrid mode that score is relative to this query's candidates "
                                                "(the best hit scores near 1 even when nothing is relevant): "
                                                "for an absolute cut-off use `min_similarity`.")
    min_similarity: float | None = Field(
        default=None, ge=-1.0, le=1.0,
        description="Drop hits whose cosine similarity to the query (`explanation.similarity`) is lower, and "
                    "hits the vector side did not find. Unlike a hybrid `score`, a cosine means the same across "
                    "queries and scopes: with the default model, a question and the memory that answers it mostly "
                    "score 0.3-0.6, unrelated memories below 0.25. Not with `mode: text`.")
    cursor: Annotated[str | None, Field(max_length=500, description="From `next_cursor`: the next hits.")] = None

    @model_validator(mode="after")
    def _bounded_filters(self) -> MemorySearchIn:
        if isinstance(self.filters, FilterGroup) and self.filters.size() > MAX_FILTER_NODES:
            raise ValueError(f"filters may hold at most {MAX_FILTER_NODES} conditions and groups")
        if self.mode == "text" and self.feedback not in (None, False):
            raise ValueError("feedback refines the query's embedding; `text` mode has none (use hybrid or vector)")
        if self.mode == "text" and self.min_similarity is not None:
            raise ValueError("min_similarity compares embeddings; `text` mode has none (use hybrid or vector)")
        if self.mode == "vector" and self.text_feedback not in (None, False):
            raise ValueError("text_feedback expands the query's words; `vector` mode has none (use hybrid or text)")
        return self


class HitExplanation(BaseModel):
    vector_score: float | None = Field(description="Cosine similarity, -1 to 1, to the query's embedding (to the "
                                                   "refined one when the response says `refined`; null: not a "
                                                   "vector candidate).")
    vector_rank: int | None = Field(description="1-based rank among vector candidates.")
    similarity: float | None = Field(default=None, description="Cosine similarity, -1 to 1, to the query's "
                                     "embedding as asked, never the refined one: comparable across queries, "
                                     "what `min_similarity` reads (null: not a vector candidate, or not read "
                                     "because feedback found it and no `min_similarity` asked for it).")
    text_score: float | None = Field(description="Full-text (BM25-style) score (null: no query word matched).")
    text_rank: int | None
    fused_score: float | None = Field(description="The fused score (hybrid mode): convex, in (0, 1); or the "
                                                  "reciprocal-rank sum (`fusion: rrf`).")


class SearchHit(BaseModel):
    memory: MemoryOut
    score: float = Field(description="The mode's score: cosine (vector), text score (text) or fused (hybrid).")
    explanation: HitExplanation


class SearchOut(BaseModel):
    hits: list[SearchHit]
    mode: str
    refined: bool = Field(default=False, description="Whether feedback refined the query: `vector_score` is then "
                                                     "the cosine to the refined query's embedding.")
    next_cursor: str | None = None
