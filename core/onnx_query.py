"""The local model's query path on ONNX Runtime: one short text in a third of torch's time.

A search embeds one sentence. Through sentence-transformers and torch that costs about 10 ms here, almost
all of it per-call overhead rather than arithmetic; the same network exported to ONNX and run by ONNX
Runtime embeds it in about 3.5 ms, with torch's vectors (cosine 1.0000000). Batches gain nothing (both
about 320 sentences/s on 2 cores), so only the API, which embeds nothing but queries, uses it.

The export is made once, in a child process (`python -m core.onnx_query MODEL_DIR TARGET`, so the API never
holds the torch model: it saves the API about 200 MB), and kept under `<data_dir>/models/`, keyed by the
model's files and the library versions, beside a small JSON file: torch's vector for a probe sentence, the
model's token limit and whether it normalizes. Each start checks its own vector for the probe against
torch's. Only a sentence-transformers model of the usual shape (transformer → mean pooling → optional
normalization) is exported; for anything else, or any failure, `NotExportable` says why and torch serves.

With int8 precision (the default on a CPU with 8-bit dot products, see core/embedder.py) the export is
also quantized once, in the same child process, to `<export>-int8.onnx`: one sentence then takes 3.1 ms
against float's 7 on 2026-12-07's machine, and on both development sets the vector side's recall is
unchanged (`python bench/query_model.py`), though the vectors differ slightly from torch's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PROBE = "Which restaurant did we pick for the anniversary dinner last spring?"
MIN_PROBE_COSINE = 0.9999
# int8 weights move a vector a little (cosine 0.988–0.997 to float's on 200 sentences here); the probe
# only checks that the quantized network is still the same model.
MIN_PROBE_COSINE_INT8 = 0.98
INT8_SUFFIX = "-int8"
EXPORT_TIMEOUT_SECONDS = 300
NOT_EXPORTABLE_EXIT = 3


class NotExportable(Exception):
    """This model can't take the ONNX path (its shape, a missing package, a failed export or probe)."""


def check_shape(model: Any) -> bool:
    """Refuse a model that is not transformer → mean pooling (→ normalize); whether it normalizes."""
    modules = [type(m).__name__ for m in model]
    if modules not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise NotExportable(f"modules {modules}, not transformer → pooling → normalize")
    config = model[1].get_config_dict()
    if config.get("pooling_mode", "mean" if config.get("pooling_mode_mean_tokens") else None) != "mean":
        raise NotExportable(f"pooling {config}, not mean")
    return len(modules) == 3


def export_path(model_path: str, cache_dir: Path) -> Path:
    """Where the export of the model at `model_path` lives: a new model file or library version, a new name."""
    digest = hashlib.sha256(" ".join(metadata.version(p) for p in ("torch", "transformers", "onnxruntime")).encode())
    for path in sorted(Path(model_path).rglob("*")):
        if path.is_file() and path.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            stat = path.stat()
            digest.update(f"{path.relative_to(model_path)} {stat.st_size} {int(stat.st_mtime)}".encode())
    return cache_dir / f"{Path(model_path).name}-{digest.hexdigest()[:16]}.onnx"


