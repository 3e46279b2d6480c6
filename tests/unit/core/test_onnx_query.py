"""core/onnx_query.py: the API's query path on ONNX Runtime gives torch's vectors, or stays on torch."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest

from core import embedder
from core.embedder import LocalModel, local_model_path
from core.onnx_query import NotExportable, OnnxQueryEncoder, check_shape, export_path, int8_path

TEXTS = [
    "peanuts",
    "Where does my sister live now?",
    # Longer than the model reads (256 word pieces): both paths must cut it at the same place.
    "What did Tara say about the half marathon in Riga next June? " * 30,
    "I am allergic to peanuts and shellfish, and I told the waiter twice.",
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


@pytest.fixture(scope="module")
def torch_model():
    return LocalModel().load()


@pytest.fixture
def query_process(monkeypatch, override_settings, tmp_path):
    """This process embeds queries as the API does, with its ONNX export kept in a temporary data dir."""
    override_settings(data_dir=tmp_path)
    monkeypatch.setattr(embedder, "_query_threads", embedder._query_threads)
    monkeypatch.setattr(embedder, "_query_bfloat16", embedder._query_bfloat16)
    monkeypatch.setattr(embedder, "_query_onnx", embedder._query_onnx)
    monkeypatch.setattr(embedder, "_query_int8", embedder._query_int8)
    embedder.embed_queries_with(1, "float32", "onnx")
    return tmp_path


MODEL = local_model_path("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The model's export, made once for this module, as the API's first start makes it (in a child process)."""
    cache = tmp_path_factory.mktemp("models")
    OnnxQueryEncoder.open(MODEL, cache, threads=1)
    return cache


def test_onnx_vectors_equal_torch_vectors_in_one_padded_batch(torch_model, exported):
    encoder = OnnxQueryEncoder.open(MODEL, exported, threads=1)
    expected = torch_model.encode(TEXTS, normalize_embeddings=True, show_progress_bar=False).tolist()
    got = encoder.encode(TEXTS)  # padded to the longest, truncated to 256 word pieces
    for a, b in zip(expected, got, strict=True):
        assert math.hypot(*b) == pytest.approx(1.0, abs=1e-5)
        assert cosine(a, b) > 0.99999
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4


def test_the_export_is_made_once_and_kept_with_its_probe(exported):
    [export] = exported.glob("*.onnx")
    made = export.stat().st_mtime_ns
    encoder = OnnxQueryEncoder.open(MODEL, exported, threads=1)
    assert [p.stat().st_mtime_ns for p in exported.glob("*.onnx")] == [made]
    assert export == export_path(MODEL, exported) and not list(exported.glob("*.tmp"))
    assert encoder.dim == 384 and encoder.max_length == 256 and encoder.normalize


def test_an_export_that_disagrees_with_torch_is_refused(exported, tmp_path):
    [export] = exported.glob("*.onnx")
    shutil.copy(export, tmp_path / export.name)
    meta = json.loads(export.with_suffix(".json").read_text())
    meta["probe"] = [-x for x in meta["probe"]]  # as if the export computed something else
    (tmp_path / export.name).with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(NotExportable, match="differs from torch"):
        OnnxQueryEncoder.open(MODEL, tmp_path, threads=1)


def test_a_model_of_another_shape_is_refused(torch_model):
    assert check_shape(torch_model) is True  # the bundled model: transformer → mean pooling → normalize
    pooled_by_cls = [torch_model[0], type("Pooling", (), {"get_config_dict": lambda self: {"pooling_mode": "cls"}})()]
    with pytest.raises(NotExportable, match="not mean"):
        check_shape(pooled_by_cls)
    with pytest.raises(NotExportable, match="not transformer"):
        check_shape([torch_model[0]])


def test_a_directory_that_is_no_model_is_not_exported(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(NotExportable):
        OnnxQueryEncoder.open(str(tmp_path / "model"), tmp_path / "cache", threads=1)
    assert not list((tmp_path / "cache").glob("*.onnx"))


async def test_a_query_process_embeds_on_onnx_without_a_torch_model(torch_model, query_process):
    model = LocalModel()
    vectors = await model.encode(TEXTS)
    assert model._onnx is not None and model._model is None
    assert list((query_process / "models").glob("*.onnx"))
    expected = torch_model.encode(TEXTS, normalize_embeddings=True, show_progress_bar=False).tolist()
    for a, b in zip(expected, vectors, strict=True):
        assert cosine(a, b) > 0.99999


async def test_a_failed_export_leaves_the_query_process_on_torch_and_says_why(query_process, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise NotExportable("no exporter here")

    monkeypatch.setattr(OnnxQueryEncoder, "open", refuse)
    model = LocalModel()
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        [vector] = await model.encode(["Where does my sister live now?"])
    assert model._onnx is None and model._model is not None and len(vector) == 384
    assert "not ONNX Runtime: no exporter here" in caplog.text


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    """An empty model cache in which the int8 model is asked for first, as an API started with it asks."""
    cache = tmp_path_factory.mktemp("models-int8")
    OnnxQueryEncoder.open(MODEL, cache, threads=1, int8=True)
    return cache


def test_int8_is_quantized_from_a_float_export_made_first_and_stays_near_torch(torch_model, quantized):
    float_export = export_path(MODEL, quantized)
    assert float_export.exists() and int8_path(float_export).exists()
    assert int8_path(float_export).stat().st_size < 0.4 * float_export.stat().st_size  # int8 weights
    encoder = OnnxQueryEncoder.open(MODEL, quantized, threads=1, int8=True)
    assert encoder.int8 and encoder.path == int8_path(float_export) and not list(quantized.glob("*.tmp"))
    exact = OnnxQueryEncoder.open(MODEL, quantized, threads=1)
    assert not exact.int8
    expected = torch_model.encode(TEXTS, normalize_embeddings=True, show_progress_bar=False).tolist()
    got = encoder.encode(TEXTS)
    for a, b, c in zip(expected, got, exact.encode(TEXTS), strict=True):
        assert math.hypot(*b) == pytest.approx(1.0, abs=1e-5)
        assert 0.98 < cosine(a, b) < 0.99999  # close to torch's, but not float's exact vector
        assert cosine(a, c) > 0.99999


def test_an_int8_model_far_from_torch_is_refused(quantized, tmp_path):
    float_export = export_path(MODEL, quantized)
    shutil.copy(int8_path(float_export), tmp_path / int8_path(float_export).name)
    meta = json.loads(float_export.with_suffix(".json").read_text())
    meta["probe"] = [-x for x in meta["probe"]]
    int8_path(tmp_path / float_export.name).with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(NotExportable, match="differs from torch"):
        OnnxQueryEncoder.open(MODEL, tmp_path, threads=1, int8=True)


async def test_a_query_process_with_int8_precision_embeds_on_the_quantized_model(torch_model, query_process):
    embedder.embed_queries_with(1, "int8", "onnx")
    model = LocalModel()
    [vector] = await model.encode(["Where does my sister live now?"])
    assert model._onnx is not None and model._onnx.int8 and model._model is None
    [expected] = torch_model.encode(["Where does my sister live now?"], normalize_embeddings=True,
                                    show_progress_bar=False).tolist()
    assert 0.98 < cosine(expected, vector) < 0.99999
