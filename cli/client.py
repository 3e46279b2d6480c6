"""Client commands: `agentmem ingest FILE.jsonl`, `agentmem jobs watch JOB_ID` and `agentmem maintenance run TASK`."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import httpx
from pydantic import ValidationError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tqdm import tqdm

from cli.sse import events
from schemas.memories import MAX_BATCH_ITEMS, MemoryIn

TERMINAL = {"succeeded", "failed", "cancelled"}


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Authorization header for an API key (none without one: the API will say 401)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (429, 502, 503, 504)


@retry(retry=retry_if_exception(_retryable), wait=wait_exponential_jitter(initial=0.5, max=15),
       stop=stop_after_attempt(8), reraise=True)
def _post_batch(client: httpx.Client, items: list[dict], key: str) -> dict:
    response = client.post("/api/v1/memories", json={"items": items}, headers={"Idempotency-Key": key})
    if response.status_code >= 500 or response.status_code == 429:
        response.raise_for_status()
    return response.json() | {"_status": response.status_code}


def _read_items(path: Path) -> tuple[list[dict], list[str]]:
    items, problems = [], []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = MemoryIn.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                if first["type"] in ("json_invalid", "model_type"):
                    problems.append(f"line {number}: not a JSON object; each line must be one memory such as "
                                    '{"content": "…", "user_id": "alice"}')
                else:
                    problems.append(f"line {number}: {'.'.join(map(str, first['loc'])) or 'line'}: {first['msg']}")
                continue
            items.append(item.model_dump(exclude_none=True))
    return items, problems


def ingest_file(path: Path, *, api_url: str, api_key: str | None, batch_size: int, wait: bool) -> int:
    """Submit a JSONL file in batches; re-running skips batches already accepted."""
    if not 1 <= batch_size <= MAX_BATCH_ITEMS:
        print(f"--batch-size must be between 1 and {MAX_BATCH_ITEMS}", file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    items, problems = _read_items(path)
    if problems:
        print(f"{path}: {len(problems)} invalid line(s); nothing was sent:", file=sys.stderr)
        for problem in problems[:20]:
            print("  " + problem, file=sys.stderr)
        return 2
    if not items:
        print(f"{path}: no memories in the file", file=sys.stderr)
        return 2
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    state_path = path.with_name(path.name + ".agentmem-state.json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("sha256") != digest or state.get("batch_size") != batch_size:
        state = {"sha256": digest, "batch_size": batch_size, "api_url": api_url, "jobs": {}}
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    done_items = sum(len(batches[int(i)]) for i in state["jobs"])
    with httpx.Client(base_url=api_url, timeout=120, headers=auth_headers(api_key)) as client, \
            tqdm(total=len(items), initial=done_items, unit="mem", desc="accepted") as bar:
        for index, batch in enumerate(batches):
            if str(index) in state["jobs"]:
                continue
            key = f"ingest-{digest[:24]}-{batch_size}-{index}"
            try:
                body = _post_batch(client, batch, key)
            except (httpx.HTTPError, OSError) as exc:
                print(f"\nstopped at batch {index + 1}/{len(batches)}: {exc}; re-run to resume", file=sys.stderr)
                return 1
            if body["_status"] != 202:
                error = body.get("error", {})
                print(f"\nbatch {index + 1} refused ({body['_status']} {error.get('code')}): {error.get('message')}",
                      file=sys.stderr)
                return 1
            state["jobs"][str(index)] = body["id"]
            state_path.write_text(json.dumps(state))
            bar.update(len(batch))
    print(f"{len(items)} memories accepted in {len(batches)} job(s); state in {state_path}")
    if not wait:
        print("follow a job with: agentmem jobs watch JOB_ID")
        return 0
    return _wait_for_jobs(api_url, api_key, list(state["jobs"].values()), len(items))


def _wait_for_jobs(api_url: str, api_key: str | None, job_ids: list[str], total: int) -> int:
    finished: dict[str, dict] = {}
    with (httpx.Client(base_url=api_url, timeout=30, headers=auth_headers(api_key)) as client,
          tqdm(total=total, unit="mem", desc="stored") as bar):
        while len(finished) < len(job_ids):
            done = 0
            for job_id in job_ids:
                job = finished.get(job_id) or client.get(f"/api/v1/jobs/{job_id}").json()
                if job["status"] in TERMINAL:
                    finished[job_id] = job
                done += job["progress"]["done"]
            bar.update(done - bar.n)
            if len(finished) < len(job_ids):
                time.sleep(0.5)
    failed = [j for j in finished.values() if j["status"] != "succeeded"]
    for job in failed:
        print(f"job {job['id']} {job['status']}: {job.get('error')}", file=sys.stderr)
    return 1 if failed else 0


def watch_job(job_id: str, *, api_url: str, api_key: str | None, org: str | None = None) -> int:
    """Follow a job's events with a progress bar; exit 0 if it succeeds."""
    last_id: str | None = None
    bar: tqdm | None = None
    status = None
    headers = auth_headers(api_key) | ({"X-Organization-Id": org} if org else {})
    with httpx.Client(base_url=api_url, timeout=httpx.Timeout(10, read=60), headers=headers) as client:
        while status not in TERMINAL:
            headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
            try:
                with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers) as response:
                    if response.status_code != 200:
                        error = json.loads(response.read()).get("error", {})
                        print(f"{error.get('code')}: {error.get('message')}", file=sys.stderr)
                        return 2
                    for event in events(response):
                        kind, last_id = event.event, event.id or last_id
                        payload = event.json()
                        if kind == "snapshot":
                            job = payload["data"]
                            status = job["status"]
                            bar = bar or tqdm(total=job["progress"]["total"] or None, unit="item", desc=job["kind"])
                            bar.update(job["progress"]["done"] - bar.n)
                        elif kind == "progress" and bar is not None:
                            bar.total = payload["data"]["total"]
                            bar.update(payload["data"]["done"] - bar.n)
                            bar.set_postfix_str(payload["data"].get("message") or "")
                        elif kind in ("retrying", "started"):
                            tqdm.write(f"{kind}: {json.dumps(payload['data'])}")
                        if kind in TERMINAL:
                            status = kind
                            if bar is not None and kind == "succeeded":
                                bar.update((bar.total or bar.n) - bar.n)
                            tqdm.write(f"{kind}: {json.dumps(payload['data'])}")
                            break
            except httpx.TransportError as exc:
                tqdm.write(f"connection lost ({exc}); resuming")
                time.sleep(1)
    if bar is not None:
        bar.close()
    return 0 if status == "succeeded" else 1


