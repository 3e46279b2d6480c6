"""Client commands on the SDK: `agentmem ingest FILE.jsonl`, `agentmem jobs watch|show|cancel JOB_ID` and
`agentmem maintenance run TASK`.

Each command that queues a job prints its id (`job … queued`); with `--json` a command prints JSON instead of text
(one object, or JSON Lines for `jobs watch`) and no progress bars.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from agentmem import AgentMem, AgentMemError, APIConnectionError, APIError, Job, RateLimitError, UnavailableError
from schemas.memories import MAX_BATCH_ITEMS, MemoryIn

TERMINAL = {"succeeded", "failed", "cancelled"}


def connect(api_url: str, api_key: str | None, org: str | None = None, **options: Any) -> AgentMem:
    """The SDK client the commands use (no key: the API will say 401)."""
    return AgentMem(api_url, api_key, organization=org, **options)


def print_json(value: Any) -> None:
    """One JSON document on stdout: models as the API writes them."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    print(json.dumps(value, default=str))


def report_error(exc: AgentMemError, what: str) -> None:
    """An SDK error as one line on stderr: the API's status, code, message and request id."""
    if isinstance(exc, APIError):
        request = f" (request {exc.request_id})" if exc.request_id else ""
        print(f"{what} ({exc.status_code} {exc.code}): {exc.message}{request}", file=sys.stderr)
    else:
        print(f"{what}: {exc}", file=sys.stderr)


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
            items.append(item.model_dump(mode="json", exclude_none=True))
    return items, problems


def ingest_file(path: Path, *, api_url: str, api_key: str | None, batch_size: int, wait: bool,
                as_json: bool = False) -> int:
    """Submit a JSONL file in batches, printing each batch's job id; re-running skips batches already accepted."""
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
    with connect(api_url, api_key, timeout=120, max_retries=7) as client, \
            tqdm(total=len(items), initial=done_items, unit="mem", desc="accepted", disable=as_json) as bar:
        for index, batch in enumerate(batches):
            if str(index) in state["jobs"]:
                continue
            # The key comes from the file and the batch's place in it: a re-run never queues a batch twice.
            key = f"ingest-{digest[:24]}-{batch_size}-{index}"
            try:
                job = client.memories.add(batch, idempotency_key=key)
            except (APIConnectionError, RateLimitError, UnavailableError) as exc:
                report_error(exc, f"\nstopped at batch {index + 1}/{len(batches)}; re-run to resume")
                return 1
            except APIError as exc:
                report_error(exc, f"\nbatch {index + 1} refused")
                return 1
            state["jobs"][str(index)] = str(job.id)
            state_path.write_text(json.dumps(state))
            if not as_json:
                tqdm.write(f"job {job.id} queued ({len(batch)} memories, batch {index + 1}/{len(batches)})")
            bar.update(len(batch))
        job_ids = [state["jobs"][str(i)] for i in range(len(batches))]
        if not as_json:
            print(f"{len(items)} memories accepted in {len(batches)} job(s); state in {state_path}")
        if not wait:
            if as_json:
                print_json({"accepted": len(items), "jobs": job_ids, "state_file": str(state_path)})
            else:
                print("follow a job with: agentmem jobs watch JOB_ID")
            return 0
        return _wait_for_jobs(client, job_ids, len(items), as_json, state_path)


def _wait_for_jobs(client: AgentMem, job_ids: list[str], total: int, as_json: bool, state_path: Path) -> int:
    """Follow each job's events in turn (they run meanwhile), with one bar over all their items."""
    finished: list[Job] = []
    stored = 0
    with tqdm(total=total, unit="mem", desc="stored", disable=as_json) as bar:
        for job_id in job_ids:
            try:
                job = client.jobs.get(job_id)
                for _ in job.events():
                    bar.update(stored + job.progress.done - bar.n)
                job.refresh()
            except AgentMemError as exc:
                report_error(exc, f"job {job_id}")
                return 1
            stored += job.progress.done
            bar.update(stored - bar.n)
            finished.append(job)
    failed = [j for j in finished if j.status != "succeeded"]
    for job in failed:
        print(f"job {job.id} {job.status}: {job.error}", file=sys.stderr)
    if as_json:
        print_json({"accepted": total, "state_file": str(state_path),
                    "jobs": [j.data.model_dump(mode="json") for j in finished]})
    return 1 if failed else 0


