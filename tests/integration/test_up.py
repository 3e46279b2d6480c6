"""`agentmem up` as a user runs it: embedded servers, local model, CLI ingest and watch, Ctrl-C, restart."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.support.stack import ROOT, free_port


class Up:
    """`agentmem up` in the background, its output read line by line."""

    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")} | {"PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(port), "--data-dir",
                                      str(data_dir), "--workers", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if "AgentMem is ready." in self.lines.get(timeout=1):
                    return
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        raise AssertionError("agentmem up never became ready:\n" + "".join(self.output[-60:]))

    def printed_key(self) -> str | None:
        """The API key `agentmem up` printed (first run only)."""
        keys = [line.split()[1] for line in self.output if line.strip().startswith("Key:")]
        return keys[-1] if keys else None

    def interrupt(self, timeout: float = 90) -> tuple[int, list[psutil.Process]]:
        descendants = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        _, alive = psutil.wait_procs(descendants, timeout=5)
        return code, alive


def cli(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=clean | env)


def test_up_runs_everything_ingests_from_the_cli_stops_cleanly_and_keeps_data():
    data_dir = Path(tempfile.mkdtemp(prefix="agentmem-up-", dir="/tmp"))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    jsonl = data_dir / "memories.jsonl"
    facts = [f"Fact number {i}: the user's locker code ends in {i}." for i in range(29)]
    facts.append("The user's grandmother grew tomatoes and basil on her balcony in Naples.")
    jsonl.write_text("".join(json.dumps({"content": f, "user_id": "cli-user"}) + "\n" for f in facts))
    up = Up(data_dir, port)
    try:
        up.wait_ready()
        key = up.printed_key()
        assert key and key.startswith("amk_"), "".join(up.output[-20:])
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{api}/api/v1/jobs").status_code == 401
        refused = cli("ingest", str(jsonl), "--api-url", api)
        assert refused.returncode == 1 and "401 not_authenticated" in refused.stderr
        first = cli("ingest", str(jsonl), "--api-url", api, "--batch-size", "10", "--wait", AGENTMEM_API_KEY=key)
        assert first.returncode == 0, first.stderr + first.stdout
        assert "30 memories accepted in 3 job(s)" in first.stdout
        state_file = jsonl.with_name(jsonl.name + ".agentmem-state.json")
        state = json.loads(state_file.read_text())
        jobs_before = httpx.get(f"{api}/api/v1/jobs", params={"limit": 200}, headers=auth).json()["items"]

        # An interruption after the last POST but before its state was saved: the re-run sends that
        # batch again under the same Idempotency-Key and gets the same job back.
        del state["jobs"]["2"]
        state_file.write_text(json.dumps(state))
        again = cli("ingest", str(jsonl), "--api-url", api, "--batch-size", "10", "--api-key", key)
        assert again.returncode == 0, again.stderr
        jobs_after = httpx.get(f"{api}/api/v1/jobs", params={"limit": 200}, headers=auth).json()["items"]
        assert len(jobs_after) == len(jobs_before) == 3

        watched = cli("jobs", "watch", jobs_after[0]["id"], "--api-url", api, AGENTMEM_API_KEY=key)
        assert watched.returncode == 0 and "succeeded" in watched.stdout + watched.stderr

        hits = httpx.post(f"{api}/api/v1/memories/search", json={"query": "who gardened herbs and vegetables?",
                                                                   "user_id": "cli-user", "top_k": 1},
                          headers=auth).json()["hits"]
        assert hits[0]["memory"]["content"] == facts[-1]
    finally:
        code, alive = up.interrupt()
    assert code == 0, "".join(up.output[-40:])
    assert alive == [], f"processes left running after Ctrl-C: {alive}"

    restarted = Up(data_dir, port)
    try:
        restarted.wait_ready()
        assert restarted.printed_key() is None, "a key is printed once, on the first run only"
        stored = httpx.get(f"{api}/api/v1/memories", params={"user_id": "cli-user", "limit": 100},
                           headers=auth).json()["items"]
        assert len(stored) == 30
        # Another key for the running embedded default, straight from the CLI.
        made = cli("admin", "create-key", "--role", "viewer", "--name", "dashboard", AGENTMEM_DATA_DIR=str(data_dir))
        assert made.returncode == 0, made.stderr
        viewer = json.loads(made.stdout)["api_key"]
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        assert httpx.get(f"{api}/api/v1/memories", params={"user_id": "cli-user"}, headers=as_viewer).status_code == 200
        denied = httpx.post(f"{api}/api/v1/memories", json={"items": [{"content": "x"}]}, headers=as_viewer)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
        core_memory_round_trip(api, auth)
    finally:
        code, alive = restarted.interrupt()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert code == 0 and alive == []


def core_memory_round_trip(api: str, auth: dict[str, str]) -> None:
    """Under `agentmem up`: a block written past 90% of its limit is rewritten by a worker (offline
    strategy), the old text stays in its versions, and the agent's prompt compiles."""
    block = httpx.post(f"{api}/api/v1/blocks", headers=auth, json={
        "label": "human", "value": "The user is called Ada.", "limit": 320, "rewrite_strategy": "preserve_recent"})
    assert block.status_code == 201, block.text
    block_id = block.json()["id"]
    agent = httpx.post(f"{api}/api/v1/agents", headers=auth, json={"name": "up-agent", "system": "Be brief.",
                                                                   "block_ids": [block_id]})
    assert agent.status_code == 201, agent.text
    long_value = " ".join(f"Note {i}: the user mentioned detail number {i}." for i in range(7))
    assert 0.9 * 320 < len(long_value) <= 320
    written = httpx.patch(f"{api}/api/v1/blocks/{block_id}", headers=auth | {"If-Match": block.headers["ETag"]},
                          json={"value": long_value})
    assert written.status_code == 200, written.text
    job_id = written.json()["rewrite_job_id"]
    deadline = time.monotonic() + 120
    while (job := httpx.get(f"{api}/api/v1/jobs/{job_id}", headers=auth).json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "succeeded", job
    rewritten = httpx.get(f"{api}/api/v1/blocks/{block_id}", headers=auth).json()
    assert len(rewritten["value"]) <= 0.6 * 320 and rewritten["value"] in long_value
    assert rewritten["value"].endswith("detail number 6.")  # the newest sentences are kept
    versions = httpx.get(f"{api}/api/v1/blocks/{block_id}/versions", headers=auth).json()["items"]
    assert long_value in [v["value"] for v in versions]
    prompt = httpx.get(f"{api}/api/v1/agents/{agent.json()['id']}/prompt", headers=auth)
    assert prompt.status_code == 200 and rewritten["value"] in prompt.text, prompt.text
