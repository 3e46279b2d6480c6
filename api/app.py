"""The FastAPI application: a thin adapter that validates, writes job rows and enqueues work."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.middleware import RequestContext
from api.routes import health, jobs, memories, ws
from core.db import dispose_engine
from core.embedder import warm_up
from core.redis import close_redis

log = logging.getLogger(__name__)

DESCRIPTION = """
Long-term memory for AI agents, built on **durable jobs with streamed progress**.

Writes that take work (embedding, re-embedding) answer `202 Accepted` with a **job**. Follow it by
polling `GET /api/v1/jobs/{id}`, live over Server-Sent Events at `GET /api/v1/jobs/{id}/events`
(resumable with `Last-Event-ID`), or over the WebSocket at `/api/v1/ws`. Send an
`Idempotency-Key` header to make retries safe.

Every error has the shape `{"error": {"code", "message", "details", "request_id"}}` with a stable `code`.
"""

TAGS = [
    {"name": "memories", "description": "Store memories in batches and find them by meaning."},
    {"name": "jobs", "description": "Background work: state, progress, cancellation and live events."},
    {"name": "operations", "description": "Health, readiness and metrics."},
]


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Nothing connects at import; load the embedding model in the background so the first
    # search does not pay for it.
    warm = asyncio.create_task(asyncio.to_thread(warm_up))
    yield
    warm.cancel()
    await close_redis()
    await dispose_engine()


def create_app() -> FastAPI:
    """Build the application."""
    app = FastAPI(title="AgentMem", version="0.1.0", description=DESCRIPTION, openapi_tags=TAGS, lifespan=lifespan)
    install_error_handlers(app)
    for router in (memories.router, jobs.router, ws.router, health.router):
        app.include_router(router)
    app.add_middleware(RequestContext)
    return app