def watch_job(job_id: str, *, api_url: str, api_key: str | None, org: str | None = None,
              as_json: bool = False, client: AgentMem | None = None) -> int:
    """Follow a job's events with a progress bar (or as JSON Lines); exit 0 if it succeeds."""
    own = client is None
    client = client or connect(api_url, api_key, org)
    bar: tqdm | None = None
    try:
        job = client.jobs.get(job_id)
        for event in job.events():
            if as_json:
                print(event.model_dump_json(exclude={"org_id"}), flush=True)
                continue
            kind, data = event.type.value, event.data
            if kind == "snapshot":
                bar = bar or tqdm(total=job.progress.total or None, unit="item", desc=str(job.kind))
                bar.update(job.progress.done - bar.n)
            elif kind == "progress" and bar is not None and "done" in data:
                bar.total = data.get("total")
                bar.update(data["done"] - bar.n)
                bar.set_postfix_str(data.get("message") or "")
            elif kind in ("retrying", "started"):
                tqdm.write(f"{kind}: {json.dumps(data)}")
            elif kind in TERMINAL:
                if bar is not None and kind == "succeeded":
                    bar.update((bar.total or bar.n) - bar.n)
                tqdm.write(f"{kind}: {json.dumps(data)}")
    except AgentMemError as exc:
        report_error(exc, f"job {job_id}")
        return 2 if isinstance(exc, APIError) and exc.status_code in (401, 403, 404, 422) else 1
    finally:
        if bar is not None:
            bar.close()
        if own:
            client.close()
    return 0 if job.status == "succeeded" else 1


def show_job(job_id: str, *, api_url: str, api_key: str | None, org: str | None = None, cancel: bool = False,
             as_json: bool = False) -> int:
    """Print a job's state (`jobs show`), or cancel it first (`jobs cancel`)."""
    with connect(api_url, api_key, org) as client:
        try:
            job = client.jobs.cancel(job_id) if cancel else client.jobs.get(job_id)
        except AgentMemError as exc:
            report_error(exc, f"job {job_id}")
            return 2 if isinstance(exc, APIError) else 1
    if as_json:
        print_json(job.data)
        return 0
    progress = job.progress
    print(f"job {job.id} {job.kind} {job.status}" + (" (cancel requested)" if job.data.cancel_requested else ""))
    print(f"  progress: {progress.done}/{progress.total}" + (f" {progress.message}" if progress.message else ""))
    if job.error:
        print(f"  error: {job.error.code}: {job.error.message}")
    if job.result is not None:
        print(f"  result: {json.dumps(job.result)}")
    return 0


def run_maintenance(task: str, *, api_url: str, api_key: str | None, org: str | None, params: dict, wait: bool,
                    as_json: bool = False) -> int:
    """Run a maintenance task now (`POST /api/v1/maintenance/{task}`); with `wait`, follow its job to the end."""
    with connect(api_url, api_key, org) as client:
        try:
            job = client.maintenance.run(task, params)
        except APIError as exc:
            report_error(exc, f"{task} refused")
            if isinstance(exc.details, dict) and exc.details.get("tasks"):
                print("tasks: " + ", ".join(exc.details["tasks"]), file=sys.stderr)
            return 2
        except AgentMemError as exc:
            report_error(exc, f"could not reach {api_url}")
            return 1
        if not as_json:
            print(f"{task}: job {job.id} queued")
        if not wait:
            if as_json:
                print_json(job.data)
            else:
                print(f"follow it with: agentmem jobs watch {job.id}")
            return 0
        if not as_json:
            return watch_job(str(job.id), api_url=api_url, api_key=api_key, org=org, client=client)
        return wait_as_json(job)


def wait_as_json(job) -> int:
    """Wait for a job without a bar and print its row as JSON; exit 0 if it succeeded."""
    try:
        job.wait(check=False)
    except AgentMemError as exc:
        report_error(exc, f"job {job.id}")
        return 1
    print_json(job.data)
    return 0 if job.status == "succeeded" else 1
