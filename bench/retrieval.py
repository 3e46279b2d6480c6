"""Retrieval quality on two development sets, through the real API and workers.

    python bench/retrieval.py --dataset longmemeval|beam [--stride N] [--limit N] [--cases base,components,sweep]
                              [--case LABEL]... [--env NAME=VALUE]... [--data-dir DIR] [--workers 2]
    python bench/retrieval.py --combine LME_DIR BEAM_DIR     # both sets' table and the leave-one-dataset-out rows

Each unit of the set (a LongMemEval question's haystack, a BEAM conversation) goes into its own
namespace (user_id) as one ingest job, one memory per turn or message with its date in
`metadata.date` (`bench/retrieval_sets.py`). Then every question is searched in its namespace, at
its own time (`as_of`), in each case: `vector`, `text`, `hybrid` (the defaults), each search
component turned off (or on) alone, and with `--cases sweep` other fusion weights and feedback
settings. The hits are scored per question; the means are printed (per category for BEAM) and
saved with each question's scores in DIR/retrieval-results.json, so `--combine` can pick
settings on one set and score them on the other.
`--data-dir DIR` keeps the system's data in DIR; run again with the same DIR, it skips the ingest and
scores the searches again (search-side changes compared without re-embedding).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BenchError,
    JobWatcher,
    System,
    finish_run,
    machine_load,
    percentile,
    run_against,
    table,
)
from bench.retrieval_sets import DATASETS, Question  # noqa: E402

RESULTS = "retrieval-results.json"
HEADLINE = ("recall@10", "ndcg@10")  # what the defaults must win on, on each set

# label → request fields beside query/scope/top_k. `hybrid` is the service's defaults.
BASE = {"vector": {"mode": "vector"}, "text": {"mode": "text"}, "hybrid": {"mode": "hybrid"}}
COMPONENTS = {
    "hybrid, passages on": {"passages": True},
    "vector, passages on": {"mode": "vector", "passages": True},
    "hybrid, fixed weights (adapt 0)": {"weights": {"vector": 1.0, "text": 0.25, "adapt": 0}},
    "hybrid, rrf": {"fusion": "rrf"},
    "hybrid, vector feedback off": {"feedback": False},
    "hybrid, vector feedback without contrast": {"feedback": {"contrast": 0}},
    "hybrid, text feedback off": {"text_feedback": False},
    "hybrid, text feedback on": {"text_feedback": True},
    "text, text feedback on": {"mode": "text", "text_feedback": True},
    "hybrid, recency off": {"recency": False},
    "hybrid, recency on": {"recency": True},
    "hybrid, time off": {"time": "off"},
    "hybrid, time filter": {"time": "filter"},
    "hybrid, previous defaults": {"passages": False, "weights": {"vector": 1.0, "text": 0.25, "adapt": 0},
                                  "text_feedback": False, "recency": False, "time": "off",
                                  "feedback": {"docs": 7, "weight": 0.25, "contrast": 0}},
}
SWEEP = {f"hybrid t={t} adapt={a}": {"weights": {"vector": 1.0, "text": t, "adapt": a}}
         for t in (0.1, 0.25, 0.5, 1.0) for a in (0, 1, 2)} | {
    "hybrid feedback off": {"feedback": False}} | {
    f"hybrid feedback {d}/{w}": {"feedback": {"docs": d, "weight": w, "contrast": 0}}
    for d, w in ((3, 0.1), (7, 0.1), (7, 0.25))} | {
    f"hybrid feedback {d}/{w} contrast {c}": {"feedback": {"docs": d, "weight": w, "contrast": c}}
    for d, w, c in ((7, 0.25, 0.5), (7, 0.25, 1.0), (7, 0.5, 1.0), (10, 0.5, 0.5), (10, 0.5, 1.0), (10, 1.0, 1.0))}
CASE_GROUPS = {"base": BASE, "components": COMPONENTS, "sweep": SWEEP}


async def ingest(client: httpx.AsyncClient, units: dict[str, list[dict]], run: str, timeout: float) -> tuple[dict, str]:
    """One job per unit; the namespaces, and a line on throughput."""
    namespaces, job_ids, total = {}, [], 0
    async with JobWatcher(client) as watcher:
        t0 = time.monotonic()
        for unit, items in units.items():
            namespaces[unit] = f"ret-{run}-{unit}"
            response = await client.post("/api/v1/memories", json={"items": items, "user_id": namespaces[unit]})
            if response.status_code != 202:
                raise BenchError(f"ingest answered {response.status_code}: {response.text[:300]}")
            job_ids.append(response.json()["id"])
            total += len(items)
        print(f"  {len(job_ids)} jobs, {total} memories submitted in {time.monotonic() - t0:.1f} s; waiting ...",
              flush=True)
        done = await watcher.wait(job_ids, time.monotonic() + timeout)
    seconds = done - t0
    return namespaces, f"ingest: {total} memories in {seconds:.1f} s = {total / seconds:.1f} memories/s"


async def search_all(client: httpx.AsyncClient, dataset, questions: list[Question], namespaces: dict,
                     request: dict) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Each question's metrics, and each search's latency (seconds)."""
    per_question, latencies = {}, []
    for q in questions:
        body = {"query": q.text, "user_id": namespaces[q.unit], "top_k": 50, "as_of": q.as_of} | request
        t0 = time.perf_counter()
        response = await client.post("/api/v1/memories/search", json=body)
        latencies.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise BenchError(f"search answered {response.status_code}: {response.text[:300]}")
        per_question[q.qid] = dataset.score(q, response.json()["hits"])
    return per_question, latencies


