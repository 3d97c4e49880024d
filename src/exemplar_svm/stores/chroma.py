"""Chroma as a :class:`~exemplar_svm.stores.VectorStore` (extra ``chroma``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_count, check_k, check_positive
from exemplar_svm._optional import require
from exemplar_svm.stores import METRICS, Metric, check_many


class ChromaStore:
    """A Chroma collection, searched and sampled where it lives.

    Parameters
    ----------
    collection : chromadb.Collection
        A collection from any Chroma client: ``chromadb.HttpClient`` against a ``chroma run``
        server, ``PersistentClient`` or ``EphemeralClient``. The framework stores hold one:
        ``langchain_chroma.Chroma._collection`` and LlamaIndex's
        ``ChromaVectorStore._collection``.
    page_size : int, default 100000
        The most ids one request of :meth:`sample` lists; it bounds the client's memory.
    workers : int, default 4
        Concurrent requests while sampling.

    Notes
    -----
    The metric is the collection's ``space`` (``configuration["hnsw"]["space"]`` or, in older
    Chroma, the ``hnsw:space`` metadata; Chroma's default is ``"l2"``). The SVM's ranking through
    the store is exact for ``"cosine"``, and for ``"ip"`` and ``"l2"`` only when the stored
    vectors are unit-normalised. Chroma searches with HNSW, so the ranking is as good as the
    collection's ``ef_search`` allows. Collection names need at least 3 characters.

    :meth:`sample` draws uniform random positions in Chroma's stable (insertion) order and
    reads the ids at those positions with ``get(offset=..., limit=..., include=[])`` requests
    spanning at most ``page_size`` rows, then the vectors of the chosen ids only. Chroma walks
    to an offset row by row on the server (measured: about 0.16 us per skipped row, 1.6 us per
    listed id, 5 ms per request), so one request per sampled position would skip
    ``size * count / 2`` rows (about 90 s for 2000 of 500k documents); covering the positions
    of a page with one request lists more ids but skips far fewer rows (measured on a loopback
    server: 2000 of 100k documents in 0.4 s, of 515k in 1.6 s). When ``size`` is small next
    to ``count`` the pages shrink to single positions. The client holds at most
    ``workers * page_size`` ids at a time, whatever the collection's size.
    """

    def __init__(self, collection: Any, *, page_size: int = 100_000, workers: int = 4) -> None:
        require("chromadb", extra="chroma")
        self.collection = collection
        self.page_size = int(check_positive(page_size, "page_size"))
        self.workers = int(check_positive(workers, "workers"))
        self._metric = _space(collection)
        self._dim: int | None = None
        # The ``where`` filter of every search (see filtered).
        self.where: Mapping[str, Any] | None = None

    @property
    def metric(self) -> Metric:
        return self._metric

    def count(self) -> int:
        return int(self.collection.count())

    def nearest(self, vector: ArrayLike, k: int) -> tuple[list[str], NDArray[np.float32]]:
        result = self._query(vector, k, ["embeddings"])
        ids = list(result["ids"][0])
        return ids, self._vectors(result["embeddings"][0], len(ids))

    def nearest_many(
        self, vectors: ArrayLike, k: Sequence[int]
    ) -> list[tuple[list[str], NDArray[np.float32]]]:
        # One request for every query (Chroma takes one n_results: the largest, then trimmed).
        queries, sizes = check_many(vectors, k)
        if not sizes:
            return []
        result = self.collection.query(
            query_embeddings=queries,
            n_results=max(sizes),
            include=["embeddings"],
            **self._where(),
        )
        answers = []
        for ids, embeddings, size in zip(result["ids"], result["embeddings"], sizes, strict=True):
            kept = list(ids[:size])
            answers.append((kept, self._vectors(embeddings, len(ids))[:size]))
        return answers

    def search_by_vector(self, vector: ArrayLike, k: int) -> list[str]:
        return list(self._query(vector, k, [])["ids"][0])

    def filtered(self, filter: Mapping[str, Any]) -> ChromaStore:
        """A view of this store whose searches return only documents matching ``filter``,
        a Chroma ``where``
        filter such as ``{"tenant": "a"}`` or ``{"$and": [...]}``; ``count``, ``sample`` and
        ``fetch`` still see the whole collection."""
        if not isinstance(filter, Mapping):
            raise ValueError(
                f"a Chroma filter is a where dict such as {{'tenant': 'a'}}, got "
                f"{type(filter).__name__}"
            )
        view = copy.copy(self)
        view.where = filter
        return view

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        n = self.count()
        size = min(check_count(size, "size"), n)
        positions = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        with ThreadPoolExecutor(self.workers) as pool:
            pages = pool.map(self._ids_at, _pages(positions, self.page_size))
            ids = [item for page in pages for item in page]
        return ids, self.fetch(ids)

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        ids = list(ids)
        if not ids:
            return np.empty((0, self._dimension()), dtype=np.float32)
        # Chroma refuses repeated ids in one get.
        unique = list(dict.fromkeys(ids))
        found: dict[str, NDArray[np.float32]] = {}
        for start in range(0, len(unique), 1000):
            result = self.collection.get(ids=unique[start : start + 1000], include=["embeddings"])
            rows = self._vectors(result["embeddings"], len(result["ids"]))
            found.update(zip(result["ids"], rows, strict=True))
        for item in unique:
            if item not in found:
                raise ValueError(
                    f"unknown id {item!r}: the Chroma collection {self.collection.name!r} has "
                    "no document with it; check the id or re-fetch it from the store"
                )
        return np.stack([found[item] for item in ids])

    def _query(self, vector: ArrayLike, k: int, include: list[str]) -> Any:
        query = as_matrix(vector, "vector", dtype=np.float32)
        if query.shape[0] != 1:
            raise ValueError(f"pass one query vector, got {query.shape[0]}")
        return self.collection.query(
            query_embeddings=query, n_results=check_k(k), include=include, **self._where()
        )

    def _where(self) -> dict[str, Any]:
        return {} if self.where is None else {"where": dict(self.where)}

    def _ids_at(self, positions: NDArray[np.int64]) -> list[str]:
        first, last = int(positions[0]), int(positions[-1])
        ids = self.collection.get(offset=first, limit=last - first + 1, include=[])["ids"]
        if len(ids) <= last - first:
            raise RuntimeError(
                f"the Chroma collection {self.collection.name!r} shrank while it was sampled; "
                "sample again once writes have finished"
            )
        return [ids[int(position) - first] for position in positions]

    def _vectors(self, embeddings: Any, count: int) -> NDArray[np.float32]:
        if count == 0:
            return np.empty((0, self._dimension()), dtype=np.float32)
        if embeddings is None:
            raise ValueError("Chroma returned no embeddings; the collection must store vectors")
        return np.asarray(embeddings, dtype=np.float32).reshape(count, -1)

    def _dimension(self) -> int:
        if self._dim is None:
            one = self.collection.get(limit=1, include=["embeddings"])["embeddings"]
            if one is None or len(one) == 0:
                return 0
            self._dim = len(one[0])
        return self._dim

    def __repr__(self) -> str:
        return f"ChromaStore({self.collection.name!r}, metric={self.metric!r})"


def _pages(positions: NDArray[np.int64], page_size: int) -> list[NDArray[np.int64]]:
    """Split sorted positions into runs that each span at most ``page_size`` rows."""
    pages = []
    start = 0
    while start < len(positions):
        end = int(np.searchsorted(positions, positions[start] + page_size, side="left"))
        pages.append(positions[start:end])
        start = end
    return pages


def _space(collection: Any) -> Metric:
    """The collection's distance: the configuration API (Chroma 1.x), else the metadata."""
    space: object = None
    configuration = getattr(collection, "configuration", None)
    if isinstance(configuration, Mapping):
        for section in ("hnsw", "spann"):
            settings = configuration.get(section)
            if isinstance(settings, Mapping) and settings.get("space"):
                space = settings["space"]
                break
    if space is None:
        metadata = getattr(collection, "metadata", None) or {}
        space = metadata.get("hnsw:space", "l2")
    space = str(space).lower()
    if space not in METRICS:
        raise ValueError(
            f"the Chroma collection uses the distance {space!r}; the exemplar SVM needs one of "
            f"{', '.join(METRICS)} (create the collection with configuration="
            '{"hnsw": {"space": "cosine"}})'
        )
    return cast(Metric, space)
