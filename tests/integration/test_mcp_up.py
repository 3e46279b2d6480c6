"""MCP both ways and documents under `agentmem up`, as a user runs them: a stdio and a streamable-HTTP MCP
server registered, tested and called; AgentMem's own `/mcp` and `agentmem mcp` driven by the SDK's client;
a PDF uploaded, found by meaning, and a corrupt one failing with nothing stored."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import httpx2
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.integration.test_up import Up
from tests.support import documents
from tests.support.sse import finish
from tests.support.stack import ROOT, free_port

SCRIPT = str(ROOT / "tests" / "support" / "mcp_servers.py")


def start_mcp_http(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, SCRIPT, "http", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the test MCP server did not start"
            time.sleep(0.1)


async def registered_and_called(client: httpx.AsyncClient, body: dict) -> tuple[dict, dict]:
    """Register an MCP server, run its test job and call its `add` tool; (test job, call job)."""
    server = await client.post("/api/v1/mcp/servers", json=body)
    assert server.status_code == 201, server.text
    server_id = server.json()["id"]
    tested = await finish(client, (await client.post(f"/api/v1/mcp/servers/{server_id}/test")).json()["id"], timeout=90)
    call = await client.post(f"/api/v1/mcp/servers/{server_id}/tools/add/call", json={"arguments": {"a": 19, "b": 23}})
    assert call.status_code == 202, call.text
    return tested, await finish(client, call.json()["id"], timeout=90)


async def test_mcp_both_ways_and_documents_under_agentmem_up():
    data_dir = Path(tempfile.mkdtemp(prefix="agentmem-up-mcp-", dir="/tmp"))
    port, mcp_port = free_port(), free_port()
    remote = start_mcp_http(mcp_port)
    # What an operator sets for this: where the stdio server's code lives, and the one internal address allowed.
    up = Up(data_dir, port, env={"AGENTMEM_MCP_STDIO_PATHS": f"{sys.prefix},{ROOT / 'tests' / 'support'}",
                                 "AGENTMEM_OUTBOUND_ALLOW": f"127.0.0.1:{mcp_port}"})
    api = f"http://127.0.0.1:{port}"
    try:
        up.wait_ready()
        key = up.printed_key()
        async with httpx.AsyncClient(base_url=api, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            # AgentMem as a client: a stdio server (sandboxed, run by the workers) and a streamable-HTTP one.
            for body in ({"name": "local", "transport": "stdio", "command": sys.executable, "args": [SCRIPT, "stdio"]},
                         {"name": "remote", "transport": "streamable_http", "url": f"http://127.0.0.1:{mcp_port}/mcp"}):
                tested, called = await registered_and_called(client, body)
                assert tested["status"] == "succeeded", tested
                assert tested["result"]["name"] == "agentmem-test-server"
                assert {"add", "echo", "hang"} <= set(tested["result"]["tools"])
                assert called["status"] == "succeeded" and called["result"]["structured"] == {"sum": 42}, called

            # Documents: a PDF found by meaning, a corrupt one failed with nothing stored.
            pdf = documents.pdf(["Opening hours.\n\nThe shop opens at nine.",
                                 "Refunds.\n\nCustomers get their money back within thirty days of buying."])
            good = await client.post("/api/v1/sources", data={"user_id": "up-docs"},
                                     files={"file": ("handbook.pdf", pdf, "application/octet-stream")})
            bad = await client.post("/api/v1/sources", data={"user_id": "up-docs"},
                                    files={"file": ("broken.pdf", documents.corrupt_pdf(), "application/pdf")})
            assert good.status_code == bad.status_code == 202, (good.text, bad.text)
            assert (await finish(client, good.json()["job_id"], timeout=120))["status"] == "succeeded"
            failed = await finish(client, bad.json()["job_id"], timeout=120)
            assert failed["status"] == "failed" and failed["error"]["code"] == "source_unreadable", failed
            assert (await client.get(f"/api/v1/sources/{bad.json()['id']}")).json()["memories"] == 0
            hits = (await client.post("/api/v1/memories/search", json={
                "query": "can I return something I bought?", "user_id": "up-docs", "top_k": 1})).json()["hits"]
            assert "thirty days" in hits[0]["memory"]["content"]
            where = hits[0]["memory"]["metadata"]  # a short document is one chunk, over both pages
            assert where["filename"] == "handbook.pdf" and where["page"] <= 2 <= where.get("page_end", where["page"])

        # AgentMem as a server: /mcp over Streamable HTTP with the printed key…
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=120))
        async with http, Client(streamable_http_client(f"{api}/mcp", http_client=http)) as mcp:
            added = await mcp.call_tool("add_memories", {"items": [{"content": "The user's cat is called Miso."}],
                                                         "user_id": "up-mcp", "wait_seconds": 60})
            assert not added.is_error and added.structured_content["status"] == "succeeded", added.content
        # …and `agentmem mcp` over stdio, as a desktop client starts it, finding what the other wrote.
        params = StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "mcp"], cwd=str(ROOT), env={
            "AGENTMEM_API_URL": api, "AGENTMEM_API_KEY": key, "PYTHONPATH": str(ROOT)})
        async with Client(params) as mcp:
            found = await mcp.call_tool("search_memories", {"query": "what pet does the user have?",
                                                            "user_id": "up-mcp"})
        assert not found.is_error, found.content
        assert json.loads(found.content[0].text)["hits"][0]["memory"]["content"] == "The user's cat is called Miso."
        code, alive = up.interrupt()
        assert code == 0 and alive == []
    finally:
        if up.proc.poll() is None:  # the test failed before its Ctrl-C: stop everything `up` started
            up.interrupt()
        remote.terminate()
        remote.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)
