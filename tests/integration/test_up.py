"""`agentmem up` as a user runs it: embedded servers, local model, CLI ingest and watch, Ctrl-C, restart."""

from __future__ import annotations

import contextlib
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
import redis

from tests.support.stack import ROOT, free_port


class Up:
    """`agentmem up` in the background, its output read line by line."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        """`env`: AGENTMEM_* settings of this run (none of the test process's own reach it)."""
        # Default schedules off unless asked for: an hourly one coming due would add jobs a test counts.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")} | {
            "PYTHONUNBUFFERED": "1", "AGENTMEM_SCHEDULE_DEFAULTS": "false"} | (env or {})
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

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """The next output line containing `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"agentmem up never said {text!r}:\n" + "".join(self.output[-60:]))

    def printed_key(self) -> str | None:
        """The API key `agentmem up` printed (first run only)."""
        keys = [line.split()[1] for line in self.output if line.strip().startswith("Key:")]
        return keys[-1] if keys else None

    def interrupt(self, timeout: float = 90) -> tuple[int, list[psutil.Process]]:
        """Ctrl-C, as a user stops it: the exit code, and the processes it started still alive 5 s after it
        exited. Those, and `up` itself if it outlives `timeout`, are then killed: a failing test leaves
        nothing running to disturb the tests after it."""
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        _, alive = psutil.wait_procs(descendants, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
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
    up = Up(data_dir, port, env={"AGENTMEM_SCHEDULE_DEFAULTS": "true"})
    try:
        up.wait_ready()
        key = up.printed_key()
        assert key and key.startswith("amk_"), "".join(up.output[-20:])
        auth = {"Authorization": f"Bearer {key}"}
        default_schedules_are_installed(api, auth)
        assert httpx.get(f"{api}/api/v1/jobs").status_code == 401
        refused = cli("ingest", str(jsonl), "--api-url", api)
        assert refused.returncode == 1 and "401 not_authenticated" in refused.stderr
        first = cli("ingest", str(jsonl), "--api-url", api, "--batch-size", "10", "--wait", AGENTMEM_API_KEY=key)
        assert first.returncode == 0, first.stderr + first.stdout
        assert "30 memories accepted in 3 job(s)" in first.stdout
        state_file = jsonl.with_name(jsonl.name + ".agentmem-state.json")
        state = json.loads(state_file.read_text())
        ingests = {"limit": 200, "kind": "ingest_memories"}
        jobs_before = httpx.get(f"{api}/api/v1/jobs", params=ingests, headers=auth).json()["items"]

        # An interruption after the last POST but before its state was saved: the re-run sends that
        # batch again under the same Idempotency-Key and gets the same job back.
        del state["jobs"]["2"]
        state_file.write_text(json.dumps(state))
        again = cli("ingest", str(jsonl), "--api-url", api, "--batch-size", "10", "--api-key", key)
        assert again.returncode == 0, again.stderr
        jobs_after = httpx.get(f"{api}/api/v1/jobs", params=ingests, headers=auth).json()["items"]
        assert len(jobs_after) == len(jobs_before) == 3

        watched = cli("jobs", "watch", jobs_after[0]["id"], "--api-url", api, AGENTMEM_API_KEY=key)
        assert watched.returncode == 0 and "succeeded" in watched.stdout + watched.stderr

        hits = httpx.post(f"{api}/api/v1/memories/search", json={"query": "who gardened herbs and vegetables?",
                                                                   "user_id": "cli-user", "top_k": 1},
                          headers=auth, timeout=60).json()["hits"]  # the API's first query: a busy machine is slow
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


def default_schedules_are_installed(api: str, auth: dict[str, str]) -> None:
    """On first start the scheduler gives the bootstrapped organization its default schedules."""
    deadline = time.monotonic() + 60
    while not (listed := httpx.get(f"{api}/api/v1/schedules", headers=auth).json()):
        assert time.monotonic() < deadline, "no default schedules a minute after start"
        time.sleep(0.5)
    assert {s["task"] for s in listed} >= {"integrity", "retention", "sweep_blocks", "summarize_conversations",
                                           "reembed", "purge", "consolidate"}
    assert all(s["default"] for s in listed)
    # All on but consolidate: merging memories changes what users wrote, so an admin turns it on.
    assert {s["task"] for s in listed if not s["enabled"]} == {"consolidate"}


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


def _wait_job(api: str, auth: dict[str, str], job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := httpx.get(f"{api}/api/v1/jobs/{job_id}", headers=auth, timeout=10).json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def _ingest(api: str, auth: dict[str, str], content: str) -> dict:
    """Store one memory through a job and wait for it: succeeded or not, the job is returned."""
    submitted = httpx.post(f"{api}/api/v1/memories", headers=auth, timeout=30,
                           json={"items": [{"content": content}], "user_id": "restart-user"})
    assert submitted.status_code == 202, submitted.text
    return _wait_job(api, auth, submitted.json()["id"])


def _wait_green(api: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/readyz not green within {timeout} s: {httpx.get(f'{api}/readyz', timeout=5).text}")


def _valkey(data_dir: Path) -> tuple[int, int]:
    """(pid, port) of the data directory's Valkey."""
    return int((data_dir / "redis" / "valkey.pid").read_text()), int((data_dir / "redis.port").read_text())


