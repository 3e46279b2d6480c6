"""The one settings object: every knob of AgentMem, typed, read from AGENTMEM_* variables or .env."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration; only this module reads the environment."""

    model_config = SettingsConfigDict(env_prefix="AGENTMEM_", env_file=".env", extra="ignore")

    # Where state lives when AgentMem runs its own servers (the embedded default).
    data_dir: Path = Field(default=Path("./.agentmem"), description="Data directory for embedded servers and logs.")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset starts embedded PostgreSQL.")
    redis_url: str | None = Field(default=None, description="Redis URL; unset starts an embedded Valkey server.")

    # API
    host: str = "127.0.0.1"
    port: int = 8000
    server_timing: bool = Field(default=True, description="Send a `Server-Timing` header (auth, embed, text, "
                                "vector, … in ms) with every response; turn off to hide internal timings.")
    bootstrap_org_name: str = Field(default="development", description="Organization `agentmem up` creates on the "
                                    "embedded default, with an owner API key printed once.")
    max_body_bytes: int = Field(default=33_554_432, description="Largest request body; a larger one is refused with "
                                "413 `payload_too_large` before it is read.")
    max_header_bytes: int = Field(default=16_384, description="Most bytes of request headers (names and values); "
                                  "more is 431 `request_headers_too_large`.")
    max_headers: int = Field(default=100, description="Most request headers; more is 431.")

    # Authentication
    jwt_secret: SecretStr | None = Field(default=None, description="Key that signs access tokens. Required with "
                                         "real deployments; `agentmem up` generates one in the data directory.")
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "agentmem"
    jwt_audience: str = "agentmem-api"
    jwt_leeway_seconds: int = Field(default=30, description="Clock skew tolerated on token times.")
    access_token_minutes: int = 1440
    refresh_token_days: int = 30
    stream_token_seconds: int = Field(default=300, description="Lifetime of query-string tokens for SSE/WebSocket.")
    password_reset_minutes: int = 60
    api_key_cache_seconds: int = Field(default=60, ge=0, description="Longest an API process keeps a key it "
                                         "looked up; changes reach it at once through PostgreSQL NOTIFY, and "
                                         "nothing is kept while it is not listening. 0 looks every key up.")
    api_key: SecretStr | None = Field(default=None, description="API key the `agentmem` CLI sends to the API.")
    api_url: str | None = Field(default=None, description="The API the `agentmem` CLI talks to (`ingest`, "
                                "`jobs watch`, `mcp`); unset: http://{host}:{port}.")

    # Rate limits: requests per minute per API key or user, by role (an organization may override).
    rate_limit_owner: int = 3000
    rate_limit_admin: int = 3000
    rate_limit_member: int = 1200
    rate_limit_viewer: int = 600
    rate_limit_login: int = Field(default=30, description="Sign-in attempts per minute per client address.")

    # Quotas per organization (an organization's `limits` may override each).
    quota_max_memories: int = 1_000_000
    # Sized for an organization of many agents each adding one memory at a time: 8 clients in flight
    # submit well over 100 jobs a second, and the queue may briefly hold thousands.
    quota_jobs_per_minute: int = 60_000
    quota_concurrent_jobs: int = 10_000
    quota_batch_items: int = 10_000

    # Embeddings
    embedding_provider: Literal["local", "openai"] = "local"
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_dim: int = 384
    embedding_model_version: str | None = Field(default=None, description="Bump it when the model behind the same "
                                                "name changed (new weights, same endpoint model name): each vector "
                                                "records `model@version`, and `reembed` moves the others.")
    embedding_previous_model: str | None = Field(default=None, description="During a switch of embedding models: "
                                                 "the model the stored vectors were made with (`model` or "
                                                 "`model@version`, same provider; its dimension may differ). Search "
                                                 "embeds its query with both until `reembed` has moved every vector.")
    embedding_base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint for embeddings.")
    embedding_api_key: str | None = None
    embedding_batch_size: int = 128
    embedding_batch_wait_ms: float = 10.0
    embedding_threads: int = Field(default=0, description="Torch threads per process; 0 lets torch decide.")
    embedding_query_threads: int = Field(default=1, description="Torch threads of the API's query embedding "
                                         "(one short text: more threads only take cores from the database); 0: "
                                         "as AGENTMEM_EMBEDDING_THREADS.")
    embedding_query_precision: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        default="auto", description="Precision of the API's local query model. On ONNX Runtime: `auto` is int8 "
                                    "on CPUs with 8-bit dot products (VNNI, AMX, Arm dotprod), else float32. On "
                                    "torch: `auto` is bfloat16 on CPUs that compute it natively (AVX512-BF16, "
                                    "AMX), else float32; int8 is float32. Stored embeddings are always float32.")
    embedding_query_runtime: Literal["onnx", "torch"] = Field(
        default="onnx", description="What runs the API's local query model: `onnx` exports it once to "
                                    "`<data_dir>/models/` and runs it on ONNX Runtime (about a third of torch's "
                                    "time for one sentence, the same vectors), falling back to torch, logged, for "
                                    "a model it can't take; `torch` always uses torch.")
    embedding_query_wait_ms: float = Field(default=0.0, ge=0, le=50, description="How long the API's first "
                                           "search query waits for concurrent searches' queries to share its "
                                           "model call (queries arriving while the model runs share the next "
                                           "call anyway); 0: no wait.")
    embedding_take_turns: bool = Field(default=True, description="Worker processes of one deployment run the local "
                                       "model one at a time (avoids CPU oversubscription).")

    # Passages (pipelines/memories/passages.py): long memories get several vectors.
    passage_embedding: bool = Field(default=False, description="Embed long memories as passages too, at ingest "
                                    "and on edits (about twice the embedding work on long-text data). Off, a "
                                    "search with `passages: true` finds passages only of memories stored while it "
                                    "was on.")
    passage_chars: int = Field(default=900, description="A memory longer than this many characters is embedded "
                               "as passages of at most this size (the bundled model reads about 256 word pieces).")
    passage_overlap_chars: int = Field(default=150, description="Sentences repeated from the end of one passage "
                                       "at the start of the next, up to this many characters.")
    passage_max: int = Field(default=64, description="Passages embedded per memory at most (the rest of a huge "
                             "memory is found by its words only).")

    # Search
    search_candidates: int = Field(default=50, description="Candidates each side of a hybrid search ranks.")
    search_text_match_budget: int = Field(default=2000, description="Rows a text search may score: its rarest "
                                          "words are matched while their estimated matches fit, and at most "
                                          "this many rows are scored.")
    search_exact_max: int = Field(default=2000, description="Scopes up to this many memories are searched by "
                                  "exact vector distance instead of the HNSW index.")
    search_scope_count_max: int = Field(default=10000, description="Rows counted to size a search's scope; a "
                                        "larger one is sized by its organization's count.")
    search_text_config: str = Field(default="english", description="Text search configuration of queries "
                                    "(must match the `fts` column's, set by the migrations).")
    search_bm25_k1: float = 1.2
    search_bm25_b: float = 0.75
    search_bm25_length: Literal["words", "bytes"] = Field(default="bytes", description="BM25's document length: "
                                                          "distinct words, or the text's size in bytes.")
    search_rrf_k: float = Field(default=60.0, description="Reciprocal-rank fusion constant.")
    search_fusion: Literal["convex", "rrf"] = Field(default="convex", description="How hybrid search fuses: "
                                                    "standardized scores (convex) or reciprocal ranks (rrf).")
    # Chosen with `python bench/retrieval.py` on LongMemEval and BEAM, with leave-one-dataset-out rows (README).
    search_vector_weight: float = 1.0
    search_text_weight: float = 0.25
    search_feedback: bool = Field(default=True, description="Hybrid search refines the query's embedding by its "
                                  "first pass's best hits (pseudo-relevance feedback) unless a request says not to; "
                                  "off: only requests that ask for it (`\"feedback\": true`).")
    search_feedback_docs: int = Field(default=10, description="First-pass hits whose mean embedding refines the query.")
    search_feedback_weight: float = Field(default=0.5, description="Weight of that mean embedding, added to the "
                                          "query's.")
    search_feedback_contrast: float = Field(default=1.0, description="Weight of the mean embedding of all the "
                                            "first pass's vector candidates, subtracted (with the feedback weight) "
                                            "from the refinement: Rocchio's non-relevant term.")
    search_fusion_adapt: float = Field(default=1.0, description="Convex fusion: each side's weight is scaled by "
                                       "its decisiveness for the query (its best candidate's standard score) to "
                                       "this power; 0: fixed weights.")
    search_text_feedback: bool = Field(default=False, description="Text-side pseudo-relevance feedback (RM3) "
                                       "in hybrid and text search unless a request says otherwise.")
    search_text_feedback_docs: int = Field(default=5, description="First-pass hits RM3 reads.")
    search_text_feedback_terms: int = Field(default=10, description="Words RM3 adds to the query.")
    search_text_feedback_weight: float = Field(default=0.3, description="Weight of each added word (scaled by "
                                               "its share of the feedback model) against the query's own (1).")
    search_passages: bool = Field(default=False, description="Score a long memory by its best passage's vector.")
    search_passage_margin: float = Field(default=0.0, description="Subtracted from a later passage's cosine before "
                                         "it can stand for its memory (many passages, many chances of a close "
                                         "one by accident).")
    search_recency: bool = Field(default=False, description="Among a hybrid search's best hits, near-duplicates "
                                 "rank newest first.")
    search_recency_similarity: float = Field(default=0.85, description="Cosine above which two hits are near-"
                                             "duplicates for recency.")
    search_recency_window: int = Field(default=20, description="Best hits of a search reordered by recency.")
    search_time: Literal["boost", "filter", "off"] = Field(default="boost", description="Time in the query "
                                                           "(`last week`, `in March`): boost memories of that "
                                                           "time, keep only them, or ignore it.")
    search_time_boost: float = Field(default=1.0, description="Standard units added to the fused score of a hit "
                                     "within the query's time.")
    search_time_key: str = Field(default="date", description="Metadata key holding a memory's time (ISO 8601); "
                                 "without it, `created_at`.")

    # Summaries
    summary_chunk_chars: int = Field(default=6000, description="Characters of conversation per map step of a "
                                     "summary job; longer conversations are map-reduced.")
    summary_target_chars: int = Field(default=1000, description="Default length budget of a summary.")
    summary_max_sentences: int = Field(default=8, description="Default most sentences of an extractive summary.")

    # LLM: the service-wide provider, used by organizations without one of their own (all unset: none).
    llm_provider: Literal["openai", "azure", "openai_compatible"] | None = Field(
        default=None, description="Kind of the service-wide LLM provider; unset with a base URL means "
        "`openai_compatible`, unset with only a key means `openai`.")
    llm_base_url: str | None = Field(default=None, description="Endpoint of the service-wide LLM provider.")
    llm_api_key: SecretStr | None = None
    llm_model: str | None = Field(default=None, description="Chat model of the service-wide LLM provider.")
    llm_api_version: str | None = Field(default=None, description="Azure OpenAI API version.")
    llm_max_concurrency: int = Field(default=4, description="Calls in flight per provider per process.")
    llm_timeout_seconds: float = 60.0
    llm_max_retries: int = 4
    llm_requests_per_minute: int | None = Field(default=None, ge=1, description="Most calls per minute to the "
                                                "service-wide provider, across all worker processes.")
    llm_tokens_per_minute: int | None = Field(default=None, ge=1, description="Most tokens per minute to the "
                                              "service-wide provider, across all worker processes.")
    llm_context_window: int | None = Field(default=None, ge=512, description="Context window of the service-wide "
                                           "provider's model, in tokens.")
    llm_prompt_price_per_million: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="US "
                                                       "dollars per million prompt tokens at the service-wide "
                                                       "provider (jobs then report `usage.cost_usd`).")
    llm_completion_price_per_million: float | None = Field(default=None, ge=0, allow_inf_nan=False,
                                                           description="US dollars per million completion tokens "
                                                           "at the service-wide provider.")
    encryption_key: SecretStr | None = Field(default=None, description="Key that encrypts stored provider API "
                                             "keys; unset derives one from the JWT secret.")

    # Outbound requests to URLs users give (LLM configurations): core/outbound.py, README "Outbound requests".
    outbound_allow: str | None = Field(default=None, description="Exceptions to the outbound policy, which "
                                       "refuses internal addresses: networks, addresses or host names, each "
                                       "optionally with a port, separated by commas (`10.0.0.0/8, "
                                       "127.0.0.1:11434, [::1]:8080, llm.lan:8000`).")

    @field_validator("outbound_allow")
    @classmethod
    def _outbound_allow_parses(cls, value: str | None) -> str | None:
        from core.outbound import parse_allow  # a process with a bad entry refuses to start, naming it

        parse_allow(value)
        return value

    # Webhooks (pipelines/webhooks, README "Webhooks"): deliveries go through the outbound policy too.
    webhook_max_attempts: int = Field(default=12, ge=1, le=50, description="Attempts at delivering one event "
                                      "before it fails for good (a non-2xx answer, a redirect, a timeout or a "
                                      "connection error is a failed attempt).")
    webhook_min_backoff_ms: int = Field(default=10_000, ge=0, description="Wait before the second attempt; each "
                                        "later wait doubles (with jitter), up to `webhook_max_backoff_ms`.")
    webhook_max_backoff_ms: int = Field(default=6 * 3_600_000, ge=0, description="Longest wait between two "
                                        "attempts (the default schedule spans about six hours).")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False, description="Whole-"
                                           "request deadline of one attempt: connect, send, and read the answer.")
    webhook_response_max_bytes: int = Field(default=4096, ge=0, le=1_048_576, description="Most of a receiver's "
                                            "answer that is read and kept in the delivery log; the rest is not "
                                            "read.")
    webhook_disable_after_failures: int = Field(default=10, ge=1, description="Deliveries that fail for good in a "
                                                "row (after all their attempts) before the webhook is disabled.")
    webhook_log_retention_days: float = Field(default=30.0, gt=0, allow_inf_nan=False, description="How long the "
                                              "delivery log keeps an attempt; the scheduler deletes older ones.")

    # Fact extraction (`infer`) and duplicate detection
    dedup_similarity: float = Field(default=0.95, description="Cosine similarity at or above which a text that "
                                    "says nothing a stored memory doesn't counts as its near duplicate "
                                    "(pipelines/memories/dedup.py).")
    extraction_candidates: int = Field(default=5, description="Similar memories per extracted fact shown to the "
                                       "LLM when it decides ADD / UPDATE / DELETE / NOOP.")
    extraction_max_facts: int = Field(default=50, description="Most facts one extraction job keeps from the LLM.")

    # Maintenance tasks: purge, reembed, consolidate (pipelines/maintenance/)
    purge_after_days: int = Field(default=30, ge=0, description="Days a soft-deleted memory, block, agent or "
                                  "conversation is kept before `purge` removes it for good; an organization's "
                                  "`purge_after_days` limit overrides it.")
    maintenance_batch_size: int = Field(default=100, ge=1, le=5000, description="Rows one maintenance batch "
                                        "reads and commits (`reembed`, `purge`, `consolidate`).")

    # Core-memory blocks and agents' prompts (pipelines/blocks/store.py, rewriting.py, prompts.py)
    block_default_limit: int = Field(default=5000, description="Character limit of a block created without one.")
    block_max_limit: int = Field(default=100_000, description="Largest character limit a block may have.")
    block_rewrite_threshold: float = Field(default=0.9, description="A write taking a block past this share of its "
                                           "limit queues a `block_rewrite` job.")
    block_rewrite_target: float = Field(default=0.6, description="Share of the limit a rewrite aims for.")
    block_rewrite_attempts: int = Field(default=5, description="Times a rewrite re-reads a block that changed "
                                        "under it before giving up (`block_busy`, retried).")
    prompt_max_chars: int = Field(default=200_000, description="Longest compiled prompt; a template writing more "
                                  "is a `template_error`.")
    prompt_render_seconds: float = Field(default=2.0, description="Longest a prompt template may render.")

    # Agents: turns (pipelines/conversations)
    agent_context_window: int = Field(default=8192, description="Context window (tokens) of a model whose agent "
                                      "and LLM config say none.")
    agent_answer_tokens: int = Field(default=1024, description="Tokens kept for the answer when an agent sets no "
                                     "`max_tokens`.")
    agent_history_max_messages: int = Field(default=400, description="Most recent messages a turn considers "
                                            "before fitting them to the budget.")
    agent_summary_share: float = Field(default=0.25, description="Share of the budget the summary of older "
                                       "messages (and any not yet summarized) may take.")
    agent_token_flush_ms: float = Field(default=15.0, description="Token deltas written within this many "
                                        "milliseconds travel as one `token` event.")
    agent_tool_result_chars: int = Field(default=16_000, description="Longest tool result a turn passes back to "
                                         "the model (the rest is cut, and says so).")

    # Tools: sandboxed execution (pipelines/tools/sandbox.py) and the built-in file tools' workspaces
    tool_timeout_seconds: float = Field(default=30.0, description="Wall-clock timeout of a tool without its own.")
    tool_timeout_max_seconds: float = Field(default=300.0, description="Longest timeout a tool may ask for.")
    tool_cpu_seconds: int = Field(default=30, description="Default CPU-time limit of a tool (RLIMIT_CPU).")
    tool_cpu_max_seconds: int = 300
    tool_memory_mb: int = Field(default=512, description="Default address-space limit of a tool (RLIMIT_AS).")
    tool_memory_max_mb: int = 4096
    tool_processes: int = Field(default=64, description="Default limit of processes of one execution.")
    tool_processes_max: int = 1024
    tool_file_size_mb: int = Field(default=16, description="Default largest file a tool may write (RLIMIT_FSIZE).")
    tool_file_size_max_mb: int = 1024
    tool_open_files: int = Field(default=256, description="Default limit of open files (RLIMIT_NOFILE).")
    tool_open_files_max: int = 4096
    tool_output_cap_bytes: int = Field(default=65536, description="Bytes of stdout and of stderr kept (and "
                                       "streamed) per execution; the rest is discarded and marked truncated.")
    tool_output_limit_bytes: int = Field(default=8388608, description="A tool writing more than this to stdout or "
                                         "stderr is killed (reason `output_limit`).")
    tool_sandbox_uid_base: int = Field(default=1900000000, description="As root, each execution runs as its own "
                                       "uid (and gid) from this range, unused by any account.")
    tool_sandbox_uid_count: int = Field(default=1000, description="Size of that range: executions at once per "
                                        "machine.")
    tool_require_network_isolation: bool = Field(default=True, description="Refuse to run tools (`sandbox_"
                                                  "unavailable`) where no network namespace can be made.")
    tool_workspace_dir: Path | None = Field(default=None, description="Root of the per-organization workspaces "
                                            "of the built-in file tools; unset: `<data_dir>/workspaces`.")
    tool_workspace_file_max_bytes: int = Field(default=1048576, description="Largest file `file_save` writes "
                                               "and `file_read` returns.")
    # Workspace files over HTTP (pipelines/tools/files.py) and the quota every write to a workspace obeys
    workspace_quota_bytes: int = Field(default=1_073_741_824, ge=0, description="Most bytes of files one "
                                       "organization's workspace may hold; an upload or `file_save` past it is "
                                       "refused (`workspace_quota_exceeded`).")
    workspace_upload_max_bytes: int = Field(default=16_777_216, ge=0, description="Largest file uploaded at "
                                            "`PUT /api/v1/files/{path}` (`file_too_large`); a body over "
                                            "`AGENTMEM_MAX_BODY_BYTES` is refused before that.")
    # The `web_search` built-in tool (pipelines/tools/web_search.py): off without an endpoint
    web_search_url: str | None = Field(default=None, description="Base URL of a SearxNG instance with its JSON "
                                       "API on (`GET {url}/search?q=…&format=json`); unset: no `web_search` "
                                       "tool. Checked by the outbound policy at each call.")
    web_search_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one request to the "
                                              "search endpoint.")
    web_search_attempts: int = Field(default=3, ge=1, le=10, description="Tries of a search whose endpoint "
                                     "times out, can't be reached or answers 429/5xx, with backoff.")
    web_search_max_results: int = Field(default=10, ge=1, le=50, description="Most results a search returns, "
                                        "whatever the call asks.")

    # MCP servers (AgentMem as an MCP client): pipelines/mcp/, README "MCP servers (AgentMem as a client)"
    mcp_timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of an MCP tool call when the "
                                       "server's configuration gives none (`mcp_timeout`).")
    mcp_timeout_max_seconds: float = Field(default=300.0, gt=0, description="Longest call timeout a server's "
                                           "configuration may ask for.")
    mcp_connect_timeout_seconds: float = Field(default=30.0, gt=0, description="Time an MCP server has to start "
                                               "and answer `initialize` (`mcp_connect_failed` past it).")
    mcp_http_retries: int = Field(default=3, ge=0, le=10, description="Retries of a streamable-HTTP server's "
                                  "transient failures (connection errors, 429, 5xx), with backoff.")
    mcp_stdio_pool_size: int = Field(default=8, ge=1, description="stdio MCP servers kept running per worker "
                                     "process (the least recently used one stops beyond it).")
    mcp_stdio_idle_seconds: float = Field(default=300.0, gt=0, description="A pooled stdio MCP server unused for "
                                          "this long is stopped.")
    mcp_stdio_memory_mb: int = Field(default=1024, ge=64, description="Address-space limit (RLIMIT_AS) of a "
                                     "stdio MCP server process.")
    mcp_stdio_cpu_seconds: int = Field(default=600, ge=1, description="CPU time a stdio MCP server process may "
                                       "use in its life (RLIMIT_CPU); past it, it dies and is restarted.")
    mcp_stdio_paths: str | None = Field(default=None, description="Comma-separated host folders shown read-only "
                                        "to stdio MCP servers in the sandbox (where their code is installed, "
                                        "e.g. /opt/mcp); the system folders are always shown.")
    mcp_tools_refresh_seconds: float = Field(default=21_600.0, ge=0, description="The scheduler re-lists the tools "
                                             "of an MCP server whose cached list is older than this (an `mcp_test` "
                                             "job); 0 turns the refresh off.")

    # Documents (sources): uploads whose text becomes memories
    source_max_bytes: int = Field(default=26_214_400, ge=1, description="Largest document `POST /api/v1/sources` "
                                  "accepts; a larger one is refused with 413 `payload_too_large` while it is read.")
    source_chunk_chars: int = Field(default=1000, ge=100, le=8000, description="Default size of a document's "
                                    "chunks in characters (an upload's `chunk_size` overrides it).")
    source_chunk_overlap_chars: int = Field(default=150, ge=0, le=4000, description="Default characters of "
                                            "sentences a chunk repeats from the one before it in its section "
                                            "(an upload's `chunk_overlap` overrides it).")
    source_max_chunks: int = Field(default=20_000, ge=1, description="Most chunks one document may make; a "
                                   "longer one fails with `source_too_long` and stores nothing.")

    # Export and import (pipelines/exports/): archives live in the database, in chunks
    export_retention_hours: float = Field(default=168, gt=0, description="How long an export's archive (and an "
                                          "uploaded import's) is kept; after that a download answers 410 "
                                          "`export_expired` and the bytes are dropped.")
    import_max_bytes: int = Field(default=1_073_741_824, ge=1, description="Largest archive `POST /api/v1/imports` "
                                  "accepts; a larger one is refused with 413 `payload_too_large` while it is read.")
    export_batch_rows: int = Field(default=500, ge=1, le=10_000, description="Rows an export or import job reads "
                                   "or writes per batch (a progress event and, for imports, a commit each).")
    # Jobs
    ingest_chunk_size: int = 256
    ingest_coalesce_items: int = Field(default=16, ge=0, description="Ingest jobs of at most this many items that "
                                       "reach a worker process together run as one batch (one claim, model call "
                                       "and commit); 0 runs every job alone.")
    ingest_coalesce_wait_ms: float = Field(default=5.0, ge=0, description="How long an idle worker process collects "
                                           "small ingest jobs before it runs them together (while a batch runs, the "
                                           "next one collects until it ends).")
    job_lease_seconds: float = 60.0
    job_time_limit_seconds: float = 1800.0
    job_max_retries: int = 5
    job_min_backoff_ms: int = 1_000
    job_max_backoff_ms: int = 60_000
    stale_queued_seconds: float = 30.0
    progress_min_interval_ms: float = 250.0
    bench_jobs: bool = Field(default=False, description="Benchmarks only: accept no-op jobs at an undocumented "
                             "route and have workers consume the `bench` queue (bench/noop_jobs.py).")

    # Workers and broker
    worker_threads: int = Field(default=16, description="Jobs each worker process runs at once. Agent turns and "
                                "tool runs mostly wait on a model or a sandbox, so a slot is cheap; 8 per process "
                                "left 20 concurrent conversations queued (pickup p99 1–10 s, bench/agent.py).")
    worker_poll_ms: int = Field(default=25, description="A worker whose prefetched messages are all still running "
                                "waits this long before it looks for room again.")
    worker_thread_wait_ms: int = Field(default=1000, ge=1, le=10_000, description="How long each of Dramatiq's "
                                       "worker threads waits on the process's work queue before it checks for a "
                                       "shutdown (a message wakes it at once): short waits cost CPU at rest.")
    worker_idle_wait_ms: int = Field(default=1000, ge=1, le=4000, description="Longest an idle worker blocks on its "
                                     "queue's wake-up list before it looks again (an enqueue wakes it at once).")
    worker_shutdown_timeout_ms: int = 10_000
    broker_heartbeat_timeout_ms: int = 30_000
    broker_maintenance_chance: int = 50_000
    worker_seen_seconds: float = 30.0

    # Scheduler and scheduled maintenance
    scheduler_interval_seconds: float = 5.0
    schedule_defaults: bool = Field(default=True, description="The scheduler installs the default schedules "
                                    "(README, Schedules) for every organization and platform-wide.")
    schedule_grace_seconds: float = Field(default=600.0, ge=0, description="A schedule seen more than this late "
                                          "(or a whole period late) follows its `catch_up`: `skip` or `run_once`.")
    retention_job_payload_days: float = Field(default=7.0, gt=0, description="`retention` drops the payloads of "
                                              "jobs finished this long ago (their results and rows stay).")
    retention_job_days: float = Field(default=30.0, gt=0, description="`retention` deletes finished jobs (and "
                                      "their event streams) this old.")
    retention_audit_days: float = Field(default=365.0, gt=0, description="`retention` deletes audit rows this old.")
    retention_temp_file_hours: float = Field(default=24.0, gt=0, description="`retention` deletes workspace temporary "
                                             "files (`.save-*`, left by an interrupted save) this old.")

    # Event streams
    stream_maxlen_job: int = 10_000  # an agent turn streams many token events
    stream_maxlen_org: int = 10_000
    stream_ttl_seconds: int = 86_400
    sse_heartbeat_seconds: float = 15.0
    event_hub: bool = Field(default=True, description="Followers of one stream in an API process share one Redis "
                            "reader (core/event_hub.py); off: each follower blocks on XREAD itself.")
    stream_follower_buffer: int = Field(default=1000, ge=1, description="Events the hub holds for a follower "
                                        "that is not keeping up; when it is full the reader adds no more, and "
                                        "the follower reads its way back from Redis when its client reads again.")
    ws_ping_seconds: float = 20.0

    # Timeouts that turn an outage into a 503 rather than a hang
    db_connect_timeout_seconds: float = 5.0
    db_command_timeout_seconds: float = 30.0
    redis_timeout_seconds: float = 5.0

    # Load: a burst is answered in part and refused in part, quickly, rather than all queued (README "Under load").
    # Each process (the API, every worker, the scheduler) has its own pool of up to size + overflow
    # connections: with `agentmem up`'s API, 2 workers and scheduler that is 4 × 30 (+1, the API's
    # readiness probe) of the embedded PostgreSQL's 300.
    db_pool_size: int = Field(default=10, description="Database connections each process keeps open.")
    db_max_overflow: int = Field(default=20, description="Connections a process may open beyond the pool "
                                 "under load (closed again when returned).")
    db_pool_timeout_seconds: float = Field(default=2.0, description="Longest a request waits for a free "
                                           "connection before it is refused with 503 `overloaded`.")
    search_concurrency: int = Field(default=4, description="Searches (query embedding and SQL) one API "
                                    "process runs at once.")
    search_queue: int = Field(default=32, description="Searches that may wait for one of those slots; "
                              "more are refused at once with 503 `overloaded`.")
    search_queue_seconds: float = Field(default=1.0, description="Longest a search waits for a slot before "
                                        "it is refused with 503 `overloaded`.")
    overload_retry_after_seconds: int = Field(default=1, description="`Retry-After` of a 503 `overloaded`.")

    # AgentMem as an MCP server (/mcp and `agentmem mcp`; api/mcp.py, api/mcp_tools.py)
    mcp_max_wait_seconds: float = Field(default=60.0, ge=0, description="Longest an MCP tool call waits for its job "
                                        "(`wait_seconds` of add_memories, get_job, send_message); then it "
                                        "answers with the job as it stands.")
    mcp_allowed_hosts: str | None = Field(default=None, description="Host header values /mcp accepts, separated "
                                          "by commas (`host:*` for any port): the SDK's DNS-rebinding check. "
                                          "Unset: any host (every request needs an API key in a header anyway).")
    mcp_allowed_origins: str | None = Field(default=None, description="Origin header values /mcp accepts when "
                                            "`mcp_allowed_hosts` is set (`http://host:*` for any port); a request "
                                            "without Origin is always accepted.")

    log_level: str = "INFO"
    log_json: bool = True


