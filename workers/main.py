"""Entry module for `dramatiq workers.main`: configure logging, then declare the actors.

Dramatiq starts a worker process by importing this module, so its import is the process's start: that is
why it reads settings at import time, which no other module does but workers/actors.py.
"""

import hashlib
import os
import tempfile
from pathlib import Path

from core.embedder import separate_query_lane, take_turns_across_processes
from core.logging import configure_logging
from core.settings import get_settings
from pipelines.tools.workspace import check_workspaces

_settings = get_settings()
configure_logging(_settings.log_level, _settings.log_json, process="worker")
check_workspaces()  # refuses to start if another user owns the file tools' workspaces
separate_query_lane()  # agent turns' memory searches must not wait behind ingest batches
if _settings.embedding_take_turns:
    # One lock per deployment (its broker): two deployments on one machine (a test run beside `agentmem up`,
    # a niced benchmark) must not make each other's workers wait for their model calls.
    _deployment = hashlib.sha256((_settings.redis_url or "").encode()).hexdigest()[:12]
    take_turns_across_processes(Path(tempfile.gettempdir()) / f"agentmem-embedder-{os.getuid()}-{_deployment}.lock")

from workers import actors  # noqa: E402,F401  (declares the actors on the broker)
