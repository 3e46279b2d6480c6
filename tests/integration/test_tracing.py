"""Tracing across processes: a request's span continues into the worker's job span, with database, Redis and
HTTP (model endpoint) spans under it. A stack of its own (an API and a worker with the OTEL_* variables set)
exports through the real OTLP exporter to a receiver this test runs, which keeps the spans in memory; its broker
is another Redis database of the same server, so the session's untraced workers never take its jobs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.sse import finish
from tests.support.stack import Stack


def _other_database(url: str, number: int = 1) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{number}"))


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def traced_stack(services, receiver):
    log_dir = Path(tempfile.mkdtemp(prefix="agentmem-test-traced-", dir="/tmp"))
    st = Stack(services, log_dir)
    try:
        st.start(workers=1, extra_env={
            "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100",
            "AGENTMEM_REDIS_URL": _other_database(services.redis_url)})
    except Exception:
        print(st.logs())
        st.stop()
        raise
    yield st
    st.stop()
    print(f"\ntraced stack logs kept in {log_dir}")


def _descendants(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan]:
    children: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    found, todo = [], [root.span_id]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.span_id)
    return found


def _db(spans: list[ReceivedSpan], system: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == "CLIENT" and s.attributes.get("db.system", s.attributes.get(
        "db.system.name")) == system]


def _http(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == "CLIENT" and ("http.request.method" in s.attributes
                                                         or "http.method" in s.attributes)]


async def test_a_request_span_continues_into_the_job_span_with_db_and_redis_spans(traced_stack, receiver,
                                                                                    main_tenant, scope):
    async with httpx.AsyncClient(base_url=traced_stack.api_url, headers=main_tenant.headers(), timeout=60) as client:
        response = await client.post("/api/v1/memories", json={"user_id": scope, "items": [
            {"content": "traced memory one"}, {"content": "traced memory two"}]})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        final = await finish(client, job_id)
    assert final["status"] == "succeeded", final

    def chain(spans: list[ReceivedSpan]):
        job = next((s for s in spans if s.kind == "CONSUMER" and s.attributes.get("agentmem.job.id") == job_id), None)
        if job is None:
            return None
        under_job = _descendants(spans, job)
        if not (_db(under_job, "postgresql") and _db(under_job, "redis") and _http(under_job)):
            return None
        return job, under_job

    job, under_job = receiver.wait_for(chain, timeout=60)
    spans = list(receiver.spans)
    request = next((s for s in spans if s.span_id == job.parent_id), None)
    assert request is not None, f"the job span's parent ({job.parent_id or 'none'}) is no span received"
    assert request.kind == "SERVER" and request.service == "agentmem-api"
    assert request.name == "POST /api/v1/memories"
    assert job.trace_id == request.trace_id and job.service == "agentmem-worker"
    assert job.name == "job ingest_memories"
    assert job.attributes["messaging.destination.name"] == "embedding"
    # Under the job: its claim and its rows in PostgreSQL, its events on Redis, the embedding endpoint's HTTP call
    # (the stack embeds through the tests' OpenAI-compatible server, as an LLM call goes), all in the request's trace.
    assert all(s.trace_id == request.trace_id and s.service == "agentmem-worker" for s in under_job)
    [url] = {s.attributes.get("url.full", s.attributes.get("http.url")) for s in _http(under_job)}
    assert url == traced_stack.model_url + "/v1/embeddings"
    under_request = _descendants(spans, request)
    # The request's own work: its job row in PostgreSQL, its message and `queued` event in one Redis pipeline.
    assert _db(under_request, "postgresql") and _db(under_request, "redis")
    # Probes and broker polling start no traces of their own: every root span here is a request or a job.
    assert all(s.kind in ("SERVER", "CONSUMER") for s in spans if not s.parent_id)
