"""Structured logging: one JSON object per line, carrying the request id and job id of the context."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)


# Query parameters that may carry a credential (stream tokens, a mistaken API key): never written to a log.
SECRET_QUERY = re.compile(r"([?&](?:token|api_key|access_token)=)[^&\s\"']+")


class RedactSecrets(logging.Filter):
    """Blank credentials in URLs whoever logs them: uvicorn logs each WebSocket's path with its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # malformed arguments: the handler reports those itself
            return True
        redacted = SECRET_QUERY.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """Render records as JSON with the context's request and job ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (rid := request_id_var.get()) is not None:
            entry["request_id"] = rid
        if (jid := job_id_var.get()) is not None:
            entry["job_id"] = jid
        for key in ("event", "kind", "status", "duration_ms", "route", "method", "status_code", "items"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ContextFormatter(logging.Formatter):
    """Human-readable lines for terminals, still with request and job ids."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ids = [f"{k}={v}" for k, v in (("req", request_id_var.get()), ("job", job_id_var.get())) if v]
        return f"{base} [{' '.join(ids)}]" if ids else base


def configure_logging(level: str = "INFO", json_lines: bool = True, process: str = "agentmem") -> None:
    """Install one handler on the root logger for this process."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ContextFormatter(f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries' chatter at start-up (one line per event loop, plugin, session manager) buries what matters.
    for noisy in ("httpx", "sentence_transformers", "uvicorn.access", "urllib3", "filelock", "alembic.runtime.plugins",
                  "dramatiq.middleware.asyncio", "mcp.server.streamable_http_manager"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