def run_maintenance(task: str, *, api_url: str, api_key: str | None, org: str | None, params: dict, wait: bool) -> int:
    """Run a maintenance task now (`POST /api/v1/maintenance/{task}`); with `wait`, follow its job to the end."""
    headers = auth_headers(api_key) | ({"X-Organization-Id": org} if org else {})
    with httpx.Client(base_url=api_url, timeout=30, headers=headers) as client:
        try:
            response = client.post(f"/api/v1/maintenance/{task}", json={"params": params})
        except httpx.HTTPError as exc:
            print(f"could not reach {api_url}: {exc}", file=sys.stderr)
            return 1
    if response.status_code != 202:
        error = response.json().get("error", {}) if response.headers.get("content-type", "").startswith(
            "application/json") else {}
        print(f"{task} refused ({response.status_code} {error.get('code')}): {error.get('message')}", file=sys.stderr)
        if error.get("details", {}).get("tasks"):
            print("tasks: " + ", ".join(error["details"]["tasks"]), file=sys.stderr)
        return 2
    job_id = response.json()["id"]
    print(f"{task}: job {job_id}")
    if not wait:
        print("follow it with: agentmem jobs watch " + job_id)
        return 0
    return watch_job(job_id, api_url=api_url, api_key=api_key, org=org)
