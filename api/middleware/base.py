"""What every middleware here shares: pure ASGI over chosen scope types (others pass through), and a
hook on the first message of a response, where headers can still change and the status is known."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

OnStart = Callable[[dict], Awaitable[None]]


class Middleware:
    """A pure ASGI middleware that handles `scope_types` in `handle` and passes anything else through."""

    scope_types: tuple[str, ...] = ("http",)

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in self.scope_types:
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        raise NotImplementedError


def on_response_start(send, hook: OnStart):
    """`send`, calling `hook(message)` first on the `http.response.start` message."""

    async def send_after_hook(message) -> None:
        if message["type"] == "http.response.start":
            await hook(message)
        await send(message)

    return send_after_hook
