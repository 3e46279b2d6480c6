"""core/tracing.py: what the OTEL_* variables turn on, and which spans may start a trace."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from core import tracing
from core.settings import get_otel_settings

OTEL = ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME")


@pytest.fixture
def otel(monkeypatch):
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    get_otel_settings.cache_clear()

    def set_(**variables: str) -> list[str]:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        get_otel_settings.cache_clear()
        return tracing.exporter_names()

    yield set_
    get_otel_settings.cache_clear()


def test_nothing_is_traced_without_a_variable_saying_where_spans_go(otel):
    assert otel() == []


@pytest.mark.parametrize("variables, exporters", [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
    ({"OTEL_TRACES_EXPORTER": "", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}, []),  # compose's empty defaults
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
])
def test_the_standard_variables_choose_the_exporters(otel, variables, exporters):
    assert otel(**variables) == exporters


@pytest.mark.parametrize("variables, endpoint", [
    ({}, "http://localhost:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"}, "http://jaeger:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, "http://localhost:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/traces"},
     "http://b/traces"),
])
def test_spans_go_to_the_traces_endpoint_or_the_base_endpoints_path(otel, variables, endpoint):
    otel(**variables)
    assert tracing.otlp_traces_endpoint() == endpoint


def test_without_tracing_a_message_carries_no_context(otel):
    assert not tracing.enabled()
    assert tracing.inject_context() is None


def _parent(valid: bool):
    if not valid:
        return None
    span = NonRecordingSpan(SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=TraceFlags(1)))
    return trace.set_span_in_context(span)


@pytest.mark.parametrize("kind, has_parent, sampled", [
    (SpanKind.SERVER, False, True),     # a request starts a trace
    (SpanKind.CONSUMER, False, True),   # so does a job
    (SpanKind.CLIENT, False, False),    # broker polling, presence beats: never alone
    (SpanKind.INTERNAL, False, False),
    (SpanKind.CLIENT, True, True),      # a statement inside a request or a job
])
def test_only_requests_and_jobs_start_traces(kind, has_parent, sampled):
    sampler = tracing._entry_point_sampler(ALWAYS_ON)
    result = sampler.should_sample(_parent(has_parent), trace_id=7, name="span", kind=kind)
    assert (result.decision == Decision.RECORD_AND_SAMPLE) is sampled
