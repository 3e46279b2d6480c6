"""Redis clients, created lazily once per process: one for commands, one for blocking stream reads."""

from __future__ import annotations

from redis.asyncio import Redis

from core.settings import get_settings

_command_client: Redis | None = None
_stream_client: Redis | None = None
_redis_url: str | None = None


def set_redis_url(url: str) -> None:
    """Point this process at a Redis server (the embedded one's URL, or a test server)."""
    global _redis_url
    _redis_url = url


def redis_url() -> str:
    """The configured Redis URL; an embedded server's when `set_redis_url` was called."""
    url = _redis_url or get_settings().redis_url
    if not url:
        raise RuntimeError("no Redis URL: set AGENTMEM_REDIS_URL or start through `agentmem up`")
    return url


def get_redis() -> Redis:
    """Client for short commands: every call fails fast when Redis is unreachable."""
    global _command_client
    if _command_client is None:
        timeout = get_settings().redis_timeout_seconds
        _command_client = Redis.from_url(redis_url(), decode_responses=True, socket_timeout=timeout,
                                         socket_connect_timeout=timeout, health_check_interval=30)
    return _command_client


def configured_redis() -> Redis | None:
    """`get_redis()`, or None in a process given no Redis URL (unit tests): for what may be skipped without one."""
    if not (_redis_url or get_settings().redis_url):
        return None
    return get_redis()


def get_stream_redis() -> Redis:
    """Client for XREAD BLOCK: no read timeout (the BLOCK argument bounds each call)."""
    global _stream_client
    if _stream_client is None:
        timeout = get_settings().redis_timeout_seconds
        _stream_client = Redis.from_url(redis_url(), decode_responses=True, socket_timeout=None,
                                        socket_connect_timeout=timeout, max_connections=20_000)
    return _stream_client


async def close_redis() -> None:
    """Close both clients (lifespan shutdown, tests)."""
    global _command_client, _stream_client
    for client in (_command_client, _stream_client):
        if client is not None:
            await client.aclose()
    _command_client, _stream_client = None, None