def mean(per_question: dict[str, dict[str, float]], metric: str, qids=None) -> float:
    values = [m[metric] for q, m in per_question.items() if (qids is None or q in qids) and not math.isnan(m[metric])]
    return sum(values) / len(values) if values else float("nan")


async def run(system: System, dataset, cases: dict[str, dict], timeout: float) -> tuple[list, list, str]:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    saved = system.data_dir / f"retrieval-namespaces-{dataset.name}-{len(dataset.records)}.json"
    questions = dataset.questions()
    async with httpx.AsyncClient(base_url=system.url, headers=system.headers, timeout=120, limits=limits) as client:
        if saved.exists():
            namespaces = json.loads(saved.read_text())
            ingest_line = f"ingest: skipped, reusing the memories already in {system.data_dir}"
        else:
            namespaces, ingest_line = await ingest(client, dataset.units(), uuid.uuid4().hex[:6], timeout)
            saved.write_text(json.dumps(namespaces))
        print(ingest_line, flush=True)
        results_path = system.data_dir / RESULTS
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results.setdefault("categories", {q.qid: q.category for q in questions})
        results.setdefault("cases", {})
        rows, lat_rows = [], []
        for label, request in cases.items():
            per_question, latencies = await search_all(client, dataset, questions, namespaces, request)
            results["cases"][label] = {"request": request, "questions": per_question}
            rows.append([label] + [f"{mean(per_question, m):.3f}" for m in dataset.metrics])
            ms = [t * 1000 for t in latencies]
            lat_rows.append([label, len(ms), f"{percentile(ms, 50):.1f}", f"{percentile(ms, 99):.1f}"])
            print(f"  {label}: " + ", ".join(f"{m} {mean(per_question, m):.3f}" for m in dataset.metrics), flush=True)
        results_path.write_text(json.dumps(results))
        if dataset.name == "beam" and "hybrid" in results["cases"]:
            rows.append([""] * (len(dataset.metrics) + 1))
            rows += category_rows(results, [c for c in ("vector", "text", "hybrid") if c in results["cases"]],
                                  dataset.metrics)
        return rows, lat_rows, ingest_line


