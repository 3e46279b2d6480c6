"""The FastAPI application: a thin adapter that validates, writes job rows and enqueues work."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.console import install_console
from api.deps import document_permissions
from api.docs import install_docs
from api.errors import install_error_handlers
from api.mcp import mount_mcp, serving_mcp
from api.middleware import install_middleware
from api.routes import (
    admin,
    agents,
    api_keys,
    audit,
    auth,
    blocks,
    conversations,
    exports,
    files,
    health,
    jobs,
    llm,
    maintenance,
    mcp_servers,
    memories,
    messages,
    openai_compat,
    organizations,
    schedules,
    sources,
    summaries,
    tools,
    webhooks,
    ws,
)
from core import tracing
from core.db import dispose_engine
from core.embedder import embed_queries_with, warm_up
from core.event_hub import close_hub
from core.redis import close_redis
from core.security import check_secret_strength
from core.settings import get_settings
from pipelines.accounts.key_cache import close_key_cache, key_cache

log = logging.getLogger(__name__)

DESCRIPTION = """
Long-term memory for AI agents, built on **durable jobs with streamed progress**.

Writes that take work (embedding, re-embedding) answer `202 Accepted` with a **job**. Follow it by
polling `GET /api/v1/jobs/{id}`, live over Server-Sent Events at `GET /api/v1/jobs/{id}/events`
(resumable with `Last-Event-ID`), or over the WebSocket at `/api/v1/ws`. Send an
`Idempotency-Key` header to make retries safe.

**Authentication.** Send an organization's API key as `Authorization: Bearer amk_…` (or
`X-API-Key`), or sign in at `POST /api/v1/auth/login` and send the access token the same way. A user
in several organizations picks one with `X-Organization-Id`. Each operation lists the permission it
needs; roles grant them (`owner` ⊃ `admin` ⊃ `member` ⊃ `viewer`). Browsers' EventSource and
WebSocket can't send headers: get a short-lived stream token at `POST /api/v1/stream-tokens` and pass
it as `?token=`.

**Limits.** Responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`;
a `429` adds `Retry-After`. Quotas (stored memories, jobs per minute, concurrent jobs, batch size)
answer `403` or `429` with a code naming the quota, and nothing is written.

Every error has the shape `{"error": {"code", "message", "details", "request_id"}}` with a stable `code`;
`details` is always an object.

### The WebSocket, `/api/v1/ws`
""" + ws.PROTOCOL

TAGS = [
    {"name": "auth", "description": "Accounts, sign-in, tokens."},
    {"name": "organizations", "description": "Organizations and their members, with roles."},
    {"name": "api keys", "description": "Keys for programs; the secret is shown once."},
    {"name": "memories", "description": "Store memories in batches and find them by meaning."},
    {"name": "summaries", "description": "Condense a conversation into a summary memory, as a job."},
    {"name": "jobs", "description": "Background work: state, progress, cancellation and live events."},
    {"name": "llm", "description": "LLM provider configurations of your organization (admins)."},
    {"name": "agents", "description": "Agents: instructions, a prompt template, attached core-memory blocks."},
    {"name": "conversations", "description": "Conversations with agents: messages, the agent turns that answer "
                                             "them (streamed), and the context a turn sends."},
    {"name": "openai", "description": "The OpenAI-compatible door: chat with agents through OpenAI clients "
                                      "(`base_url=…/v1`)."},
    {"name": "blocks", "description": "Core-memory blocks: versioned, limited, rewritten shorter when full."},
    {"name": "tools", "description": "Tools run in a sandbox as jobs, and the built-in file tools."},
    {"name": "audit", "description": "Who did what, when, from where."},
    {"name": "admin", "description": "Service administration (superusers)."},
    {"name": "operations", "description": "Health, readiness and metrics."},
    {"name": "maintenance", "description": "Maintenance tasks (integrity checks, …) run now, as jobs."},
    {"name": "schedules", "description": "Maintenance tasks run by the scheduler on a cron expression or an interval."},
    {"name": "files", "description": "Files of your organization's workspace, shared with the built-in file tools."},
    {"name": "webhooks", "description": "Endpoints that receive your organization's events, signed (Standard "
                                        "Webhooks); their delivery log and redelivery."},
]


ROUTERS = (auth.router, organizations.router, api_keys.router, memories.router, summaries.router, jobs.router,
           llm.router, agents.router, conversations.router, messages.router,
           openai_compat.router, blocks.router, tools.router,
           ws.router, audit.router, admin.router, health.router, mcp_servers.router, files.router,
           sources.router, maintenance.router, exports.router, webhooks.router, schedules.router)


async def _warm_up() -> None:
    await asyncio.to_thread(warm_up)
    # The model, the ORM and the routes are loaded for good: move them out of the collector's sight,
    # so a full collection does not walk them again in the middle of a request (a latency tail).
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI):
    check_secret_strength()  # refuse to serve with a missing or placeholder signing key
    # Nothing connects at import; load the embedding model in the background so the first
    # search does not pay for it.
    settings = get_settings()
    embed_queries_with(settings.embedding_query_threads, settings.embedding_query_precision,
                       settings.embedding_query_runtime)
    warm = asyncio.create_task(_warm_up())
    key_cache().start()  # LISTENs for changes to keys; caches nothing until it does
    async with serving_mcp(app):
        yield
    warm.cancel()
    await close_key_cache()
    close_hub()
    await close_redis()
    await dispose_engine()
    tracing.shutdown_tracing()


def create_app() -> FastAPI:
    """Build the application."""
    # /docs and /redoc are served by api/docs.py, from the package (no CDN).
    app = FastAPI(title="AgentMem", version="0.1.0", description=DESCRIPTION, openapi_tags=TAGS, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    install_error_handlers(app)
    for router in ROUTERS:
        document_permissions(router.routes)
        app.include_router(router)
    if get_settings().bench_jobs:
        app.include_router(jobs.bench_router)
    mount_mcp(app)
    install_docs(app)
    install_console(app)
    install_middleware(app)
    if tracing.setup_tracing("agentmem-api"):
        tracing.instrument_app(app)
    return app
