"""Actors: glue from a message (a job id) to the pipeline that does the work.

Each actor is named after its job kind and listens on the queue core.queue.QUEUES gives that kind,
which is how senders address it without importing this module.
"""

from __future__ import annotations

import uuid

import dramatiq

import workers.broker  # noqa: F401  (makes the worker's broker Dramatiq's, before the actors below declare on it)
from core.errors import PermanentJobError
from core.queue import BENCH_QUEUE, QUEUES
from core.settings import get_settings
from pipelines.blocks import rewrite as block_rewrite
from pipelines.conversations import summary as conversation_summary, turn
from pipelines.exports import export as exports, imports
from pipelines.jobs.batch import JobBatcher
from pipelines.jobs.noop import noop as noop_handler
from pipelines.jobs.runner import run_job
from pipelines.maintenance.registry import run_maintenance
from pipelines.mcp import call as mcp
from pipelines.memories import deletion, extraction, ingest as embedding
from pipelines.sources import ingest as sources
from pipelines.summaries import summarize as summarization
from pipelines.tools import execute
from pipelines.webhooks.deliver import deliver_webhook
from schemas.enums import JobKind

_settings = get_settings()
_options = dict(
    # Job rows count attempts; the broker gets a few more retries than a job has attempts so that
    # the row, not Dramatiq, decides when a job has failed for good.
    max_retries=_settings.job_max_retries + 3,
    min_backoff=_settings.job_min_backoff_ms,
    max_backoff=_settings.job_max_backoff_ms,
    # Our own asyncio timeout fires first and records `time_limit_exceeded`; this is the backstop.
    time_limit=int((_settings.job_time_limit_seconds + 60) * 1000),
    # run_job records permanent failures itself; should one escape, it must not be retried.
    throws=(PermanentJobError,),
)


# Ingest jobs of a few items that reach this process together are claimed, embedded, stored and finished together.
_small_ingests = JobBatcher(JobKind.INGEST_MEMORIES, embedding.ingest_memories, embedding.ingest_jobs,
                            max_items=_settings.ingest_coalesce_items, wait_ms=_settings.ingest_coalesce_wait_ms,
                            drop_payload_keys=("items",), fits=embedding.coalescable)


@dramatiq.actor(actor_name=JobKind.INGEST_MEMORIES.value, queue_name=QUEUES[JobKind.INGEST_MEMORIES], **_options)
async def ingest_memories(job_id: str) -> None:
    """Embed and store a batch of memories."""
    await _small_ingests.run(uuid.UUID(job_id))


@dramatiq.actor(actor_name=JobKind.EMBED_MEMORY.value, queue_name=QUEUES[JobKind.EMBED_MEMORY], **_options)
async def embed_memory(job_id: str) -> None:
    """Re-embed a memory whose content changed."""
    await run_job(uuid.UUID(job_id), embedding.embed_memory)


@dramatiq.actor(actor_name=JobKind.SUMMARIZE.value, queue_name=QUEUES[JobKind.SUMMARIZE], **_options)
async def summarize(job_id: str) -> None:
    """Summarize a conversation into a new memory."""
    await run_job(uuid.UUID(job_id), summarization.summarize)


@dramatiq.actor(actor_name=JobKind.EXTRACT_FACTS.value, queue_name=QUEUES[JobKind.EXTRACT_FACTS], **_options)
async def extract_facts(job_id: str) -> None:
    """Learn the facts of a conversation and merge them into the scope's memories (`infer`)."""
    await run_job(uuid.UUID(job_id), extraction.extract_facts, drop_payload_keys=("messages",))


@dramatiq.actor(actor_name=JobKind.BLOCK_REWRITE.value, queue_name=QUEUES[JobKind.BLOCK_REWRITE], **_options)
async def rewrite_block(job_id: str) -> None:
    """Rewrite a core-memory block shorter (compare-and-swap on its version)."""
    await run_job(uuid.UUID(job_id), block_rewrite.rewrite_block)


@dramatiq.actor(actor_name=JobKind.EXECUTE_TOOL.value, queue_name=QUEUES[JobKind.EXECUTE_TOOL],
                **{**_options, "time_limit": int((max(_settings.job_time_limit_seconds,
                                                      _settings.tool_timeout_max_seconds) + 60) * 1000)})
async def execute_tool(job_id: str) -> None:
    """Run a tool in the sandbox (or a built-in file tool) with the job's arguments."""
    await run_job(uuid.UUID(job_id), execute.execute_tool)


@dramatiq.actor(actor_name=JobKind.AGENT_TURN.value, queue_name=QUEUES[JobKind.AGENT_TURN],
                **{**_options, "time_limit": int((max(_settings.job_time_limit_seconds,
                                                      _settings.tool_timeout_max_seconds) + 60) * 1000)})
async def agent_turn(job_id: str) -> None:
    """Answer a user message: model calls and tools, each step stored before the next, streamed as it goes."""
    await run_job(uuid.UUID(job_id), turn.agent_turn)


