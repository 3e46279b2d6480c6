"""Real processes for integration tests: PostgreSQL + pgvector, Redis, model server, API, workers.

With AGENTMEM_TEST_DATABASE_URL / AGENTMEM_TEST_REDIS_URL set, those servers are used; otherwise
the embedded servers are started in a temporary directory, as `agentmem up` would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.servers import EmbeddedPostgres, EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    """Wait until `url` answers 200, failing early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s" + (f":\n{proc.tail()}" if proc else ""))


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file ("" if there is none)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass
class Proc:
    """A child process with its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    popen: subprocess.Popen = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.log_dir / f"{self.name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=ROOT, start_new_session=True)

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


@dataclass
class Services:
    database_url: str
    redis_url: str
    data_dir: Path
    postgres: EmbeddedPostgres | None = None  # None: AGENTMEM_TEST_DATABASE_URL's server
    valkey: EmbeddedRedis | None = None

    def kill(self, server: EmbeddedPostgres | EmbeddedRedis) -> None:
        """SIGKILL an embedded server, as the OOM killer would, and reap it; `server.start()` brings
        it back on the same port with the same data."""
        assert server.process is not None, "only a server these tests started can be killed"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)

    def servers(self) -> list[tuple[EmbeddedPostgres | EmbeddedRedis, Path]]:
        """The embedded servers these tests started, each with its log file."""
        return [(server, log) for server, log in ((self.postgres, self.postgres and self.postgres.log_path),
                                                  (self.valkey, self.valkey and self.valkey.dir / "valkey.log"))
                if server is not None]

    def stop(self) -> None:
        for server in (self.valkey, self.postgres):
            if server is not None:
                server.stop()


def start_services() -> Services:
    """Real PostgreSQL with pgvector and a real Redis-compatible server."""
    from core.servers import EmbeddedPostgres, EmbeddedRedis

    # Not under /root: the embedded PostgreSQL runs as an unprivileged system user when we are root.
    data_dir = Path(tempfile.mkdtemp(prefix="agentmem-test-", dir="/tmp"))
    services = Services(os.environ.get("AGENTMEM_TEST_DATABASE_URL", ""),
                        os.environ.get("AGENTMEM_TEST_REDIS_URL", ""), data_dir)
    if not services.database_url:
        services.postgres = EmbeddedPostgres(data_dir)
        services.database_url = services.postgres.start()
    if not services.redis_url:
        services.valkey = EmbeddedRedis(data_dir)
        services.redis_url = services.valkey.start()
    return services


TEST_JWT_SECRET = "integration-tests-signing-key-0123456789abcdef"

# Settings that make failure paths quick to exercise; production defaults are in core/settings.py.
TEST_SETTINGS = {
    "AGENTMEM_JOB_LEASE_SECONDS": "4",
    "AGENTMEM_BROKER_HEARTBEAT_TIMEOUT_MS": "6000",
    "AGENTMEM_BROKER_MAINTENANCE_CHANCE": "1000000",
    "AGENTMEM_INGEST_CHUNK_SIZE": "8",
    "AGENTMEM_SOURCE_MAX_BYTES": "1048576",  # an oversized upload in a test is 1 MiB, not 25
    "AGENTMEM_JOB_MAX_RETRIES": "2",
    "AGENTMEM_JOB_MIN_BACKOFF_MS": "200",
    "AGENTMEM_JOB_MAX_BACKOFF_MS": "1000",
    "AGENTMEM_SSE_HEARTBEAT_SECONDS": "1",
    "AGENTMEM_STALE_QUEUED_SECONDS": "1",
    "AGENTMEM_PROGRESS_MIN_INTERVAL_MS": "0",
    "AGENTMEM_WORKER_THREADS": "4",
    "AGENTMEM_PASSAGE_EMBEDDING": "true",  # the passage tests need them; off by default (README, Search)
    "AGENTMEM_LOG_JSON": "true",
    "AGENTMEM_JWT_SECRET": TEST_JWT_SECRET,
    # Webhook deliveries: a few quick attempts, and a webhook disabled after two failed deliveries.
    "AGENTMEM_WEBHOOK_MAX_ATTEMPTS": "3",
    "AGENTMEM_WEBHOOK_MIN_BACKOFF_MS": "200",
    "AGENTMEM_WEBHOOK_MAX_BACKOFF_MS": "1000",
    "AGENTMEM_WEBHOOK_TIMEOUT_SECONDS": "5",
    "AGENTMEM_WEBHOOK_DISABLE_AFTER_FAILURES": "2",
    # Default schedules would be installed for every test organization by any scheduler pass, and an hourly
    # one could come due mid-session; tests/integration/test_schedules.py installs them itself.
    "AGENTMEM_SCHEDULE_DEFAULTS": "false",
}


@dataclass
class Stack:
    """API + workers against the services, embedding through the tests' OpenAI-compatible server."""

    services: Services
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    api_url: str = ""
    model_url: str = ""
    mcp_port: int = 0  # for the tests' streamable-HTTP MCP server: allowed by the outbound policy
    webhook_port: int = 0  # for the tests' webhook receiver: allowed by the outbound policy too

    def start(self, workers: int = 2, extra_env: dict[str, str] | None = None) -> Stack:
        """Start the model server, the API and `workers` workers; `extra_env` is added to their settings (its
        AGENTMEM_OUTBOUND_ALLOW entries to the model server's)."""
        extra = dict(extra_env or {})
        base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")}
        model_port, self.mcp_port, self.webhook_port = free_port(), free_port(), free_port()
        self.model_url = f"http://127.0.0.1:{model_port}"
        self.env = base | TEST_SETTINGS | {
            "AGENTMEM_DATABASE_URL": self.services.database_url,
            "AGENTMEM_REDIS_URL": self.services.redis_url,
            "AGENTMEM_DATA_DIR": str(self.services.data_dir),
            "AGENTMEM_EMBEDDING_PROVIDER": "openai",
            "AGENTMEM_EMBEDDING_BASE_URL": self.model_url + "/v1",
            "AGENTMEM_EMBEDDING_API_KEY": "test-key",
            # The tests' model server and MCP server are the internal addresses organizations' URLs may use.
            "AGENTMEM_OUTBOUND_ALLOW": ",".join(filter(None, [f"127.0.0.1:{model_port}", f"127.0.0.1:{self.mcp_port}",
                                                              f"127.0.0.1:{self.webhook_port}",
                                                              extra.pop("AGENTMEM_OUTBOUND_ALLOW", "")])),
            # What the tests' stdio MCP server needs to see in the sandbox: the SDK, and its script.
            "AGENTMEM_MCP_STDIO_PATHS": f"{sys.prefix},{ROOT / 'tests' / 'support'}",
            "PYTHONUNBUFFERED": "1",
        } | extra
        # The model server embeds with the bundled model whatever model name (and dimension) the stack is
        # configured to ask for.
        served = {k: v for k, v in self.env.items() if k not in ("AGENTMEM_EMBEDDING_MODEL", "AGENTMEM_EMBEDDING_DIM")}
        model = self.spawn("model-server", ["-m", "tests.support.openai_server", "--port", str(model_port)], served)
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        api = self.spawn("api", ["-m", "cli.main", "api", "--port", str(api_port)])
        for i in range(workers):
            self.start_worker(f"worker-{i + 1}")
        wait_http(self.model_url + "/health", 120, model)
        wait_http(self.api_url + "/readyz", 120, api)
        return self

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, [sys.executable, *args], env or self.env, self.log_dir)
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str) -> Proc:
        return self.spawn(name, ["-m", "cli.main", "worker"])

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run an `agentmem` subcommand to completion with the stack's environment."""
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env or self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def logs(self) -> str:
        """The tail of every process's log, the embedded servers' included."""
        tails = [f"--- {name} ---\n{proc.tail(60)}" for name, proc in self.procs.items()]
        tails += [f"--- {server.name} ({log}) ---\n{tail(log, 30)}" for server, log in self.services.servers()]
        return "\n".join(tails)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
