"""Retrieval quality: LongMemEval (60-question dev set) through the real API and workers.

    python bench/retrieval.py [--questions 60] [--workers 2] [--sweep] [--data-dir DIR]

Each question's haystack goes into its own namespace (user_id), one memory per turn with metadata
{session_id, turn, date}, as one ingest job per question (`agentmem up`, embedded default, local
MiniLM model). Then each question is searched in its namespace in the `vector`, `text` and `hybrid`
modes, and the ranked hits are scored (higher is better):
- session recall_any@k: any gold session among the sessions of the top-k hits (sessions deduplicated
  in rank order); recall_all@5: all gold sessions in the top 5 sessions; nDCG@10 over sessions;
- turn recall@10: the share of answer turns (has_answer) among the top-10 hits.
It prints ingest throughput and search latency too, and scores beside the defaults: vector with
feedback (pseudo-relevance feedback, on request), hybrid without feedback, and hybrid with `fusion:
rrf`. `--sweep` also scores both fusions under other weights and RRF constants, and feedback with
other sizes and weights (per request; the defaults are in core/settings.py), then 2-fold
cross-validates each family's choice: settings picked on half the questions, scored on the other.
`--data-dir DIR` keeps the system's data in DIR; run again with the same DIR, it skips the
ingest and scores the searches again (to compare search-side changes without re-embedding).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    LONGMEMEVAL,
    BenchError,
    JobWatcher,
    System,
    finish_run,
    machine_load,
    percentile,
    run_against,
    table,
)

MODES = ("vector", "text", "hybrid")
METRICS = ["recall_any@5", "recall_any@10", "recall_all@5", "ndcg@10", "turn_recall@10"]
MAX_CHARS = 32_000


def load(questions: int) -> list[dict]:
    with gzip.open(LONGMEMEVAL, "rt", encoding="utf-8") as fh:
        return json.load(fh)[:questions]


def items_of(record: dict) -> tuple[list[dict], set[tuple[str, int]]]:
    """One memory per turn, and the (session, turn) keys of the answer turns."""
    items, answers = [], set()
    for session_id, date, turns in zip(record["haystack_session_ids"], record["haystack_dates"],
                                       record["haystack_sessions"], strict=True):
        for i, turn in enumerate(turns):
            content = turn["content"].strip()[:MAX_CHARS]
            if not content:
                continue
            items.append({"content": content, "metadata": {"session_id": session_id, "turn": i, "date": date,
                                                           "role": turn["role"]}})
            if turn.get("has_answer") and session_id in record["answer_session_ids"]:
                answers.add((session_id, i))
    return items, answers


def score(hits: list[dict], gold: set[str], answers: set[tuple[str, int]]) -> dict[str, float]:
    sessions: list[str] = []
    for hit in hits:
        sid = hit["memory"]["metadata"]["session_id"]
        if sid not in sessions:
            sessions.append(sid)
    top_turns = {(h["memory"]["metadata"]["session_id"], h["memory"]["metadata"]["turn"]) for h in hits[:10]}
    dcg = sum(1 / math.log2(i + 2) for i, s in enumerate(sessions[:10]) if s in gold)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(gold))))
    return {
        "recall_any@5": float(any(s in gold for s in sessions[:5])),
        "recall_any@10": float(any(s in gold for s in sessions[:10])),
        "recall_all@5": float(gold <= set(sessions[:5])),
        "ndcg@10": dcg / ideal if ideal else 0.0,
        "turn_recall@10": len(top_turns & answers) / len(answers) if answers else float("nan"),
    }


async def ingest(client: httpx.AsyncClient, records: list[dict], run: str, timeout: float) -> tuple[dict, float, int]:
    """Submit one job per question; returns the namespaces, the seconds until all succeeded, memory count."""
    namespaces, job_ids, total = {}, [], 0
    async with JobWatcher(client) as watcher:
        t0 = time.monotonic()
        for record in records:
            items, answers = items_of(record)
            namespace = f"lme-{run}-{record['question_id']}"
            namespaces[record["question_id"]] = (namespace, answers)
            response = await client.post("/api/v1/memories", json={"items": items, "user_id": namespace})
            if response.status_code != 202:
                raise BenchError(f"ingest answered {response.status_code}: {response.text[:300]}")
            job_ids.append(response.json()["id"])
            total += len(items)
        print(f"  {len(job_ids)} jobs, {total} memories submitted in {time.monotonic() - t0:.1f} s; waiting ...",
              flush=True)
        done = await watcher.wait(job_ids, time.monotonic() + timeout)
    return namespaces, done - t0, total


async def search_all(client: httpx.AsyncClient, records: list[dict], namespaces: dict, mode: str,
                     extra: dict | None = None, top_k: int = 100) -> tuple[dict[str, float], list[float], dict]:
    """Mean metrics over the questions, each search's latency (seconds), and each question's metrics."""
    sums: dict[str, float] = {}
    counted: dict[str, int] = {}
    latencies = []
    per_question = {}
    for record in records:
        namespace, answers = namespaces[record["question_id"]]
        body = {"query": record["question"], "user_id": namespace, "mode": mode, "top_k": top_k} | (extra or {})
        t0 = time.perf_counter()
        response = await client.post("/api/v1/memories/search", json=body)
        latencies.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise BenchError(f"search answered {response.status_code}: {response.text[:300]}")
        per_question[record["question_id"]] = score(response.json()["hits"], set(record["answer_session_ids"]), answers)
        for name, value in per_question[record["question_id"]].items():
            if not math.isnan(value):
                sums[name] = sums.get(name, 0.0) + value
                counted[name] = counted.get(name, 0) + 1
    return {name: sums[name] / counted[name] for name in sums}, latencies, per_question


async def run(system: System, records: list[dict], sweep: bool, timeout: float) -> tuple[list, list, str]:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    saved = system.data_dir / f"retrieval-namespaces-{len(records)}.json"
    async with httpx.AsyncClient(base_url=system.url, headers=system.headers, timeout=120, limits=limits) as client:
        if saved.exists():
            namespaces = {q: (ns, {tuple(a) for a in answers})
                          for q, (ns, answers) in json.loads(saved.read_text()).items()}
            ingest_line = f"ingest: skipped, reusing the memories already in {system.data_dir}"
        else:
            namespaces, seconds, total = await ingest(client, records, uuid.uuid4().hex[:6], timeout)
            saved.write_text(json.dumps({q: (ns, sorted(answers)) for q, (ns, answers) in namespaces.items()}))
            ingest_line = f"ingest: {total} memories in {seconds:.1f} s = {total / seconds:.0f} memories/s"
        print(ingest_line, flush=True)
        rows, lat_rows = [], []
        cases = [(mode, None) for mode in MODES] + [("vector", {"feedback": True}), ("hybrid", {"feedback": False}),
                                                      ("hybrid", {"fusion": "rrf"})]
        timed = len(cases)
        if sweep:
            cases += [("hybrid", {"fusion": "convex", "weights": {"vector": 1.0, "text": t}})
                      for t in (0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0)]
            cases += [("hybrid", {"fusion": "rrf", "weights": {"vector": 1.0, "text": t, "rrf_k": k}})
                      for k in (10, 30, 60, 120) for t in (0.25, 0.35, 0.5, 1.0)]
            cases += [("hybrid", {"feedback": {"docs": d, "weight": w}})
                      for d in (3, 5, 7, 10, 15) for w in (0.1, 0.2, 0.25, 0.3, 0.5)]
        per_case = {}
        for i, (mode, extra) in enumerate(cases):
            result, latencies, per_question = await search_all(client, records, namespaces, mode, extra)
            label = mode if extra is None else label_of(mode, extra)
            per_case[label] = per_question
            rows.append([label] + [f"{result[m]:.3f}" for m in METRICS])
            if i < timed:
                ms = [t * 1000 for t in latencies]
                lat_rows.append([label, len(ms), f"{percentile(ms, 50):.1f}", f"{percentile(ms, 99):.1f}",
                                 f"{len(ms) / sum(latencies):.1f}"])
            print(f"  {label}: " + ", ".join(f"{m} {result[m]:.3f}" for m in METRICS), flush=True)
        if sweep:
            rows += cross_validate(per_case, [r["question_id"] for r in records])
        return rows, lat_rows, ingest_line


def label_of(mode: str, extra: dict) -> str:
    """`mode`, then what differs from the service's defaults: `hybrid rrf t=0.35 k=60`, `hybrid feedback 5/0.2`."""
    parts = [mode]
    weights = extra.get("weights")
    if "fusion" in extra:
        parts.append(extra["fusion"] if weights else f"{extra['fusion']} (service weights)")
    if weights:
        parts.append(f"t={weights['text']}" + (f" k={weights['rrf_k']}" if weights.get("rrf_k") else ""))
    feedback = extra.get("feedback")
    if isinstance(feedback, dict):
        parts.append(f"feedback {feedback['docs']}/{feedback['weight']}")
    elif feedback is not None:
        parts.append("+ feedback" if feedback else "without feedback")
    return " ".join(parts)


