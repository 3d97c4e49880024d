"""Qdrant (a server, a cluster or local mode) as a :class:`~exemplar_svm.stores.VectorStore`
(extra ``qdrant``)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_count, check_k, check_positive
from exemplar_svm._optional import require
from exemplar_svm.stores import Metric, check_many

# Qdrant's distances and the metric each is; Manhattan orders no document by ``w @ x``.
_METRICS: dict[str, Metric] = {"Cosine": "cosine", "Dot": "ip", "Euclid": "l2"}


class QdrantStore:
    """A Qdrant collection, searched and sampled where it lives.

    Parameters
    ----------
    client : qdrant_client.QdrantClient
        A client of a Qdrant server or cluster (``QdrantClient(url=...)``) or of local mode
        (``QdrantClient(":memory:")`` or ``QdrantClient(path=...)``): the same API.
        LangChain's ``QdrantVectorStore`` keeps one in ``client``, LlamaIndex's
        ``QdrantVectorStore`` in ``client`` too.
    collection_name : str
        The collection to search.
    vector_name : str, optional
        The named vector to search, for a collection with named vectors (LlamaIndex names its
        dense vector ``text-dense`` in hybrid collections); by default the collection's
        unnamed vector, or its only named one.
    page_size : int, default 10000
        Point ids per ``scroll`` request while sampling; it bounds the client's memory.

    Notes
    -----
    The metric is the vector's ``distance``: ``Cosine`` (Qdrant normalises the vectors it
    stores, so the ranking by the SVM's weight vector is exact), ``Dot`` (exact over
    unit-normalised vectors only; :class:`exemplar_svm.StoreIndex` refuses others) and
    ``Euclid`` (the same). ``Manhattan`` is refused: no L1 ranking orders documents by
    ``w @ x``. Qdrant searches with HNSW unless the collection is small or the search is
    exact, so the ranking is as good as ``hnsw_ef`` allows; local mode scans exactly.
    Several queries go in one ``query_batch_points`` request. Point ids (integers or UUIDs)
    come back as strings and are converted back for :meth:`fetch`.

    :meth:`sample` scrolls the point ids in id order (ids only, ``page_size`` a request),
    keeps those at uniformly drawn ranks and retrieves the vectors of those alone.
    """

    def __init__(
        self,
        client: Any,
        collection_name: str,
        *,
        vector_name: str | None = None,
        page_size: int = 10_000,
    ) -> None:
        require("qdrant_client", extra="qdrant")
        self.client = client
        self.collection_name = collection_name
        self.page_size = int(check_positive(page_size, "page_size"))
        vectors = client.get_collection(collection_name).config.params.vectors
        if isinstance(vectors, dict):
            if vector_name is None or vector_name == "":
                if len(vectors) != 1:
                    raise ValueError(
                        f"the Qdrant collection {collection_name!r} has the named vectors "
                        f"{', '.join(map(repr, vectors))}: pass vector_name= to choose one"
                    )
                vector_name = next(iter(vectors))
            if vector_name not in vectors:
                raise ValueError(
                    f"the Qdrant collection {collection_name!r} has no vector {vector_name!r}; "
                    f"it has {', '.join(map(repr, vectors))}"
                )
            params = vectors[vector_name]
        else:
            if vector_name:
                raise ValueError(
                    f"the Qdrant collection {collection_name!r} has one unnamed vector: "
                    f"leave vector_name out (got {vector_name!r})"
                )
            params = vectors
        self.vector_name: str | None = vector_name or None
        self._dim = int(params.size)
        distance = str(getattr(params.distance, "value", params.distance))
        if distance not in _METRICS:
            raise ValueError(
                f"the Qdrant collection {collection_name!r} uses the distance {distance!r}; "
                "the exemplar SVM ranks by w @ x, which Cosine, Dot (over unit-normalised "
                "vectors) and Euclid (the same) keep: create the collection with "
                "VectorParams(distance=Distance.COSINE)"
            )
        self._metric: Metric = _METRICS[distance]
        # The filter every search applies (see filtered); None: none.
        self.query_filter: Any = None

    @property
    def metric(self) -> Metric:
        return self._metric

    def count(self) -> int:
        return int(self.client.count(self.collection_name, exact=True).count)

    def nearest(self, vector: ArrayLike, k: int) -> tuple[list[str], NDArray[np.float32]]:
        return self.nearest_many(self._one(vector), [k])[0]

    def nearest_many(
        self, vectors: ArrayLike, k: Sequence[int]
    ) -> list[tuple[list[str], NDArray[np.float32]]]:
        queries, sizes = check_many(vectors, k, self._dim)
        if not sizes:
            return []
        responses = self._batch(queries, sizes, with_vectors=True)
        return [self._answer(response.points) for response in responses]

    def search_by_vector(self, vector: ArrayLike, k: int) -> list[str]:
        (response,) = self._batch(self._one(vector), [check_k(k)], with_vectors=False)
        return [str(point.id) for point in response.points]

    def filtered(self, filter: Any) -> QdrantStore:
        """A view of this store whose searches return only points matching ``filter``, a
        ``qdrant_client.models.Filter`` (as ``query_filter`` of ``query_points``); ``count``,
        ``sample`` and ``fetch`` still see the whole collection."""
        models = require("qdrant_client.models", extra="qdrant")
        if not isinstance(filter, models.Filter):
            raise ValueError(
                "a Qdrant filter is a qdrant_client.models.Filter such as Filter(must=["
                "FieldCondition(key='tenant', match=MatchValue(value='a'))]), got "
                f"{type(filter).__name__}"
            )
        view = copy.copy(self)
        view.query_filter = filter
        return view

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        n = self.count()
        size = min(check_count(size, "size"), n)
        ranks = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        chosen: list[Any] = []
        seen = 0
        offset: Any = None
        wanted = iter(ranks.tolist())
        rank = next(wanted, None)
        while rank is not None:
            points, offset = self.client.scroll(
                self.collection_name,
                limit=self.page_size,
                offset=offset,
                with_payload=False,
                with_vectors=False,
            )
            while rank is not None and rank < seen + len(points):
                chosen.append(points[rank - seen].id)
                rank = next(wanted, None)
            seen += len(points)
            if offset is None:
                break
        if rank is not None:
            raise RuntimeError(
                f"the Qdrant collection {self.collection_name!r} shrank while it was sampled; "
                "sample again once writes have finished"
            )
        ids = [str(item) for item in chosen]
        return ids, self.fetch(ids)

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        ids = list(ids)
        if not ids:
            return np.empty((0, self._dim), dtype=np.float32)
        unique = list(dict.fromkeys(ids))
        found: dict[str, NDArray[np.float32]] = {}
        for start in range(0, len(unique), 1000):
            keys = [point_id(item) for item in unique[start : start + 1000]]
            points = self.client.retrieve(
                self.collection_name, ids=keys, with_payload=False, with_vectors=True
            )
            found.update((str(point.id), self._vector(point)) for point in points)
        for item in unique:
            if item not in found:
                raise ValueError(
                    f"unknown id {item!r}: the Qdrant collection {self.collection_name!r} has "
                    "no point with it; check the id or re-fetch it from the store"
                )
        return np.stack([found[item] for item in ids])

    def _one(self, vector: ArrayLike) -> NDArray[np.float32]:
        query = as_matrix(vector, "vector", dim=self._dim, dtype=np.float32)
        if query.shape[0] != 1:
            raise ValueError(f"pass one query vector, got {query.shape[0]}")
        return query

    def _batch(self, queries: NDArray[np.float32], sizes: Sequence[int], with_vectors: bool) -> Any:
        """One ``query_batch_points`` request for every row of ``queries``."""
        models = require("qdrant_client.models", extra="qdrant")
        named = [self.vector_name] if self.vector_name else True
        vectors: Any = named if with_vectors else False
        requests = [
            models.QueryRequest(
                query=row.tolist(),
                using=self.vector_name,
                limit=int(size),
                filter=self.query_filter,
                with_vector=vectors,
                with_payload=False,
            )
            for row, size in zip(queries, sizes, strict=True)
        ]
        return self.client.query_batch_points(self.collection_name, requests=requests)

    def _answer(self, points: Sequence[Any]) -> tuple[list[str], NDArray[np.float32]]:
        ids = [str(point.id) for point in points]
        if not points:
            return ids, np.empty((0, self._dim), dtype=np.float32)
        return ids, np.stack([self._vector(point) for point in points])

    def _vector(self, point: Any) -> NDArray[np.float32]:
        vector = point.vector
        if isinstance(vector, dict):
            vector = vector.get(self.vector_name or "")
        if vector is None:
            raise ValueError(
                f"Qdrant returned point {point.id!r} without its vector {self.vector_name!r}"
            )
        return np.asarray(vector, dtype=np.float32)

    def __repr__(self) -> str:
        return f"QdrantStore({self.collection_name!r}, metric={self.metric!r})"


def point_id(item: str) -> int | str:
    """A point id as Qdrant takes it: an unsigned integer, else a UUID string."""
    if item.isdigit():
        return int(item)
    try:
        return str(uuid.UUID(item))
    except ValueError:
        raise ValueError(
            f"unknown id {item!r}: Qdrant point ids are unsigned integers or UUIDs"
        ) from None
