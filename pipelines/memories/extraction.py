"""Fact extraction (`infer`): learn the facts of a conversation and merge them into a scope's memories.

The job (`extract_facts`), in four checkpoints:
1. ask the LLM for the facts in the messages (`ExtractedFacts`);
2. embed each fact and compare it with the live memories of the same scope: an exact duplicate
   (same content hash) or a near duplicate (pipelines/memories/dedup.py) is a NOOP without asking anything,
   as is a repeat of an earlier fact; the rest keep their most similar memories as candidates;
3. ask the LLM what each remaining fact means for its candidates (ADD / UPDATE / DELETE / NOOP),
   showing the candidates under small integer ids, and check every decision (pipelines/memories/decisions.py);
   facts with no similar memory at all are ADDed without this call;
4. apply everything in one transaction, with a version in each memory's history.

Idempotent: the apply transaction also stores the job's result, so a redelivered message that finds
a result returns it and changes nothing; new memories' ids derive from the job id and fact index.
Malformed LLM output gets one repair attempt (`chat_json`), then fails the job `llm_output_invalid`;
an unreachable or rate-limiting provider is a transient `llm_unavailable` (the job is retried).
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

from sqlalchemy import select, text, update

from core.db import session_scope
from core.embedder import get_embedder
from core.errors import JobCancelled, LLMNotConfigured, TransientJobError
from core.llm import LLMClient
from core.settings import get_settings
from pipelines.accounts import limits
from pipelines.jobs.runner import JobContext
from pipelines.llm.configs import HOW_TO_CONFIGURE, provider_for
from pipelines.memories import decisions, dedup, store
from pipelines.memories.decisions import Operation, Plan
from pipelines.memories.store import content_hash
from schemas.enums import MemoryEvent
from schemas.extraction import ExtractedFacts, MemoryDecisions
from schemas.memories import MAX_CONTENT_CHARS
from schemas.tables import Job, Memory

STEPS = 4

EXTRACT_PROMPT = """You curate the long-term memory of an AI assistant. Read the conversation and list the facts \
worth remembering about the user: personal details, preferences, plans, relationships, health, work, \
opinions, and anything they ask to be remembered.
Rules:
- One fact per item: a short, self-contained statement, in the language the user wrote in.
- Take facts from what the user says. Take them from the assistant's or system's messages only when the \
user confirmed them.
- Keep names, numbers, dates and places exactly as written.
- A change is a fact in its new form ("Moved to Lisbon"); a negation stays a negation ("Is not allergic \
to peanuts").
- Leave out greetings, small talk, questions and instructions to the assistant.
- Nothing worth remembering: an empty list.
Today is {today}."""

DECIDE_PROMPT = """You keep an AI assistant's memory consistent. You get the memories already stored, each \
under a small integer `id`, and new facts, each under an index `fact`. Give at least one decision per fact:
- ADD: the fact is new information no stored memory holds. `text`: the memory to store (usually the fact).
- UPDATE: the fact changes, corrects or adds detail to a stored memory, including when it contradicts \
it (the user moved, changed their mind, a date changed). `id`: that memory; `text`: what is true now.
- DELETE: the fact shows that a stored memory is no longer true. `id`: that memory. If the fact itself \
is worth keeping, also ADD it.
- NOOP: a stored memory already says this. `id`: that memory.
Never leave two memories that contradict each other: prefer UPDATE. Use only the ids listed, never \
another number."""


def _conversation(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def clean_facts(raw: list[str], limit: int) -> list[str]:
    """The model's facts stripped, without blanks or repeats, each within the memory size limit, at most `limit`."""
    facts: list[str] = []
    for fact in raw:
        fact = " ".join(fact.split())[:MAX_CONTENT_CHARS]
        if fact and fact not in facts:
            facts.append(fact)
    return facts[:limit]


