"""Summaries: condense a conversation into a new memory, as a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.jobs import lifecycle
from pipelines.summaries import summarize as summarization
from schemas.common import ErrorOut
from schemas.enums import JobKind
from schemas.jobs import JobOut
from schemas.permissions import Permission as P, Principal
from schemas.summaries import SummaryCreate

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/summaries", tags=["summaries"],
                   responses=error_responses(401, 403, 422, 429, 503))
Writer = Annotated[Principal, Depends(Allow(P.MEMORIES_WRITE))]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={404: {"model": ErrorOut, "description": "Memories not found (`details.missing_ids`)"},
                        409: {"model": ErrorOut, "description": "Idempotency-Key reused with another body"},
                        422: {"model": ErrorOut, "description": "Invalid input, `nothing_to_summarize`, or "
                                                                "`llm_not_configured` for `mode: abstractive`"},
                        429: {"model": ErrorOut, "description": "Rate limit or a job quota reached (see `code`)"}})
@audited("job", target=lambda result: result.id, details=lambda body: {"mode": body.mode.value})
async def create_summary(body: SummaryCreate, session: SessionDep, who: Writer, response: Response,
                         key: IdempotencyKey = None) -> JobOut:
    """Queue a summary of a conversation: a run's memories (`run_id`, optionally narrowed by `user_id` and
    `agent_id`) or up to 10,000 chosen memories (`memory_ids`).

    Answers `202` with a `summarize` job; follow it at `GET /api/v1/jobs/{id}/events` (a `progress`
    event per chunk of a long conversation). The summary is stored as a new memory in the sources'
    scope, searchable like any other, with metadata `kind: summary`, `method`, `source_ids` (or
    `source_count` and `run_id` for many sources) and `job_id`. The job's `result.memory_id` names it.
    """
    await summarization.check_request(session, who.org_id, body, key=key)
    job, _ = await lifecycle.submit(session, who, kind=JobKind.SUMMARIZE, payload=summarization.summary_payload(body),
                                    total=1, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)
