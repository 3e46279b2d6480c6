"""A job's span in the worker: it continues the trace of whoever queued the job (the request's span, carried in
the message by core/queue.py) and holds the job's database, Redis and HTTP spans.

Dramatiq runs an async actor's coroutine on its event-loop thread, not on the worker thread that runs the
middleware hooks, so a context attached in `before_process_message` would not reach the coroutine. The span is
therefore opened in the hook (so it covers the whole processing, and ends with its outcome in
`after_process_message`) and made current inside the coroutine by a wrapper put around each async actor as it is
declared.
"""

from __future__ import annotations

import functools
import threading
from inspect import iscoroutinefunction

from dramatiq import Middleware
from dramatiq.asyncio import async_to_sync
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from core import tracing


class JobTracing(Middleware):
    """Open a CONSUMER span per message, parented by the trace context the message carries."""

    def __init__(self) -> None:
        self._spans: dict[str, trace.Span] = {}
        self._lock = threading.Lock()

    def after_declare_actor(self, broker, actor) -> None:
        original = getattr(actor.fn, "__wrapped__", None)
        if original is None or not iscoroutinefunction(original):
            return
        spans = self._spans

        @functools.wraps(original)
        async def traced(*args, **kwargs):
            span = spans.get(str(args[0])) if args else None
            if span is None:
                return await original(*args, **kwargs)
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                return await original(*args, **kwargs)

        actor.fn = async_to_sync(traced)

    def before_process_message(self, broker, message) -> None:
        parent = tracing.extract_context(message.options.get(tracing.MESSAGE_OPTION))
        span = tracing.tracer().start_span(
            f"job {message.actor_name}", context=parent, kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "dramatiq", "messaging.operation.type": "process",
                        "messaging.destination.name": message.queue_name,
                        "messaging.message.id": message.message_id, "agentmem.job.id": message.message_id,
                        "agentmem.job.kind": message.actor_name,
                        "agentmem.job.delivery": message.options.get("retries", 0) + 1})
        with self._lock:
            self._spans[message.message_id] = span

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        with self._lock:
            span = self._spans.pop(message.message_id, None)
        if span is None:
            return
        if exception is not None:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        span.end()

    def after_skip_message(self, broker, message) -> None:
        self.after_process_message(broker, message)

    def after_worker_shutdown(self, broker, worker) -> None:
        tracing.shutdown_tracing()  # the spans still buffered go out before the process ends