class OtelSettings(BaseSettings):
    """The standard OpenTelemetry variables that decide whether tracing is set up (core/tracing.py): OTEL_*, not
    AGENTMEM_*, so that a deployment's usual OpenTelemetry configuration applies as it is. The rest of them
    (headers, protocol details, sampler ratio, resource attributes, batch sizes) the OpenTelemetry SDK reads itself,
    as its specification says; this object reads only what AgentMem's own code decides on."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    sdk_disabled: bool = Field(default=False, description="`true` turns tracing off whatever else is set.")
    traces_exporter: str | None = Field(default=None, description="`otlp` (OTLP over HTTP/protobuf), `console`, "
                                        "or `none`; unset: `otlp` when an OTLP endpoint is set, else no tracing.")
    exporter_otlp_endpoint: str | None = Field(default=None, description="Base URL of the OTLP receiver "
                                               "(`/v1/traces` is added).")
    exporter_otlp_traces_endpoint: str | None = Field(default=None, description="Full URL for traces, used as is.")
    service_name: str | None = Field(default=None, description="`service.name` of every span; unset: "
                                     "`agentmem-api`, `agentmem-worker` or `agentmem-scheduler` by process.")


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


@cache
def get_otel_settings() -> OtelSettings:
    """The OpenTelemetry variables, read once."""
    return OtelSettings()
