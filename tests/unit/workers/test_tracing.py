"""workers/tracing.py with Dramatiq's own stub broker and worker: a job's span continues the trace its message
carries, is current inside the async actor, and ends with the actor's outcome. Spans go to an in-memory exporter of
a provider of the test's own (the process-wide one stays unset)."""

from __future__ import annotations

import uuid

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from core import queue, tracing
from schemas.enums import JobKind
from workers.tracing import JobTracing


@pytest.fixture
def exporter(monkeypatch):
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(tracing, "_provider", provider)
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("test"))
    yield spans
    provider.shutdown()


@pytest.fixture
def broker():
    stub = StubBroker()
    stub.add_middleware(AsyncIO())
    stub.add_middleware(JobTracing())
    yield stub
    stub.close()


def run(broker: StubBroker, queue_name: str) -> None:
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join(queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_the_job_span_continues_the_senders_trace_and_holds_the_actors_spans(exporter, broker):
    seen = []

    @dramatiq.actor(actor_name=JobKind.EMBED_MEMORY.value, queue_name=queue.QUEUES[JobKind.EMBED_MEMORY],
                    broker=broker, max_retries=0)
    async def embed_memory(job_id: str) -> None:
        seen.append(trace.get_current_span().get_span_context())
        with tracing.tracer().start_as_current_span("statement", kind=SpanKind.CLIENT):
            pass

    job_id = uuid.uuid4()
    with tracing.tracer().start_as_current_span("POST /api/v1/memories", kind=SpanKind.SERVER) as request:
        message = queue.job_message(JobKind.EMBED_MEMORY, job_id)
    assert message.options[tracing.MESSAGE_OPTION]["traceparent"].startswith("00-")
    broker.enqueue(message)
    run(broker, message.queue_name)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    job, statement = spans["job embed_memory"], spans["statement"]
    assert job.kind == SpanKind.CONSUMER and job.status.status_code != StatusCode.ERROR
    assert job.context.trace_id == request.get_span_context().trace_id
    assert job.parent.span_id == request.get_span_context().span_id
    assert statement.parent.span_id == job.context.span_id  # current inside the coroutine, on the loop's thread
    assert seen == [job.context]
    assert job.attributes["agentmem.job.id"] == str(job_id)
    assert job.attributes["messaging.destination.name"] == "embedding"


def test_a_failing_job_ends_its_span_as_an_error_and_a_message_without_context_starts_a_trace(exporter, broker):
    @dramatiq.actor(actor_name="fails", queue_name="tools", broker=broker, max_retries=0)
    async def fails(job_id: str) -> None:
        raise RuntimeError("boom")

    broker.enqueue(fails.message(str(uuid.uuid4())))  # sent with no span current: nothing carried
    run(broker, "tools")

    [job] = [s for s in exporter.get_finished_spans() if s.name == "job fails"]
    assert job.parent is None
    assert job.status.status_code == StatusCode.ERROR and job.events[0].name == "exception"