def export(model_path: str, target: Path) -> None:
    """Export the model at `model_path` to `target` and its probe file beside it (run in a child process)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    normalize = check_shape(model)

    class LastHidden(torch.nn.Module):
        def __init__(self, transformer) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state

    sample = model.tokenizer(["a sample"], return_tensors="pt")
    if "token_type_ids" not in sample:
        raise NotExportable("the tokenizer gives no token_type_ids")
    probe = model.encode([PROBE], normalize_embeddings=normalize, convert_to_numpy=True, show_progress_bar=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        # The tracer warns about shapes it fixes while tracing (causal masking, which BERT never uses).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHidden(model[0].auto_model.eval()), tuple(sample[k] for k in INPUTS), tmp,
                              input_names=list(INPUTS), output_names=["hidden"], opset_version=17, dynamo=False,
                              dynamic_axes={k: {0: "batch", 1: "tokens"} for k in (*INPUTS, "hidden")})
        # The probe file first: an export that exists always has one (processes starting together don't clash).
        _write_atomically(target.with_suffix(".json"), json.dumps({
            "probe": probe[0].tolist(), "normalize": normalize, "max_length": model.max_seq_length}))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def int8_path(float_path: Path) -> Path:
    """Where the int8 quantization of the export at `float_path` lives."""
    return float_path.with_name(float_path.stem + INT8_SUFFIX + float_path.suffix)


def quantize(source: Path, target: Path) -> None:
    """The export at `source` with int8 weights at `target` (run in a child process).

    Dynamic quantization: each MatMul's weights are stored as int8, per output channel, and its input is
    quantized on the fly at every call. One sentence is bound by those MatMuls, so this halves its time on
    a CPU with 8-bit dot products (VNNI); the vectors move a little (see MIN_PROBE_COSINE_INT8).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8, per_channel=True)
        _write_atomically(target.with_suffix(".json"), source.with_suffix(".json").read_text())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _export_in_child(model_path: str, target: Path) -> None:
    try:
        done = subprocess.run([sys.executable, "-m", "core.onnx_query", model_path, str(target)], capture_output=True,
                              text=True, timeout=EXPORT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotExportable(f"the export did not finish: {exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise NotExportable(lines[-1])
    log.info("exported the query model to ONNX at %s", target)


class OnnxQueryEncoder:
    """A sentence-transformers model's forward pass on ONNX Runtime, with the model's own tokenizer."""

    def __init__(self, model_path: str, onnx_path: Path, threads: int) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        self.path = onnx_path
        self.int8 = onnx_path.stem.endswith(INT8_SUFFIX)
        meta = json.loads(onnx_path.with_suffix(".json").read_text())
        self.probe: list[float] = meta["probe"]
        self.normalize: bool = meta["normalize"]
        self.max_length: int = meta["max_length"]
        self.dim = len(self.probe)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(threads, 1)
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    @classmethod
    def open(cls, model_path: str, cache_dir: Path, threads: int, int8: bool = False) -> OnnxQueryEncoder:
        """The model's export (made now if missing; with `int8`, its quantization), checked against torch's
        probe vector; else NotExportable."""
        try:
            target = export_path(model_path, cache_dir)
            if int8:
                target = int8_path(target)
            if not target.exists():
                _export_in_child(model_path, target)
            encoder = cls(model_path, target, threads)
        except NotExportable:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to export or load means: stay on torch
            raise NotExportable(f"{type(exc).__name__}: {exc}") from exc
        got = encoder.encode([PROBE])[0]
        cosine = sum(a * b for a, b in zip(encoder.probe, got, strict=True)) / (
            math.hypot(*encoder.probe) * math.hypot(*got) or 1.0)
        if cosine < (MIN_PROBE_COSINE_INT8 if int8 else MIN_PROBE_COSINE):
            raise NotExportable(f"ONNX vector differs from torch's (cosine {cosine:.6f})")
        return encoder

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Embed texts: mean of the token vectors the attention mask keeps, L2-normalized (as the model)."""
        import numpy as np

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feeds = {k: batch[k].astype(np.int64) for k in INPUTS}
        hidden = self.session.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        vectors = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.tolist()


def _make(model_path: str, target: Path) -> None:
    """The export at `target`; an int8 one is quantized from the float export, made first if missing."""
    if not target.stem.endswith(INT8_SUFFIX):
        export(model_path, target)
        return
    source = target.with_name(target.stem.removesuffix(INT8_SUFFIX) + target.suffix)
    if not source.exists():
        export(model_path, source)
    quantize(source, target)


if __name__ == "__main__":
    try:
        _make(sys.argv[1], Path(sys.argv[2]))
    except NotExportable as exc:
        print(f"not exportable: {exc}", file=sys.stderr)
        sys.exit(NOT_EXPORTABLE_EXIT)
