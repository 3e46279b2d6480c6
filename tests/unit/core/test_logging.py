"""core/logging.py: log lines carry the request and job ids of their context."""

from __future__ import annotations

import json
import logging

from core.logging import JsonFormatter, RedactSecrets, job_id_var, request_id_var


def record(msg: str = "hello %s", *args, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("agentmem.test", logging.WARNING, __file__, 1, msg, args or ("world",), None)
    rec.__dict__.update(extra)
    return rec


def test_json_formatter_writes_one_json_object_with_the_context_ids():
    request_token, job_token = request_id_var.set("req-1"), job_id_var.set("job-1")
    try:
        line = JsonFormatter().format(record(kind="ingest_memories", duration_ms=12.5))
    finally:
        request_id_var.reset(request_token)
        job_id_var.reset(job_token)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["msg"] == "hello world"
    assert entry["level"] == "warning"
    assert entry["logger"] == "agentmem.test"
    assert (entry["request_id"], entry["job_id"]) == ("req-1", "job-1")
    assert (entry["kind"], entry["duration_ms"]) == ("ingest_memories", 12.5)


def test_json_formatter_leaves_out_ids_that_are_not_set():
    entry = json.loads(JsonFormatter().format(record()))
    assert "request_id" not in entry and "job_id" not in entry


def test_redaction_blanks_credentials_in_logged_urls_and_keeps_the_rest():
    # As uvicorn logs a WebSocket: the path with its query string, as an argument.
    rec = record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/api/v1/ws?token=eyJ.abc-_.x9&x=1")
    assert RedactSecrets().filter(rec) is True
    assert rec.getMessage() == '127.0.0.1:5000 - "WebSocket /api/v1/ws?token=[redacted]&x=1" [accepted]'
    other = record("GET %s", "/api/v1/jobs?api_key=amk_abc_def&access_token=t&tokens=3")
    RedactSecrets().filter(other)
    assert other.getMessage() == "GET /api/v1/jobs?api_key=[redacted]&access_token=[redacted]&tokens=3"


def test_redaction_leaves_records_without_credentials_untouched():
    rec = record("progress %d%%", 50)
    RedactSecrets().filter(rec)
    assert (rec.msg, rec.args, rec.getMessage()) == ("progress %d%%", (50,), "progress 50%")
