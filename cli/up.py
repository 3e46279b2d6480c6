"""`agentmem up`: the whole system on one machine, supervised.

Starts the embedded servers when no URLs are configured, applies migrations, then runs the API,
N worker processes and the scheduler as child processes. A child that dies is restarted; Ctrl-C
stops every process this command started, then the embedded servers.
"""

from __future__ import annotations

import logging
import os
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


def run_up(port: int, workers: int, data_dir: Path | None) -> int:
    """Run everything until interrupted; returns the exit code."""
    settings = get_settings()
    data_dir = (data_dir or settings.data_dir).resolve()
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
        migrate = subprocess.run([sys.executable, "-m", "cli.main", "migrate"], env=env)
        if migrate.returncode != 0:
            log.error("migrations failed; not starting")
            return 1
        children = [Child("api", ["api", "--port", str(port)])]
        children += [Child(f"worker-{i + 1}", ["worker"]) for i in range(workers)]
        children.append(Child("scheduler", ["scheduler"]))
        for child in children:
            child.start(env)
        api_url = f"http://{settings.host}:{port}"
        if _wait_ready(api_url, timeout=120):
            print(f"\nAgentMem is ready.\n  API:  {api_url}\n  Docs: {api_url}/docs\n"
                  f"  Data: {data_dir}\nPress Ctrl-C to stop.\n", flush=True)
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
