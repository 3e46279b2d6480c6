"""Agent turns: what the platform adds to an LLM that answers at once, from POST to first token and per tool step.

    python bench/agent.py [--turns 60] [--concurrent-turns 240] [--concurrency 20] [--tool-every 3]
                          [--workers 2] [--env AGENTMEM_X=Y ...]

The tests' OpenAI-compatible server (tests/support/openai_server.py) is the organization's default LLM: it
streams its answer word by word with no delay, and answers a tool turn's first call with a scripted
`memory_search` call. `agentmem up` runs with `--workers` worker processes. Each client is one conversation
at a time (a new one every `--conversation-turns` turns, same user, whose memories are seeded first), and
posts its next message when the last turn ended: `?stream=true`, so the POST's answer is the turn's events.
Every `--tool-every`th turn is a tool turn (model → memory_search → model), the others plain (model once).

- first token (plain turns): POST sent → first `token` event read by the client.
- tool step (tool turns): the `tool_call` event published → the next `token` event read by the client.

Both are split into stages that add up: the event `ts` fields (publish times, same machine and clock as
the client), the job row's `started_at`, and the `timings` of each `usage` event (pipelines/conversations/
turn.py). Phase 1 runs one conversation, phase 2 `--concurrency` at once; each after unmeasured warm-up.
Exits non-zero if a turn fails or times out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentmem.sse import aevents  # noqa: E402
from bench.common import (  # noqa: E402
    REPO,
    BenchError,
    JobWatcher,
    System,
    fetch_jobs,
    finish_run,
    free_port,
    machine_load,
    percentile,
    run_against,
    synthetic_corpus,
    table,
)
from core.timing import parse_header  # noqa: E402

FIRST_TOKEN = ("enqueue: POST → queued published", "pickup: queued → claim began (broker)",
               "claim: claim → started published", "setup: rows of the turn", "recall: memory search",
               "checkpoint: progress row", "context build", "LLM: request → first delta",
               "other worker (token publish, …)", "delivery: token published → read")
TOOL_STEP = ("tool run: tool_call → tool_result published", "checkpoint: progress row", "context build",
             "LLM: request → first delta", "other worker (message event, token publish, …)",
             "delivery: token published → read")
SEARCH_STAGES = ("scope", "embed", "embed_wait", "text", "vector", "feedback", "load")


class ModelServer:
    """tests/support/openai_server.py on a free port, in a session of its own; stopped by its pid."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.openai_server", "--port", str(self.port)],
                                        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the model server exited with {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise BenchError(f"the model server did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Turn:
    """One turn as its client saw it: when it posted, and each event's type, publish time, receive time, data."""

    kind: str  # plain | tool
    sent: float = 0.0
    headers: float = 0.0
    server_timing: dict[str, float] = field(default_factory=dict)
    events: list[tuple[str, float, float, dict]] = field(default_factory=list)
    job_id: str = ""
    status: str = ""
    error: str = ""

    def first(self, kind: str, after: float = 0.0, step: int | None = None) -> tuple[float, float, dict] | None:
        for event, ts, received, data in self.events:
            if event == kind and ts >= after and (step is None or data.get("step") == step):
                return ts, received, data
        return None

    def usage(self, step: int) -> dict[str, float]:
        found = self.first("usage", step=step)
        return found[2].get("timings") or {} if found else {}


def first_token_stages(turn: Turn, row: dict) -> dict[str, float] | None:
    """The stages (seconds) from POST to first token of a plain turn; None when its events are incomplete."""
    queued, started, token = turn.first("queued"), turn.first("started"), turn.first("token")
    times = turn.usage(1)
    if not (queued and started and token and row.get("started_at") and "llm_first_token" in times):
        return None
    claim_began = datetime.fromisoformat(row["started_at"]).timestamp()
    ms = {k: v / 1000 for k, v in times.items()}
    worker = [ms.get("setup", 0) - ms.get("recall", 0), ms.get("recall", 0), ms.get("checkpoint", 0),
              ms.get("context", 0), ms["llm_first_token"]]
    parts = [queued[0] - turn.sent, claim_began - queued[0], started[0] - claim_began, *worker,
             token[0] - started[0] - sum(worker), token[1] - token[0]]
    return {**dict(zip(FIRST_TOKEN, parts, strict=True)), "total": token[1] - turn.sent}


def tool_step_stages(turn: Turn) -> dict[str, float] | None:
    """The stages (seconds) from a tool call's event to the next token read; None when incomplete."""
    call, result = turn.first("tool_call"), turn.first("tool_result")
    token = turn.first("token", after=result[0]) if result else None
    times = turn.usage(2)
    if not (call and result and token and "llm_first_token" in times):
        return None
    ms = {k: v / 1000 for k, v in times.items()}
    worker = [ms.get("checkpoint", 0), ms.get("context", 0), ms["llm_first_token"]]
    parts = [result[0] - call[0], *worker, token[0] - result[0] - sum(worker), token[1] - token[0]]
    return {**dict(zip(TOOL_STEP, parts, strict=True)), "total": token[1] - call[0]}


class Bench:
    """The organization's agent and users, and the clients that talk to it."""

    def __init__(self, args: argparse.Namespace, api: httpx.AsyncClient, model: httpx.AsyncClient) -> None:
        self.args, self.api, self.model = args, api, model
        self.agent_id = ""
        self.sentences = synthetic_corpus(2000, seed=11)

    async def setup(self, users: list[str], model_url: str) -> None:
        """The LLM config, the agent, and `--memories` memories for each user (embedded before any turn)."""
        response = await self.api.post("/api/v1/llm/configs", json={
            "name": "instant", "provider": "openai_compatible", "model": "test-chat", "base_url": model_url + "/v1",
            "api_key": "k", "is_default": True, **({"max_concurrency": self.args.llm_concurrency}
                                                  if self.args.llm_concurrency else {})})
        if response.status_code != 201:
            raise BenchError(f"POST /api/v1/llm/configs answered {response.status_code}: {response.text[:300]}")
        response = await self.api.post("/api/v1/agents", json={
            "name": "bench agent", "system": "You are a helpful assistant. Answer briefly, and use memory_search "
                                             "when the user asks about something they told you before."})
        if response.status_code != 201:
            raise BenchError(f"POST /api/v1/agents answered {response.status_code}: {response.text[:300]}")
        self.agent_id = response.json()["id"]
        job_ids = []
        async with JobWatcher(self.api) as watcher:
            for n, user in enumerate(users):
                texts = self.sentences[n * self.args.memories:(n + 1) * self.args.memories]
                response = await self.api.post("/api/v1/memories", json={
                    "items": [{"content": t, "user_id": user} for t in texts]})
                if response.status_code != 202:
                    raise BenchError(f"POST /api/v1/memories answered {response.status_code}: {response.text[:300]}")
                job_ids.append(response.json()["id"])
            await watcher.wait(job_ids, time.monotonic() + 300)

    async def conversation(self, user: str) -> str:
        response = await self.api.post(f"/api/v1/agents/{self.agent_id}/conversations", json={"user_id": user})
        if response.status_code != 201:
            raise BenchError(f"creating a conversation answered {response.status_code}: {response.text[:300]}")
        return response.json()["id"]

    async def turn(self, conversation_id: str, n: int) -> Turn:
        """Post one message with ?stream=true and read its events to the end."""
        turn = Turn("tool" if self.args.tool_every and n % self.args.tool_every == self.args.tool_every - 1
                    else "plain")
        text = self.sentences[(n * 7) % len(self.sentences)] + " What do you make of that?"
        if turn.kind == "tool":
            mark = f"zq{uuid.uuid4().hex[:12]}"
            text = f"{mark} {text}"
            response = await self.model.post("/scripts", json={"marker": mark, "responses": [
                {"tool_calls": [{"name": "memory_search", "arguments": {"query": text.split(".")[0][15:]}}]},
                {"content": "From what you told me before, " + text[15:]}]})
            response.raise_for_status()
        try:
            async with asyncio.timeout(self.args.turn_timeout):
                turn.sent = time.time()
                async with self.api.stream("POST", f"/api/v1/conversations/{conversation_id}/messages",
                                           params={"stream": "true"}, json={"content": text}) as response:
                    turn.headers = time.time()
                    if response.status_code != 200:
                        turn.status, turn.error = "http", f"{response.status_code}: {(await response.aread())[:200]}"
                        return turn
                    turn.job_id = response.headers.get("x-job-id", "")
                    turn.server_timing = parse_header(response.headers.get("server-timing", ""))
                    async for sse in aevents(response):
                        received = time.time()
                        payload = sse.json()
                        if sse.event == "error":
                            turn.status, turn.error = "error", str(payload)[:200]
                            return turn
                        turn.events.append((sse.event, payload.get("ts", 0.0), received, payload.get("data") or {}))
                        if sse.event in ("succeeded", "failed", "cancelled"):
                            turn.status = sse.event
                            if sse.event != "succeeded":
                                turn.error = str(payload.get("data", {}).get("error"))[:200]
                            return turn
            turn.status, turn.error = "cut", "the stream ended before the turn did"
        except TimeoutError:
            turn.status, turn.error = "timeout", f"no end within {self.args.turn_timeout:g} s"
        except httpx.HTTPError as exc:
            turn.status, turn.error = "transport", repr(exc)[:200]
        return turn

    async def client(self, user: str, start: int, warmup: int, turns: int, go: asyncio.Barrier) -> list[Turn]:
        """One user's conversations: `warmup` unmeasured turns, wait for every client, then `turns` measured."""
        out: list[Turn] = []
        conversation_id = ""
        for i in range(warmup + turns):
            if i == warmup:
                await go.wait()
            if i % self.args.conversation_turns == 0:
                conversation_id = await self.conversation(user)
            turn = await self.turn(conversation_id, start + i)
            if i < warmup and turn.status != "succeeded":
                raise BenchError(f"a warm-up turn did not succeed: {turn.status} {turn.error}")
            if i >= warmup:
                out.append(turn)
        if turns == 0:
            await go.wait()
        return out

    async def phase(self, users: list[str], turns: int, warmup: int) -> dict:
        """Every user's client at once; turns split between them; the wall time of the measured part."""
        go = asyncio.Barrier(len(users) + 1)
        share = [turns // len(users) + (1 if i < turns % len(users) else 0) for i in range(len(users))]
        tasks = [asyncio.create_task(self.client(user, 1000 * i, warmup, share[i], go))
                 for i, user in enumerate(users)]
        waiting = asyncio.create_task(go.wait())
        done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:  # a client failed during warm-up
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            waiting.cancel()
            for task in done:
                task.result()
            raise BenchError("a client ended during warm-up")
        started = time.monotonic()
        results = await asyncio.gather(*tasks)
        wall = time.monotonic() - started
        measured = [t for r in results for t in r]
        rows = await fetch_jobs(self.api, [t.job_id for t in measured if t.job_id])
        return {"turns": measured, "rows": rows, "wall": wall, "clients": len(users)}


def stage_table(samples: list[dict[str, float]], names: tuple[str, ...], total_label: str) -> str:
    """p50, p99 and mean of each stage and of the total (ms); the mean's share of the mean total."""
    total_mean = sum(s["total"] for s in samples) / len(samples)
    rows = []
    for name in (*names, "total"):
        values = [s[name] * 1000 for s in samples]
        mean = sum(values) / len(values)
        rows.append([total_label if name == "total" else name, f"{percentile(values, 50):.1f}",
                     f"{percentile(values, 99):.1f}", f"{mean:.1f}", f"{100 * mean / (total_mean * 1000):.0f}%"])
    return table(["stage", "p50 ms", "p99 ms", "mean ms", "share"], rows)


def medians(dicts: list[dict[str, float]], names: tuple[str, ...]) -> str:
    parts = [f"{name} {percentile([d[name] for d in dicts if name in d], 50):.1f}"
             for name in names if any(name in d for d in dicts)]
    return ", ".join(parts) or "none"


def report(name: str, result: dict) -> tuple[list[str], dict]:
    """Print a phase's figures; returns (problems, headline figures)."""
    turns, rows, wall = result["turns"], result["rows"], result["wall"]
    failed = [t for t in turns if t.status != "succeeded"]
    plain = [s for t in turns if t.kind == "plain" and t.status == "succeeded"
             and (s := first_token_stages(t, rows.get(t.job_id, {}))) is not None]
    tools = [s for t in turns if t.kind == "tool" and t.status == "succeeded"
             and (s := tool_step_stages(t)) is not None]
    ok = [t for t in turns if t.status == "succeeded"]
    print(f"\n=== {name}: {len(turns)} turns ({Counter(t.kind for t in turns)}) from {result['clients']} "
          f"client(s) in {wall:.1f} s: {len(ok) / wall:.2f} turns/s; {len(failed)} failed ===")
    problems = [f"{name}: {len(failed)} turn(s) failed, e.g. {t.status} {t.error}" for t in failed[:1]]
    head = {"turns_per_s": len(ok) / wall, "failed": len(failed)}
    if plain:
        print(f"\nfirst token, {len(plain)} plain turns (POST sent → first token read):")
        print(stage_table(plain, FIRST_TOKEN, "POST → first token"))
        head.update(p50=percentile([s["total"] for s in plain], 50) * 1000,
                    p99=percentile([s["total"] for s in plain], 99) * 1000)
        print("  recall's search stages, median ms: " + medians([t.usage(1) for t in turns if t.kind == "plain"],
                                                               SEARCH_STAGES))
        print("  the POST's Server-Timing (until its stream began), median ms: "
              + medians([t.server_timing for t in turns if t.kind == "plain"],
                      ("auth", "rate", "quota", "commit", "send", "app")))
    if tools:
        print(f"\ntool step, {len(tools)} tool turns (tool_call published → next token read):")
        print(stage_table(tools, TOOL_STEP, "tool_call → next token"))
        print("  within the tool run, median ms: " + medians([t.usage(2) for t in turns if t.kind == "tool"],
                                                            ("checkpoint_tools", *SEARCH_STAGES, "commit")))
        head.update(tool_p50=percentile([s["total"] for s in tools], 50) * 1000,
                    tool_p99=percentile([s["total"] for s in tools], 99) * 1000)
    whole = [t.events[-1][2] - t.sent for t in ok]
    runs = [(datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"])).total_seconds()
            for r in rows.values() if r.get("finished_at") and r.get("started_at")]
    print(f"\nwhole turn, POST → terminal event read: p50 {percentile(whole, 50) * 1000:.0f} ms, p99 "
          f"{percentile(whole, 99) * 1000:.0f} ms; job run (finished_at - started_at): p50 "
          f"{percentile(runs, 50) * 1000:.0f} ms, p99 {percentile(runs, 99) * 1000:.0f} ms; turns per worker "
          f"process: {sorted(Counter(r.get('worker') for r in rows.values()).values())}")
    missing = len(ok) - len(plain) - len(tools)
    if missing:
        problems.append(f"{name}: {missing} succeeded turn(s) lacked an event or timings needed for their stages")
    return problems, head


async def run(system: System, model: ModelServer, args: argparse.Namespace) -> list[tuple[str, dict]]:
    limits = httpx.Limits(max_connections=args.concurrency + 8, max_keepalive_connections=args.concurrency + 8)
    async with httpx.AsyncClient(base_url=system.url, headers=system.headers, limits=limits,
                                 timeout=httpx.Timeout(30, read=args.turn_timeout)) as api, \
            httpx.AsyncClient(base_url=model.url, timeout=30) as model_http:
        bench = Bench(args, api, model_http)
        users = [f"bench-agent-{i}" for i in range(max(1, args.concurrency))]
        await bench.setup(users, model.url)
        out = []
        if args.turns:
            print(f"phase 1: 1 conversation, {args.warmup} warm-up + {args.turns} turns ...", flush=True)
            out.append(("1 conversation", await bench.phase(users[:1], args.turns, args.warmup)))
        if args.concurrent_turns and args.concurrency > 1:
            print(f"phase 2: {args.concurrency} concurrent conversations, 1 warm-up each + "
                  f"{args.concurrent_turns} turns ...", flush=True)
            out.append((f"{args.concurrency} concurrent conversations",
                        await bench.phase(users, args.concurrent_turns, 1)))
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker processes for agentmem up (default 2)")
    parser.add_argument("--turns", type=int, default=60, help="measured turns with one conversation (default 60)")
    parser.add_argument("--warmup", type=int, default=6, help="unmeasured turns before them (default 6)")
    parser.add_argument("--concurrency", type=int, default=20, help="conversations at once in phase 2 (default 20)")
    parser.add_argument("--concurrent-turns", type=int, default=240, help="measured turns in phase 2 (default 240)")
    parser.add_argument("--tool-every", type=int, default=3, help="every Nth turn is a tool turn; 0: none (default 3)")
    parser.add_argument("--conversation-turns", type=int, default=10,
                        help="turns per conversation before a client starts another (default 10)")
    parser.add_argument("--memories", type=int, default=20, help="memories seeded per user (default 20)")
    parser.add_argument("--llm-concurrency", type=int, default=0,
                        help="the LLM config's max_concurrency (per worker process); 0: its default")
    parser.add_argument("--turn-timeout", type=float, default=120.0, help="seconds allowed per turn (default 120)")
    parser.add_argument("--env", action="append", default=[], metavar="AGENTMEM_X=Y",
                        help="a setting for the system (repeatable), e.g. AGENTMEM_WORKER_POLL_MS=5")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and logs")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.env)

    print(f"before: {machine_load()}", flush=True)
    system = System(workers=args.workers, keep_data=args.keep_data)
    model = ModelServer(system.data_dir / "model-server.log")
    failed, phases = True, []
    try:
        model.start()
        system.env = {"AGENTMEM_OUTBOUND_ALLOW": f"127.0.0.1:{model.port}", **settings}
        if settings:
            print(f"settings: {settings}")
        result, failed = run_against(system, lambda: asyncio.run(run(system, model, args)))
        phases = result or []
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
    finally:
        model.stop()
    problems, heads = [], {}
    for name, phase in phases:
        found, heads[name] = report(name, phase)
        problems += found
    if heads:
        print("\ntargets:")
        one = heads.get("1 conversation", {})
        many = heads.get(f"{args.concurrency} concurrent conversations", {})
        if "p50" in one:
            print(f"  1 conversation, first token: p50 {one['p50']:.0f} ms (target ≤ 100: "
                  f"{'met' if one['p50'] <= 100 else 'MISSED'}), p99 {one['p99']:.0f} ms (target ≤ 250: "
                  f"{'met' if one['p99'] <= 250 else 'MISSED'})")
        if "p99" in many:
            print(f"  {args.concurrency} conversations, first token: p99 {many['p99']:.0f} ms (target < 1000: "
                  f"{'met' if many['p99'] < 1000 else 'MISSED'}); failed turns {many['failed']} (target 0); "
                  f"{many['turns_per_s']:.2f} turns/s")
    return finish_run(system, failed, problems)


if __name__ == "__main__":
    sys.exit(main())
