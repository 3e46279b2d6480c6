"""Per-minute limits, cost and metrics of LLM calls on the real stack: Redis shared by this process and the
workers, the tests' model server, the API's /metrics.

Limits count per wall-clock minute. A test that finds the minute turned while it ran (the third
call then rightly passes) runs again with a fresh configuration: at most once more, as the whole
test takes seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from core.db import session_scope
from core.errors import LLMUnavailable
from core.llm import LLMClient
from core.llm_limits import WINDOW_SECONDS
from pipelines.llm import configs as llm_configs
from schemas.permissions import Role
from tests.integration.test_summaries import TRIP, ingest, summarize
from tests.support.metrics import scrape as scrape_metrics
from tests.support.sse import finish, follow


def minute() -> int:
    return int(time.time() // WINDOW_SECONDS)


@pytest.fixture
async def admin(stack, tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.ADMIN),
                                 timeout=httpx.Timeout(30, read=120)) as api:
        yield api


@pytest.fixture
async def model(stack):
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as client:
        yield client


async def default_config(admin: httpx.AsyncClient, stack, **fields) -> dict:
    """A new default configuration for the tests' model server, without an API key (nothing to decrypt here)."""
    reply = await admin.post("/api/v1/llm/configs", json={
        "name": f"cfg-{uuid.uuid4().hex[:8]}", "model": "test-chat", "base_url": stack.model_url + "/v1",
        "is_default": True} | fields)
    assert reply.status_code == 201, reply.text
    return reply.json()


async def chat_requests(model: httpx.AsyncClient, marker: str) -> int:
    return (await model.get("/stats", params={"contains": marker})).json()["chat_requests"]


async def scrape(stack) -> dict[tuple[str, tuple], float]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as anonymous:
        return await scrape_metrics(anonymous)


async def test_two_calls_a_minute_pass_and_a_third_is_held_back_here_and_in_a_worker(stack, tenant, admin, model,
                                                                                     scope):
    run = f"{scope}-run"
    marker = f"JOB-{uuid.uuid4().hex}"
    await ingest(admin, [*TRIP, f"User: the code word is {marker}."], user_id=scope, run_id=run)
    for _ in range(2):
        if WINDOW_SECONDS - time.time() % WINDOW_SECONDS < 10:
            await asyncio.sleep(WINDOW_SECONDS - time.time() % WINDOW_SECONDS + 0.1)  # start in a fresh minute
        # A short timeout bounds the wait for the next minute, so the third call fails rather than waits.
        config = await default_config(admin, stack, requests_per_minute=2, timeout_seconds=3)
        async with session_scope() as session:
            provider = await llm_configs.require_provider(session, tenant.org_id)
        assert provider.requests_per_minute == 2
        here = f"HERE-{uuid.uuid4().hex}"
        started = minute()
        llm = LLMClient(provider)
        answers = [await llm.chat([{"role": "user", "content": f"call {i} {here}"}]) for i in range(2)]
        assert all(a.content.startswith("echo:") for a in answers)
        # Within its timeout of the minute's end the third call rightly waits for the next minute and
        # passes: that run is retried below rather than failed.
        caught = None
        try:
            await llm.chat([{"role": "user", "content": f"call 3 {here}"}])
        except LLMUnavailable as exc:
            caught = exc
        # A worker, another process, sees the same count: the summary job's call is held back too.
        job = await summarize(admin, {"run_id": run, "mode": "abstractive"})
        events = await follow(admin, job["id"], stop_after=lambda e: e.event == "retrying")
        shown = (await admin.get(f"/api/v1/jobs/{job['id']}")).json()
        await admin.post(f"/api/v1/jobs/{job['id']}/cancel")  # its retries would pass in a later minute
        if minute() != started:
            continue  # the minute turned mid-test: held-back calls may rightly have passed
        assert caught is not None, "the third call in one minute passed a limit of 2"
        assert caught.details["reason"] == "rate_limited" and caught.details["value"] == 2
        assert await chat_requests(model, here) == 2  # the third was never sent
        assert events[-1].event == "retrying", [e.event for e in events]
        assert shown["error"]["code"] == "llm_unavailable"
        assert "limit of 2 requests per minute" in shown["error"]["message"], shown["error"]
        assert await chat_requests(model, marker) == 0
        assert config["requests_per_minute"] == 2
        return
    pytest.fail("the minute turned during both runs")


async def test_a_priced_jobs_cost_is_on_the_job_and_its_calls_in_the_metrics(stack, admin, scope):
    await default_config(admin, stack, prompt_price_per_million=2.0, completion_price_per_million=8.0)
    who = (("model", "test-chat"), ("provider", "openai_compatible"))
    labels = (("kind", "chat"), *who[:1], ("outcome", "ok"), *who[1:])
    before = await scrape(stack)
    run = f"{scope}-run"
    await ingest(admin, TRIP, user_id=scope, run_id=run)
    done = await finish(admin, (await summarize(admin, {"run_id": run, "mode": "abstractive"}))["id"])
    assert done["status"] == "succeeded", done
    usage = done["usage"]
    assert usage["calls"] == 1 and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1_000_000
    assert usage["cost_usd"] == pytest.approx(expected)

    after = await scrape(stack)

    def grew(name: str, sample_labels: tuple) -> float:
        return after.get((name, sample_labels), 0.0) - before.get((name, sample_labels), 0.0)

    # Other jobs may call the model meanwhile: at least this job's figures were added.
    assert grew("agentmem_llm_tokens_total", (("kind", "chat"), *who, ("type", "prompt"))) >= usage["prompt_tokens"]
    assert grew("agentmem_llm_tokens_total", (("kind", "chat"), *who, ("type", "completion"))) >= \
        usage["completion_tokens"]
    assert grew("agentmem_llm_requests_total", labels) >= 1
    assert grew("agentmem_llm_request_duration_seconds_count", labels) >= 1
    assert grew("agentmem_llm_request_duration_seconds_sum", labels) > 0
    assert after[("agentmem_llm_request_duration_seconds_bucket", (labels[0], ("le", "+Inf"), *labels[1:]))] == \
        after[("agentmem_llm_request_duration_seconds_count", labels)]
    assert grew("agentmem_llm_cost_usd_total", who) >= expected * 0.999
