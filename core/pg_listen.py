"""A PostgreSQL LISTEN on a connection of its own, kept open, with a flag that says whether it is.

A process caches what the database says (pipelines/accounts/key_cache.py) only while it is sure to
hear of every change: `listening` is true from the moment LISTEN succeeded until the connection is
lost or stops answering its health check; `on_reset` runs each time that changes, so what was cached
without the guarantee is dropped. The loop reconnects with a growing pause (up to 30 s) and never
raises: an outage means no caching, not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

HEALTH_CHECK_SECONDS = 5.0
MAX_PAUSE_SECONDS = 30.0


def plain_dsn(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+asyncpg://…`) as the DSN asyncpg takes."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


class PgListener:
    """LISTEN on `channel` at `dsn()`; `on_message(payload)` for each notification, `on_reset()` whenever
    `listening` changes (connected or lost)."""

    def __init__(self, dsn: Callable[[], str], channel: str, on_message: Callable[[str], None],
                 on_reset: Callable[[], None], *, connect_timeout: float = 5.0) -> None:
        self._dsn, self.channel = dsn, channel
        self._on_message, self._on_reset = on_message, on_reset
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task | None = None
        self._lost = asyncio.Event()
        self.listening = False

    def start(self) -> None:
        """Start the loop in the running event loop (once; later calls do nothing while it runs)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"listen-{self.channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._set_listening(False)

    def _set_listening(self, value: bool) -> None:
        if value != self.listening:
            self.listening = value
            self._on_reset()

    def _notified(self, _connection, _pid, _channel, payload: str) -> None:
        self._on_message(payload)

    async def _run(self) -> None:
        pause = 0.5
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self._dsn(), timeout=self._connect_timeout,
                                                   server_settings={"application_name": "agentmem-listen"})
                self._lost.clear()
                connection.add_termination_listener(lambda _c: self._lost.set())
                await connection.add_listener(self.channel, self._notified)
                self._set_listening(True)
                pause = 0.5
                while not self._lost.is_set():
                    try:
                        await asyncio.wait_for(self._lost.wait(), HEALTH_CHECK_SECONDS)
                    except TimeoutError:
                        # A connection cut without a FIN looks alive: ask it something.
                        await connection.fetchval("SELECT 1", timeout=self._connect_timeout)
                log.warning("LISTEN %s: connection lost; caching stops until it is back", self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: not listening, try again later
                log.warning("LISTEN %s unavailable (%s: %s); caching stops until it is back, retrying in %.1f s",
                            self.channel, type(exc).__name__, exc, pause)
            finally:
                self._set_listening(False)
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)
