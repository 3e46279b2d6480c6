"""OpenTelemetry tracing: off unless the standard OTEL_* variables ask for it, then one tracer provider per process.

What turns it on (core/settings.py's `OtelSettings`): `OTEL_TRACES_EXPORTER` naming an exporter other than `none`,
or, with it unset, an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), the
exporter then being `otlp` as the specification's default is. `OTEL_SDK_DISABLED=true` turns it off whatever else
is set. The specification makes `otlp` the default even with no endpoint; here nothing is traced until a
deployment names where spans go, so a plain `agentmem up` sends nothing anywhere.

The exporters read their own OTEL_* variables (headers, timeouts, the sampler's ratio, resource attributes, batch
sizes), as the specification says they do: that reading is the OpenTelemetry SDK's, not this code base's.

Spans: the API's requests (FastAPI instrumentation, SERVER), a worker's job (CONSUMER, workers/tracing.py) whose
parent is the request that queued it (W3C trace context in the job's message, `inject_context`), and under both
the database (SQLAlchemy), Redis and outbound HTTP (httpx and httpx2: LLM and embedding calls, webhooks, MCP
servers) calls as CLIENT spans. An embedding batch shared by several jobs is an `embed` span under the first
caller's span, linked to the others' (`batch_span`). A trace starts only at a request or a job: a Redis or database
call with no parent (a worker's broker polling, its presence beat) is not sampled, whatever the sampler says of the
others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context, propagate, trace
from opentelemetry.trace import Link, SpanKind

from core.settings import get_otel_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

TRACER_NAME = "agentmem"
MESSAGE_OPTION = "trace_context"  # the W3C headers (traceparent, tracestate) in a job message's options
EXPORTERS = ("otlp", "console", "none")
_provider: TracerProvider | None = None


def exporter_names() -> list[str]:
    """The exporters the OTEL_* variables ask for; empty: tracing is off."""
    settings = get_otel_settings()
    if settings.sdk_disabled:
        return []
    if settings.traces_exporter is None or not settings.traces_exporter.strip():
        wanted = ["otlp"] if settings.exporter_otlp_endpoint or settings.exporter_otlp_traces_endpoint else []
    else:
        wanted = [name.strip().lower() for name in settings.traces_exporter.split(",") if name.strip()]
    return [name for name in wanted if name != "none"]


def enabled() -> bool:
    """Whether this process set tracing up."""
    return _provider is not None


def otlp_traces_endpoint() -> str:
    """Where OTLP/HTTP spans go: the traces endpoint as given, else the base endpoint's `/v1/traces`, else the
    specification's default, localhost:4318. An empty variable counts as unset (docker-compose.yml passes empty
    ones), which the exporter's own reading would take as a URL."""
    settings = get_otel_settings()
    if settings.exporter_otlp_traces_endpoint:
        return settings.exporter_otlp_traces_endpoint
    base = settings.exporter_otlp_endpoint or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def _exporter(name: str):
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Headers, timeout, compression and certificates: the exporter reads their OTEL_* variables itself.
        return OTLPSpanExporter(endpoint=otlp_traces_endpoint())
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    log.warning("OTEL_TRACES_EXPORTER names %r, which AgentMem has no exporter for (it has %s)", name,
                ", ".join(EXPORTERS))
    return None


def _entry_point_sampler(delegate):
    """A sampler that starts traces only at requests (SERVER) and jobs (CONSUMER), deciding the rest as `delegate`."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class EntryPoints(Sampler):
        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                          trace_state=None):
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid and kind not in (SpanKind.SERVER, SpanKind.CONSUMER):
                return SamplingResult(Decision.DROP)
            return delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"EntryPoints{{{delegate.get_description()}}}"

    return EntryPoints()


def setup_tracing(service: str, *, exporters: list[Any] | None = None) -> bool:
    """Set tracing up for this process if the OTEL_* variables ask for it (or `exporters` are given: tests);
    whether it is on. Instruments Redis and httpx clients and the database engines made from now on (core/db.py
    makes its engine lazily); the FastAPI app is instrumented by the API (`instrument_app`)."""
    global _provider
    if _provider is not None:
        return True
    if exporters is None:
        exporters = [e for e in map(_exporter, exporter_names()) if e is not None]
        if not exporters:
            return False
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": get_otel_settings().service_name or service})
    # The sampler the OTEL_TRACES_SAMPLER variables choose (parent-based always-on by default), for entry points.
    provider = TracerProvider(resource=resource)
    provider.sampler = _entry_point_sampler(provider.sampler)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = trace.get_tracer_provider()  # type: ignore[assignment]  (the first provider set stays)
    RedisInstrumentor().instrument(tracer_provider=_provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=_provider)
    HTTPX2ClientInstrumentor().instrument(tracer_provider=_provider)  # the openai and MCP SDKs' httpx fork
    # Its declared range stops below SQLAlchemy 2.1, which it works with: it hooks the engine events, whose API 2.1
    # kept (tests/integration/test_tracing.py sees the statements' spans).
    SQLAlchemyInstrumentor().instrument(tracer_provider=_provider, skip_dep_check=True)
    log.info("tracing on: service %s, exporters %s", service, ", ".join(type(e).__name__ for e in exporters))
    return True


def instrument_app(app) -> None:
    """Trace the app's requests (nothing when tracing is off); probes and the metrics scrape are left out."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider, excluded_urls="/healthz,/readyz,/metrics",
                                       exclude_spans=["receive", "send"])


@contextmanager
def batch_span(name: str, callers: list, attributes: dict[str, Any] | None = None) -> Iterator[None]:
    """A span for work done once for several callers (a batch of texts embedded for several jobs): the child of
    the first caller's context, linked to the others' spans, and current while the work runs (so its HTTP call is
    under it). `callers` are the contexts the callers had (None: not traced). Nothing when tracing is off."""
    known = [c for c in callers if c is not None]
    if _provider is None or not known:
        yield
        return
    links = [Link(context) for context in (trace.get_current_span(c).get_span_context() for c in known[1:])
             if context.is_valid]
    with tracer().start_as_current_span(name, context=known[0], links=links, attributes=attributes):
        yield


def current_context():
    """The caller's context, to hand to a `batch_span` run elsewhere (None while tracing is off)."""
    return otel_context.get_current() if _provider is not None else None


def tracer() -> trace.Tracer:
    """AgentMem's tracer (a no-op one while tracing is off)."""
    return trace.get_tracer(TRACER_NAME)


def inject_context() -> dict[str, str] | None:
    """The current span's W3C trace context as headers, to carry in a job's message; None without one."""
    if _provider is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def extract_context(carrier: dict[str, str] | None):
    """The context a message's carried headers continue (an empty one: a new trace)."""
    return propagate.extract(carrier or {})


def shutdown_tracing() -> None:
    """Send the spans still buffered and stop (a process's last act)."""
    if _provider is not None:
        _provider.shutdown()