async def extract_facts(ctx: JobContext) -> dict[str, Any]:
    """Extract the conversation's facts and merge them into the scope's memories (see the module docstring)."""
    job, settings = ctx.job, get_settings()
    if job.result is not None:
        return job.result  # an earlier attempt applied its changes (and stored this) before it was cut short
    payload = job.payload
    async with session_scope() as session:
        provider = await provider_for(session, job.org_id)
    if provider is None:
        raise LLMNotConfigured(f"the organization's LLM provider was removed after the request: {HOW_TO_CONFIGURE}")
    client = LLMClient(provider, on_usage=ctx.record_usage)

    await ctx.progress(0, STEPS, "extracting facts")
    extracted = await client.chat_json([
        {"role": "system", "content": EXTRACT_PROMPT.format(today=date.today().isoformat())},
        {"role": "user", "content": "Conversation:\n" + _conversation(payload["messages"])}], ExtractedFacts)
    facts = clean_facts(extracted.facts, settings.extraction_max_facts)

    await ctx.progress(1, STEPS, f"comparing {len(facts)} facts with stored memories")
    scope = dedup.Scope.of(payload)
    vectors = await get_embedder().embed(facts)
    resolved, pending = await _compare(job.org_id, scope, facts, vectors)

    plan = Plan(operations=resolved)
    if pending:
        await ctx.progress(2, STEPS, f"deciding about {len(pending)} facts")
        plan = await _decide(client, facts, pending, plan)
    await ctx.progress(3, STEPS, "applying")
    return await _apply(ctx, scope, facts, plan)


async def _compare(org_id: uuid.UUID, scope: dedup.Scope, facts: list[str], vectors: list[list[float]]
                   ) -> tuple[list[Operation], dict[int, list[tuple[uuid.UUID, str]]]]:
    """NOOPs for duplicates, ADDs for facts like no memory, and the candidates of the facts left to decide."""
    settings = get_settings()
    threshold = settings.dedup_similarity
    resolved: list[Operation] = []
    pending: dict[int, list[tuple[uuid.UUID, str]]] = {}
    repeats = dedup.earlier_duplicates(facts, vectors, [scope] * len(facts), threshold)
    async with session_scope() as session:
        exact = await dedup.exact_matches(session, org_id, [(scope, content_hash(f)) for f in facts])
        for index, (fact, vector) in enumerate(zip(facts, vectors, strict=True)):
            if (scope, content_hash(fact)) in exact:
                resolved.append(Operation(MemoryEvent.NOOP, index, memory_id=exact[(scope, content_hash(fact))],
                                          source="exact_duplicate", similarity=1.0))
                continue
            if index in repeats:
                resolved.append(Operation(MemoryEvent.NOOP, index, source="repeated_fact",
                                          similarity=repeats[index][2]))
                continue
            neighbours = await dedup.nearest(session, org_id, scope, vector, settings.extraction_candidates)
            near = next(((m, s) for m, s in neighbours if dedup.near_duplicate(fact, m.content, s, threshold)), None)
            if near is not None:
                resolved.append(Operation(MemoryEvent.NOOP, index, memory_id=near[0].id, source="near_duplicate",
                                          similarity=near[1]))
            elif not neighbours:
                resolved.append(Operation(MemoryEvent.ADD, index, text=fact, source="no_similar_memory"))
            else:
                pending[index] = [(m.id, m.content) for m, _ in neighbours]
    return resolved, pending


async def _decide(client: LLMClient, facts: list[str], pending: dict[int, list[tuple[uuid.UUID, str]]],
                  plan: Plan) -> Plan:
    """Ask the LLM about the pending facts (renumbered 0…) and their candidates (as small ids); validated."""
    order = sorted(pending)
    shown = decisions.number_memories([c for index in order for c in pending[index]])
    asked = [facts[index] for index in order]
    body = {"stored_memories": [{"id": s.ref, "text": s.content} for s in shown],
            "new_facts": [{"fact": n, "text": fact} for n, fact in enumerate(asked)]}
    answer = await client.chat_json([{"role": "system", "content": DECIDE_PROMPT},
                                     {"role": "user", "content": json.dumps(body, ensure_ascii=False)}],
                                    MemoryDecisions)
    decided = decisions.plan(asked, shown, answer.decisions)
    for op in decided.operations:
        op.fact = order[op.fact]  # back to the index among all the job's facts
    return Plan(plan.operations + decided.operations, decided.rejected)