def category_rows(results: dict, labels: list[str], metrics: list[str]) -> list[list[str]]:
    """Per category, each of `labels`' means."""
    categories = results["categories"]
    rows = []
    for category in sorted(set(categories.values())):
        qids = {q for q, c in categories.items() if c == category}
        for label in labels:
            per_question = results["cases"][label]["questions"]
            rows.append([f"{category} ({len(qids)}): {label}"]
                        + [f"{mean(per_question, m, qids):.3f}" for m in metrics])
    return rows


def combine(dirs: list[Path]) -> int:
    """Both sets side by side (recall@10, nDCG@10), and leave-one-dataset-out: for each swept family, the
    setting best on one set (by recall@10 + nDCG@10) scored on the other."""
    sets = [json.loads((d / RESULTS).read_text()) for d in dirs]
    names = [d.name for d in dirs]
    labels = [label for label in sets[0]["cases"] if all(label in s["cases"] for s in sets)]

    def score(s: dict, label: str, metric: str) -> float:
        return mean(s["cases"][label]["questions"], metric)

    rows = [[label] + [f"{score(s, label, m):.3f}" for s in sets for m in HEADLINE] for label in labels]
    swept = [label for label in labels if label in SWEEP]
    if swept:
        rows.append([""] * (1 + 2 * len(HEADLINE)))
        for i, j in ((0, 1), (1, 0)):
            pick = max(swept, key=lambda label: sum(score(sets[i], label, m) for m in HEADLINE))
            cells = ["" for _ in range(2 * len(HEADLINE))]
            for k, m in enumerate(HEADLINE):
                cells[j * len(HEADLINE) + k] = f"{score(sets[j], pick, m):.3f}"
            rows.append([f"LODO: tuned on {names[i]} ({pick}), scored on {names[j]}"] + cells)
    headers = ["case"] + [f"{n} {m}" for n in names for m in HEADLINE]
    print(table(headers, rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="longmemeval")
    parser.add_argument("--limit", type=int, help="only the first N questions (LongMemEval) or conversations (BEAM)")
    parser.add_argument("--stride", type=int, default=1, help="every Nth question (LongMemEval) or conversation "
                                                               "(BEAM): 2 gives half the set, every type in it")
    parser.add_argument("--cases", default="base,components", help="case groups: base, components, sweep")
    parser.add_argument("--case", action="append", default=[], help="only these case labels (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds allowed for ingestion (default 7200)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and log")
    parser.add_argument("--data-dir", type=Path, help="keep the data here; reuse its memories if already ingested")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for this run (AGENTMEM_ prefix optional); its cases are saved with it in "
                             "their label")
    parser.add_argument("--combine", nargs=2, type=Path, metavar="DIR", help="print both sets' saved results")
    args = parser.parse_args()
    if args.combine:
        return combine(args.combine)

    print(f"before: {machine_load()}", flush=True)
    dataset = DATASETS[args.dataset](args.limit, args.stride)
    cases = {label: request for group in args.cases.split(",") for label, request in CASE_GROUPS[group].items()}
    if args.case:
        every = {k: v for group in CASE_GROUPS.values() for k, v in group.items()}
        cases = {label: every[label] for label in args.case}
    system = System.on(args.data_dir, workers=args.workers, keep_data=args.keep_data)
    settings = dict(item.split("=", 1) for item in args.env)
    system.env.update({("" if k.startswith("AGENTMEM_") else "AGENTMEM_") + k: v for k, v in settings.items()})
    if settings:
        suffix = " [" + ", ".join(f"{k.removeprefix('AGENTMEM_').lower()}={v}" for k, v in settings.items()) + "]"
        cases = {label + suffix: request for label, request in cases.items()}
    result, failed = run_against(system, lambda: asyncio.run(run(system, dataset, cases, args.timeout)))
    rows, lat_rows, ingest_line = result or ([], [], "")
    if rows:
        print(f"\n{dataset.name}, {len(dataset.questions())} questions; {ingest_line}\n")
        print(table(["case"] + dataset.headers, rows))
        print()
        print(table(["case", "searches", "p50 ms", "p99 ms"], lat_rows))
    return finish_run(system, failed, [])


if __name__ == "__main__":
    sys.exit(main())