@dramatiq.actor(actor_name=JobKind.SUMMARIZE_CONVERSATION.value, queue_name=QUEUES[JobKind.SUMMARIZE_CONVERSATION],
                **_options)
async def summarize_conversation(job_id: str) -> None:
    """Extend a conversation's rolling summary over messages that left the context window."""
    await run_job(uuid.UUID(job_id), conversation_summary.summarize_conversation)


@dramatiq.actor(actor_name=JobKind.NOOP.value, queue_name=QUEUES[JobKind.NOOP], **_options)
async def noop(job_id: str) -> None:
    """Benchmarks only: a job that does nothing (the job machinery's own cost)."""
    await run_job(uuid.UUID(job_id), noop_handler)


@dramatiq.actor(actor_name=JobKind.INGEST_SOURCE.value, queue_name=QUEUES[JobKind.INGEST_SOURCE], **_options)
async def ingest_source(job_id: str) -> None:
    """Turn an uploaded document into memories: extract, chunk, embed, store (all or nothing)."""
    await run_job(uuid.UUID(job_id), sources.ingest_source)


@dramatiq.actor(actor_name="bench_bare_noop", queue_name=BENCH_QUEUE, **_options)
async def bench_bare_noop() -> None:
    """Benchmarks only: a bare Dramatiq actor that does nothing and has no job row (the baseline)."""


@dramatiq.actor(actor_name=JobKind.MCP_TEST.value, queue_name=QUEUES[JobKind.MCP_TEST], **_options)
async def mcp_test(job_id: str) -> None:
    """Connect to an MCP server, initialize, and cache its tool list."""
    await run_job(uuid.UUID(job_id), mcp.test_mcp_server)


@dramatiq.actor(actor_name=JobKind.MCP_CALL.value, queue_name=QUEUES[JobKind.MCP_CALL],
                **{**_options, "time_limit": int((max(_settings.job_time_limit_seconds,
                                                      _settings.mcp_timeout_max_seconds) + 60) * 1000)})
async def mcp_call(job_id: str) -> None:
    """Call one tool of an MCP server (a pooled stdio process, or over streamable HTTP)."""
    await run_job(uuid.UUID(job_id), mcp.call_mcp_tool)


@dramatiq.actor(actor_name=JobKind.MAINTENANCE.value, queue_name=QUEUES[JobKind.MAINTENANCE], **_options)
async def maintenance(job_id: str) -> None:
    """Run a maintenance task (its payload names it) in checkpointed batches."""
    await run_job(uuid.UUID(job_id), run_maintenance)


@dramatiq.actor(actor_name=JobKind.EXPORT.value, queue_name=QUEUES[JobKind.EXPORT], **_options)
async def export(job_id: str) -> None:
    """Write a scope's rows to a compressed archive stored for download."""
    await run_job(uuid.UUID(job_id), exports.export)


@dramatiq.actor(actor_name=JobKind.IMPORT.value, queue_name=QUEUES[JobKind.IMPORT], **_options)
async def import_archive(job_id: str) -> None:
    """Validate an uploaded archive whole, then store its rows (idempotent)."""
    await run_job(uuid.UUID(job_id), imports.import_archive)


@dramatiq.actor(actor_name=JobKind.DELETE_MEMORIES.value, queue_name=QUEUES[JobKind.DELETE_MEMORIES], **_options)
async def delete_memories(job_id: str) -> None:
    """Soft-delete every memory of a scope, in batches."""
    await run_job(uuid.UUID(job_id), deletion.delete_memories)


@dramatiq.actor(actor_name=JobKind.WEBHOOK_DELIVERY.value, queue_name=QUEUES[JobKind.WEBHOOK_DELIVERY],
                **{**_options, "max_retries": _settings.webhook_max_attempts + 3,
                   "min_backoff": _settings.webhook_min_backoff_ms, "max_backoff": _settings.webhook_max_backoff_ms})
async def webhook_delivery(job_id: str) -> None:
    """POST one event to one webhook, signed (Standard Webhooks); each attempt logged, retried with backoff."""
    await run_job(uuid.UUID(job_id), deliver_webhook)


ACTORS: dict[JobKind, dramatiq.Actor] = {
    JobKind.INGEST_MEMORIES: ingest_memories,
    JobKind.EMBED_MEMORY: embed_memory,
    JobKind.SUMMARIZE: summarize,
    JobKind.EXTRACT_FACTS: extract_facts,
    JobKind.BLOCK_REWRITE: rewrite_block,
    JobKind.EXECUTE_TOOL: execute_tool,
    JobKind.AGENT_TURN: agent_turn,
    JobKind.SUMMARIZE_CONVERSATION: summarize_conversation,
    JobKind.NOOP: noop,
    JobKind.MCP_TEST: mcp_test,
    JobKind.MCP_CALL: mcp_call,
    JobKind.INGEST_SOURCE: ingest_source,
    JobKind.MAINTENANCE: maintenance,
    JobKind.EXPORT: export,
    JobKind.IMPORT: import_archive,
    JobKind.DELETE_MEMORIES: delete_memories,
    JobKind.WEBHOOK_DELIVERY: webhook_delivery,
}
