"""`agentmem up`: the whole system on one machine, supervised.

Starts the embedded servers when no URLs are configured, applies migrations, then runs the API,
N worker processes and the scheduler as child processes. A child that dies is restarted; Ctrl-C
stops every process this command started, then the embedded servers.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.embedded import EmbeddedPostgres, EmbeddedRedis
from core.settings import get_settings

log = logging.getLogger("agentmem.up")


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", *self.args], env=env,
                                        start_new_session=True)
        self.started_at = time.monotonic()

    def stop(self) -> None:
        # Signal the child's main process only: Dramatiq forwards SIGTERM to its worker processes,
        # and a second copy sent to the whole group makes them skip their clean shutdown.
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _wait_ready(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _local_secret(data_dir: Path) -> str:
    """The signing key of this data directory, made on first use (0600): tokens survive restarts."""
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _key_message(bootstrap: dict, org_name: str) -> str:
    if bootstrap.get("api_key"):
        return (f"  Org:  {org_name} ({bootstrap['organization_id']})\n"
                f"  Key:  {bootstrap['api_key']}\n"
                "        an owner API key, shown this once: store it now. Use it as\n"
                "        `Authorization: Bearer <key>` or `export AGENTMEM_API_KEY=<key>` for the CLI.\n")
    return (f"  Org:  {org_name} ({bootstrap['organization_id']}); its first key was printed on the first run.\n"
            f"        Another: agentmem admin create-key --org {org_name}\n")


def run_up(port: int, workers: int, data_dir: Path | None) -> int:
    """Run everything until interrupted; returns the exit code."""
    settings = get_settings()
    data_dir = (data_dir or settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Others may pass through (the embedded PostgreSQL's own system user must reach its directory)
    # but not list it; nothing inside is readable by them, sandboxed tools included.
    data_dir.chmod(0o711)
    env = dict(os.environ)
    servers: list = []
    stopping = {"flag": False}

    def request_stop(signum, frame) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    children: list[Child] = []
    try:
        if settings.database_url:
            env["AGENTMEM_DATABASE_URL"] = settings.database_url
        else:
            pg = EmbeddedPostgres(data_dir)
            env["AGENTMEM_DATABASE_URL"] = pg.start()
            servers.append(pg)
            log.info("embedded PostgreSQL at %s (data in %s)", pg.url, pg.pgdata)
        if settings.redis_url:
            env["AGENTMEM_REDIS_URL"] = settings.redis_url
        else:
            valkey = EmbeddedRedis(data_dir)
            env["AGENTMEM_REDIS_URL"] = valkey.start()
            servers.append(valkey)
            log.info("embedded Valkey at %s (data in %s)", valkey.url, valkey.dir)
        env["AGENTMEM_DATA_DIR"] = str(data_dir)
        if not settings.jwt_secret:
            env["AGENTMEM_JWT_SECRET"] = _local_secret(data_dir)
        migrate = subprocess.run([sys.executable, "-m", "cli.main", "migrate"], env=env)
        if migrate.returncode != 0:
            log.error("migrations failed; not starting")
            return 1
        boot = subprocess.run([sys.executable, "-m", "cli.main", "admin", "bootstrap"], env=env,
                              capture_output=True, text=True)
        if boot.returncode != 0:
            log.error("could not create the %s organization: %s", settings.bootstrap_org_name, boot.stderr.strip())
            return 1
        bootstrap = json.loads(boot.stdout)
        children = [Child("api", ["api", "--port", str(port)])]
        children += [Child(f"worker-{i + 1}", ["worker"]) for i in range(workers)]
        children.append(Child("scheduler", ["scheduler"]))
        for child in children:
            child.start(env)
        api_url = f"http://{settings.host}:{port}"
        if _wait_ready(api_url, timeout=120):
            print(f"\nAgentMem is ready.\n  API:  {api_url}\n  Docs: {api_url}/docs\n"
                  f"  Data: {data_dir}\n{_key_message(bootstrap, settings.bootstrap_org_name)}"
                  "Press Ctrl-C to stop.\n", flush=True)
        elif not stopping["flag"]:
            log.error("not ready after 120 s: see the logs above; %s/readyz says what is missing", api_url)
        while not stopping["flag"]:
            for child in children:
                code = child.process.poll() if child.process else None
                if code is not None and not stopping["flag"]:
                    child.restarts += 1
                    log.warning("%s exited with %s; restarting (restart %d)", child.name, code, child.restarts)
                    if time.monotonic() - child.started_at < 5:
                        time.sleep(2)  # a crash loop: don't spin
                    child.start(env)
            time.sleep(0.5)
        return 0
    finally:
        log.info("stopping %d processes", len(children))
        for child in children:
            child.stop()
        deadline = time.monotonic() + 20
        for child in children:
            child.wait_or_kill(deadline)
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the rest
                log.warning("stopping %s failed: %s", type(server).__name__, exc)
        log.info("stopped")
