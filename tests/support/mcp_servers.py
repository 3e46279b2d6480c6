"""MCP servers for the tests, built with the official SDK: `python mcp_servers.py stdio` or
`python mcp_servers.py http --port N`.

Run as a script (it imports nothing of AgentMem): the stdio one runs inside the tool sandbox, which
shows it only this file and the interpreter. Tools: `echo`, `add`, `fail` (an error result),
`hang` (never answers), `die` (kills its own process mid-call), `whoami` (the env key `MCP_TEST_SECRET`
and the working directory it runs in), `slow` (reports progress, then answers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

NAME = "agentmem-test-server"
VERSION = "1.2.3"


def build(transport: str) -> MCPServer:
    server = MCPServer(NAME, version=VERSION, instructions=f"test server over {transport}")

    @server.tool(description="Echo the text back.", annotations=ToolAnnotations(read_only_hint=True))
    def echo(text: str) -> str:
        return f"{transport}: {text}"

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @server.tool(description="Always fails.")
    def fail(reason: str = "broken") -> str:
        raise ToolError(f"failing on purpose: {reason}")

    @server.tool(description="Never answers.")
    async def hang() -> str:
        await asyncio.sleep(3600)
        return "unreachable"

    @server.tool(description="Kills its own process mid-call.")
    def die() -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        return "unreachable"

    @server.tool(description="What the process sees: a secret from its environment, its uid and directory.")
    def whoami() -> dict[str, object]:
        return {"secret": os.environ.get("MCP_TEST_SECRET"), "uid": os.getuid(), "cwd": os.getcwd(),
                "pid": os.getpid()}

    @server.tool(description="Report progress three times, then answer.")
    async def slow(ctx: Context) -> str:
        for step in range(3):
            await ctx.report_progress(step + 1, 3, f"step {step + 1}")
            await asyncio.sleep(0.05)
        return "done"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "stdio":
        build("stdio").run()
    else:
        build("http").run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