def cross_validate(per_case: dict[str, dict[str, dict[str, float]]], questions: list[str]) -> list[list[str]]:
    """2-fold cross-validation of the fusion settings swept: pick on one half (by recall_all@5 + nDCG@10),
    score on the other, and average the two held-out halves. The choice is not scored on its own data."""
    folds = [set(sorted(questions)[0::2]), set(sorted(questions)[1::2])]
    swept = [label for label in per_case if label.startswith("hybrid ") and ("=" in label or "/" in label)]

    def mean(label: str, qids: set[str]) -> dict[str, float]:
        out = {}
        for metric in METRICS:
            values = [per_case[label][q][metric] for q in qids if not math.isnan(per_case[label][q][metric])]
            out[metric] = sum(values) / len(values)
        return out

    rows = []
    for family in ("convex", "rrf", "feedback"):
        candidates = [label for label in swept if label.startswith(f"hybrid {family}")]
        held_out, picks = [], []
        for i in (0, 1):
            best = max(candidates,
                       key=lambda label: (lambda m: m["recall_all@5"] + m["ndcg@10"])(mean(label, folds[i])))
            picks.append(best.removeprefix(f"hybrid {family} "))
            held_out.append(mean(best, folds[1 - i]))
        avg = {m: (held_out[0][m] + held_out[1][m]) / 2 for m in METRICS}
        rows.append([f"{family}, 2-fold CV (picked {' / '.join(picks)})"] + [f"{avg[m]:.3f}" for m in METRICS])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=60, help="questions of the dev set to use (default 60)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--sweep", action="store_true", help="also score hybrid with other fusion weights")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed for ingestion (default 3600)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and log")
    parser.add_argument("--data-dir", type=Path, help="keep the data here; reuse its memories if already ingested")
    args = parser.parse_args()

    print(f"before: {machine_load()}", flush=True)
    records = load(args.questions)
    system = System.on(args.data_dir, workers=args.workers, keep_data=args.keep_data)
    result, failed = run_against(system, lambda: asyncio.run(run(system, records, args.sweep, args.timeout)))
    rows, lat_rows, ingest_line = result or ([], [], "")
    if rows:
        print(f"\nLongMemEval dev set, {len(records)} questions; {ingest_line}\n")
        print(table(["mode", "session R_any@5", "R_any@10", "R_all@5", "nDCG@10", "turn R@10"], rows))
        print()
        print(table(["mode", "searches", "p50 ms", "p99 ms", "searches/s (1 client)"], lat_rows))
    return finish_run(system, failed, [])


if __name__ == "__main__":
    sys.exit(main())
