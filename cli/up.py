"""`agentmem up`: the whole system on one machine, supervised.

Starts the embedded servers when no URLs are configured, applies migrations, then runs the API,
N worker processes and the scheduler as child processes. Everything it started is watched: a child
or an embedded server that dies is started again (a server on the same port with the same data),
after a delay that doubles while it keeps dying. Ctrl-C stops every process this command started,
then the embedded servers.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.servers import EmbeddedPostgres, EmbeddedRedis
from core.settings import get_settings

log = logging.getLogger("agentmem.up")

TICK_SECONDS = 0.25


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", *self.args], env=self.env,
                                        start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ended(self) -> str:
        code = self.process.returncode if self.process else None
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with {code}"

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


@dataclass
class Watch:
    """Restarts one supervised thing when it dies: at once after a healthy run, then after a delay
    that doubles (1 s up to 30 s) while it keeps dying soon after starting, so a crash loop can't spin."""

    name: str
    start: Callable[[], object]
    alive: Callable[[], bool]
    ended: Callable[[], str]
    pid: Callable[[], int | None]
    where: Callable[[], str] = lambda: ""
    first_delay: float = 1.0
    max_delay: float = 30.0
    healthy_after: float = 30.0
    restarts: int = 0
    delay: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    due: float | None = None

    def _schedule(self, now: float) -> float:
        healthy = now - self.started_at >= self.healthy_after
        self.delay = 0.0 if healthy else min(self.max_delay, max(self.first_delay, self.delay * 2))
        self.due = now + self.delay
        return self.delay

    def check(self) -> None:
        """Notice a death (and reap it), and start it again when its delay is over."""
        now = time.monotonic()
        if self.due is None:
            if self.alive():
                return
            self.restarts += 1
            pid, ended = self.pid(), self.ended()
            delay = self._schedule(now)
            log.warning("%s (pid %s) %s; restarting it%s%s (restart %d)", self.name, pid, ended,
                        f" in {delay:g} s" if delay else "", self.where(), self.restarts)
        if now < self.due:
            return
        self.started_at = time.monotonic()
        try:
            self.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # still down: retry, slower each time
            delay = self._schedule(time.monotonic())
            log.error("%s did not start: %s; next try in %g s", self.name, exc, delay)
            return
        self.due = None
        log.info("%s is running again%s (pid %s)", self.name, self.where(), self.pid())


def server_watch(server: EmbeddedPostgres | EmbeddedRedis, data: Path) -> Watch:
    """A watch that restarts an embedded server on its port, with its data."""
    return Watch(f"embedded {server.name}", server.start, server.alive, server.ended, lambda: server.pid,
                 where=lambda: f" on port {server.port} with data in {data}")


def child_watch(child: Child) -> Watch:
    """A watch that restarts a child process with its arguments and environment."""
    return Watch(child.name, child.start, child.alive, child.ended,
                 lambda: child.process.pid if child.process else None)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
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


def run_up(port: int, workers: int, data_dir: Path | None, as_json: bool = False) -> int:
    """Run everything until interrupted; returns the exit code."""
    settings = get_settings()
    data_dir = (data_dir or settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Others may pass through (the embedded PostgreSQL's own system user must reach its directory)
    # but not list it; nothing inside is readable by them, sandboxed tools included.
    data_dir.chmod(0o711)
    env = dict(os.environ)
    servers: list[EmbeddedPostgres | EmbeddedRedis] = []
    watches: list[Watch] = []
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
            servers.append(pg)
            env["AGENTMEM_DATABASE_URL"] = pg.start()
            watches.append(server_watch(pg, pg.pgdata))
            log.info("embedded PostgreSQL at %s (data in %s)", pg.url, pg.pgdata)
        if settings.redis_url:
            env["AGENTMEM_REDIS_URL"] = settings.redis_url
        else:
            valkey = EmbeddedRedis(data_dir)
            servers.append(valkey)
            env["AGENTMEM_REDIS_URL"] = valkey.start()
            watches.append(server_watch(valkey, valkey.dir))
            log.info("embedded Valkey at %s (data in %s)", valkey.url, valkey.dir)
        env["AGENTMEM_DATA_DIR"] = str(data_dir)
        if "log_json" not in settings.model_fields_set:
            # One terminal, one format: every process writes the same plain lines (JSON when asked for).
            env["AGENTMEM_LOG_JSON"] = "false"
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
        children = [Child("api", ["api", "--port", str(port)], env)]
        children += [Child(f"worker-{i + 1}", ["worker"], env) for i in range(workers)]
        children.append(Child("scheduler", ["scheduler"], env))
        for child in children:
            child.start()
            watches.append(child_watch(child))
        api_url = f"http://{settings.host}:{port}"
        announce_by: float | None = time.monotonic() + 120
        while not stopping["flag"]:
            # Servers come first: a child that died with its database is restarted against a live one.
            for watch in watches:
                if stopping["flag"]:
                    break
                watch.check()
            if announce_by is not None and _ready(api_url):
                announce_by = None
                if as_json:
                    print(json.dumps({"ready": True, "api_url": api_url, "docs_url": f"{api_url}/docs",
                                      "console_url": f"{api_url}/console/",
                                      "data_dir": str(data_dir), "organization": settings.bootstrap_org_name,
                                      "api_key": bootstrap.get("api_key")}), flush=True)
                else:
                    print(f"\nAgentMem is ready.\n  API:  {api_url}\n  Docs: {api_url}/docs\n"
                          f"  Console: {api_url}/console/\n"
                          f"  Data: {data_dir}\n{_key_message(bootstrap, settings.bootstrap_org_name)}"
                          "Press Ctrl-C to stop.\n", flush=True)
            elif announce_by is not None and time.monotonic() > announce_by:
                announce_by = None
                log.error("not ready after 120 s: see the logs above; %s/readyz says what is missing", api_url)
            time.sleep(TICK_SECONDS)
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
                log.warning("stopping embedded %s failed: %s", server.name, exc)
        log.info("stopped")