async def _apply(ctx: JobContext, scope: dedup.Scope, facts: list[str], plan: Plan) -> dict[str, Any]:
    """Apply the plan in one transaction, with history, and store the result with it (see the module docstring)."""
    job = ctx.job
    writes = [op for op in plan.operations if op.event in (MemoryEvent.ADD, MemoryEvent.UPDATE)]
    vectors = dict(zip((id(op) for op in writes), await get_embedder().embed([op.text for op in writes]),
                       strict=True))
    provenance = {"source": "extraction"}
    async with session_scope() as session:
        # One extraction at a time per scope: each sees the others' changes, so two can't ADD the same fact.
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                              {"k": f"memories:{job.org_id}:{json.dumps(scope.as_dict(), sort_keys=True)}"})
        row = (await session.execute(select(Job.result, Job.cancel_requested).where(Job.id == job.id)
                                     .with_for_update())).one()
        if row.result is not None:
            return row.result
        if row.cancel_requested:
            raise JobCancelled()
        await _lock_targets(session, job.org_id, plan.operations)
        # A contradiction (DELETE + ADD) stores nothing more; the rest must fit the quota, or nothing is applied.
        growth = sum(1 for op in plan.operations if op.event is MemoryEvent.ADD) - \
            sum(1 for op in plan.operations if op.event is MemoryEvent.DELETE)
        await limits.reserve_memories(session, job.org_id, growth)
        added = 0
        for op in plan.operations:
            meta = provenance | {"fact": facts[op.fact]}
            if op.event is MemoryEvent.ADD:
                existing = await dedup.exact_matches(session, job.org_id, [(scope, content_hash(op.text))])
                if existing:  # stored meanwhile, or the model ADDed text a memory already holds
                    op.event, op.source = MemoryEvent.NOOP, "exact_duplicate"
                    op.memory_id = next(iter(existing.values()))
                    continue
                op.memory_id = uuid.uuid5(job.id, f"fact:{op.fact}:{added}")
                digest = content_hash(op.text)
                await store.add_many(session, [dict(
                    id=op.memory_id, org_id=job.org_id, **scope.as_dict(), content=op.text,
                    meta=job.payload.get("metadata") or {}, content_hash=digest, embedding=vectors[id(op)],
                    embedded_hash=digest, source_job_id=job.id, source_index=added,
                )], job_id=job.id, actor=job.actor, meta=meta, conflict=None)
                added += 1
            elif op.event is MemoryEvent.UPDATE:
                await store.replace_content(session, op.memory_id, org_id=job.org_id, old_content=op.old_text,
                                            content=op.text, embedding=vectors[id(op)], job_id=job.id,
                                            actor=job.actor, meta=meta)
            elif op.event is MemoryEvent.DELETE:
                await store.soft_delete(session, op.memory_id, org_id=job.org_id, old_content=op.old_text,
                                        job_id=job.id, actor=job.actor, meta=meta)
        result = _result(facts, plan)
        await session.execute(update(Job).where(Job.id == job.id).values(result=result))
        await session.commit()
    return result


async def _lock_targets(session: Any, org_id: uuid.UUID, operations: list[Operation]) -> None:
    """Lock the memories to change; one edited or deleted since the LLM saw it sends the job round again."""
    targets = {op.memory_id: op.old_text for op in operations
               if op.event in (MemoryEvent.UPDATE, MemoryEvent.DELETE)}
    if not targets:
        return
    rows = dict((await session.execute(select(Memory.id, Memory.content).where(
        Memory.id.in_(list(targets)), Memory.org_id == org_id, Memory.deleted_at.is_(None))
        .order_by(Memory.id).with_for_update())).all())
    stale = [str(memory_id) for memory_id, old in targets.items() if rows.get(memory_id) != old]
    if stale:
        raise TransientJobError(f"{len(stale)} memories changed while the LLM was deciding; deciding again",
                                code="memories_changed", details={"memory_ids": stale})


def _result(facts: list[str], plan: Plan) -> dict[str, Any]:
    counts = {event.value: 0 for event in MemoryEvent}
    affected: dict[str, list[str]] = {"added": [], "updated": [], "deleted": []}
    key = {MemoryEvent.ADD: "added", MemoryEvent.UPDATE: "updated", MemoryEvent.DELETE: "deleted"}
    for op in plan.operations:
        counts[op.event.value] += 1
        if op.event in key:
            affected[key[op.event]].append(str(op.memory_id))
    return {"facts": facts, "events": counts, "memory_ids": affected,
            "decisions": [op.as_dict() for op in sorted(plan.operations, key=lambda o: o.fact)],
            "rejected": [r.as_dict() for r in plan.rejected]}