def _postgres(data_dir: Path) -> tuple[int, int]:
    """(pid, port) of the data directory's PostgreSQL, from its postmaster.pid."""
    lines = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
    return int(lines[0]), int(lines[3])


def test_up_restarts_a_killed_valkey_and_postgres_on_the_same_port_with_their_data():
    data_dir = Path(tempfile.mkdtemp(prefix="agentmem-up-", dir="/tmp"))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    up = Up(data_dir, port)
    servers = []
    try:
        up.wait_ready()
        auth = {"Authorization": f"Bearer {up.printed_key()}"}
        first = _ingest(api, auth, "The user's bicycle is a green Bianchi with a leather saddle.")
        assert first["status"] == "succeeded", first
        valkey_port = _valkey(data_dir)[1]
        events_before = redis.Redis(port=valkey_port).xrange(f"agentmem:events:job:{first['id']}")
        assert events_before

        for name, server in (("Valkey", _valkey), ("PostgreSQL", _postgres)):
            old_pid, old_port = server(data_dir)
            os.kill(old_pid, signal.SIGKILL)
            said = up.wait_for(f"embedded {name} is running again on port {old_port}")
            new_pid, new_port = server(data_dir)
            assert new_port == old_port and new_pid != old_pid and f"pid {new_pid}" in said, said
            servers.append(new_pid)
            zombies = [c.pid for c in psutil.Process(up.proc.pid).children() if c.status() == psutil.STATUS_ZOMBIE]
            assert old_pid not in zombies and not psutil.pid_exists(old_pid), "the killed server was not reaped"
            _wait_green(api)
            # What was stored before the kill is still there: the memory (PostgreSQL), the job's events (Valkey).
            listed = httpx.get(f"{api}/api/v1/memories", params={"user_id": "restart-user", "limit": 10},
                               headers=auth, timeout=30)
            assert listed.status_code == 200, listed.text
            assert first["result"]["first_memory_id"] in [m["id"] for m in listed.json()["items"]]
            assert redis.Redis(port=valkey_port).xrange(f"agentmem:events:job:{first['id']}")[:len(events_before)] \
                == events_before
            # And new work goes through.
            after = _ingest(api, auth, f"Written after {name} came back: the user's kettle whistles in D.")
            assert after["status"] == "succeeded", after
            hits = httpx.post(f"{api}/api/v1/memories/search", headers=auth, timeout=30,
                              json={"query": "bike with a leather seat", "user_id": "restart-user", "top_k": 1})
            assert hits.json()["hits"][0]["memory"]["id"] == first["result"]["first_memory_id"], hits.text
    finally:
        code, alive = up.interrupt()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert code == 0, "".join(up.output[-40:])
    assert alive == [], f"processes left running after Ctrl-C: {alive}"
    assert servers and not any(psutil.pid_exists(pid) for pid in servers), "a restarted server outlived `up`"
