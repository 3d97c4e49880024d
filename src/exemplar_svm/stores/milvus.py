"""Milvus (a cluster, or Milvus Lite in a local file) as a
:class:`~exemplar_svm.stores.VectorStore` (extra ``milvus``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_count, check_k
from exemplar_svm._optional import require
from exemplar_svm.stores import METRICS, Metric, check_many

# Milvus refuses a query or iterator batch larger than this (its offset + limit cap).
_MAX_BATCH = 16_384


class MilvusStore:
    """A Milvus collection, searched and sampled where it lives.

    Parameters
    ----------
    client : pymilvus.MilvusClient
        A client of a Milvus cluster (``MilvusClient("http://host:19530")``) or of Milvus Lite
        (``MilvusClient("docs.db")``). LangChain's ``langchain_milvus.Milvus`` keeps one in
        ``client`` and LlamaIndex's ``MilvusVectorStore`` in ``client`` too.
    collection_name : str
        The collection to search.
    vector_field, id_field : str, optional
        The float-vector field and the primary key. By default the collection's primary key
        and its only ``FLOAT_VECTOR`` field (LangChain names them ``pk`` and ``vector``,
        LlamaIndex ``id`` and ``embedding``).
    search_params : mapping, optional
        Passed to ``MilvusClient.search`` (for example ``{"params": {"ef": 256}}`` on an HNSW
        index); by default the index's own settings.
    page_size : int, default 16384
        Primary keys per request while sampling (at most Milvus's cap of 16384); it bounds the
        client's memory.

    Notes
    -----
    The metric is the ``metric_type`` of the vector field's index (``COSINE``, ``IP`` or
    ``L2``). The SVM's ranking through the store is exact for ``COSINE``, and for ``IP`` and
    ``L2`` only when the stored vectors are unit-normalised; it is exact where the index
    searches exactly (``FLAT``) and as good as the ANN index otherwise (``AUTOINDEX`` is HNSW
    in Milvus Lite 3 when faiss is installed; it was brute force in Milvus Lite 2.4). Integer
    primary keys come back as strings and are converted back for :meth:`fetch`. A released
    collection is loaded, as search requires.

    :meth:`sample` draws uniform random ranks in primary-key order, then walks the keys with
    ``query_iterator`` (a primary-key cursor: Milvus caps ``offset + limit`` of a plain query
    at 16384, and its order is not stable) asking for the key field only, keeps the keys at the
    drawn ranks and fetches the vectors of those alone. Every key crosses the wire once per
    sample but the client holds one page of them at a time, so its memory does not grow with
    the collection. Cost: ``count / page_size`` key-only queries plus ``size / 1000`` gets.
    A search returns at most 16384 documents (Milvus's cap on ``limit``), whatever ``k`` asks
    for; :class:`exemplar_svm.StoreIndex` then fetches that many.

    Milvus Lite 3 is a Python engine that scans and sorts the whole collection for every page
    (measured: 2000 of 100k documents in about 4 s), so it suits collections up to a few
    hundred thousand documents; a Milvus server answers each page from its primary-key index.
    """

    def __init__(
        self,
        client: Any,
        collection_name: str,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        search_params: Mapping[str, Any] | None = None,
        page_size: int = _MAX_BATCH,
    ) -> None:
        pymilvus = require("pymilvus", extra="milvus")
        self.client = client
        self.collection_name = collection_name
        self.search_params = dict(search_params or {})
        if not 1 <= check_count(page_size, "page_size") <= _MAX_BATCH:
            raise ValueError(f"page_size must be between 1 and {_MAX_BATCH}, got {page_size}")
        self.page_size = page_size
        if not client.has_collection(collection_name):
            raise ValueError(
                f"Milvus has no collection {collection_name!r}; "
                f"existing collections: {client.list_collections()}"
            )
        fields = client.describe_collection(collection_name)["fields"]
        primary = next(field for field in fields if field.get("is_primary"))
        self.id_field = id_field or primary["name"]
        if self.id_field != primary["name"]:
            raise ValueError(
                f"id_field {self.id_field!r} is not the primary key of {collection_name!r}; "
                f"pass id_field={primary['name']!r} (or leave it out)"
            )
        self._int_ids = primary["type"] == pymilvus.DataType.INT64
        self.vector_field = vector_field or _vector_field(fields, collection_name, pymilvus)
        self._dim = _dimension(fields, self.vector_field, collection_name, pymilvus)
        self._metric = _index_metric(client, collection_name, self.vector_field)
        state = client.get_load_state(collection_name).get("state")
        if getattr(state, "name", None) != "Loaded":
            client.load_collection(collection_name)
        # The boolean expression every search applies (see filtered); "" filters nothing.
        self.expr = ""

    @property
    def metric(self) -> Metric:
        return self._metric

    def count(self) -> int:
        rows = self.client.query(self.collection_name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def nearest(self, vector: ArrayLike, k: int) -> tuple[list[str], NDArray[np.float32]]:
        return self._answer(self._search(vector, k, [self.vector_field]))

    def nearest_many(
        self, vectors: ArrayLike, k: Sequence[int]
    ) -> list[tuple[list[str], NDArray[np.float32]]]:
        # One request for every query (Milvus takes one limit: the largest, then trimmed).
        queries, sizes = check_many(vectors, k, self._dim)
        if not sizes:
            return []
        results = self._request(queries, max(sizes), [self.vector_field])
        return [self._answer(list(hits)[:size]) for hits, size in zip(results, sizes, strict=True)]

    def search_by_vector(self, vector: ArrayLike, k: int) -> list[str]:
        return [str(hit[self.id_field]) for hit in self._search(vector, k, [])]

    def filtered(self, filter: str) -> MilvusStore:
        """A view of this store whose searches return only documents matching ``filter``,
        a Milvus boolean expression
        such as ``'tenant == "a"'``; ``count``, ``sample`` and ``fetch`` still see the whole
        collection."""
        if not isinstance(filter, str) or not filter.strip():
            raise ValueError(
                f"a Milvus filter is a boolean expression such as 'tenant == \"a\"', got {filter!r}"
            )
        view = copy.copy(self)
        view.expr = filter
        return view

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        n = self.count()
        size = min(check_count(size, "size"), n)
        if size == 0:
            return [], self._vectors([])
        ranks = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        ids: list[str] = []
        seen = 0
        pages = self.client.query_iterator(
            self.collection_name,
            batch_size=self.page_size,
            filter="",
            output_fields=[self.id_field],
        )
        try:
            while len(ids) < size:
                page = pages.next()
                if not page:
                    break
                wanted = ranks[(ranks >= seen) & (ranks < seen + len(page))] - seen
                ids.extend(str(page[int(row)][self.id_field]) for row in wanted)
                seen += len(page)
        finally:
            pages.close()
        if len(ids) < size:
            raise RuntimeError(
                f"the Milvus collection {self.collection_name!r} shrank while it was sampled; "
                "sample again once writes have finished"
            )
        return ids, self.fetch(ids)

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        ids = list(ids)
        keys = dict.fromkeys(ids)
        found: dict[str, NDArray[np.float32]] = {}
        unique = list(keys)
        for start in range(0, len(unique), 1000):
            batch = [self._key(item) for item in unique[start : start + 1000]]
            rows = self.client.get(
                self.collection_name, ids=batch, output_fields=[self.vector_field]
            )
            vectors = self._vectors([row[self.vector_field] for row in rows])
            found.update(zip((str(row[self.id_field]) for row in rows), vectors, strict=True))
        for item in unique:
            if item not in found:
                raise ValueError(
                    f"unknown id {item!r}: the Milvus collection {self.collection_name!r} has no "
                    "document with it; check the id or re-fetch it from the store"
                )
        if not ids:
            return self._vectors([])
        return np.stack([found[item] for item in ids])

    def _search(self, vector: ArrayLike, k: int, output_fields: list[str]) -> list[Any]:
        query = as_matrix(vector, "vector", dim=self._dim, dtype=np.float32)
        if query.shape[0] != 1:
            raise ValueError(f"pass one query vector, got {query.shape[0]}")
        return list(self._request(query, check_k(k), output_fields)[0])

    def _request(self, queries: NDArray[np.float32], k: int, output_fields: list[str]) -> Any:
        """One search request for every row of ``queries`` (at most Milvus's cap each)."""
        return self.client.search(
            self.collection_name,
            data=[row.tolist() for row in queries],
            limit=min(k, _MAX_BATCH),
            anns_field=self.vector_field,
            output_fields=output_fields,
            search_params=self.search_params,
            filter=self.expr,
        )

    def _answer(self, hits: Sequence[Any]) -> tuple[list[str], NDArray[np.float32]]:
        """The ids and vectors of a search's hits."""
        ids = [str(hit[self.id_field]) for hit in hits]
        return ids, self._vectors([hit["entity"][self.vector_field] for hit in hits])

    def _key(self, item: str) -> str | int:
        if not self._int_ids:
            return item
        try:
            return int(item)
        except (TypeError, ValueError):
            raise ValueError(
                f"unknown id {item!r}: the Milvus collection {self.collection_name!r} has "
                "integer primary keys; pass them as decimal strings"
            ) from None

    def _vectors(self, rows: Sequence[Any]) -> NDArray[np.float32]:
        if not rows:
            return np.empty((0, self._dim), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self._dim)

    def __repr__(self) -> str:
        return f"MilvusStore({self.collection_name!r}, metric={self.metric!r})"


def _vector_field(fields: list[dict[str, Any]], collection: str, pymilvus: Any) -> str:
    names = [field["name"] for field in fields if field["type"] == pymilvus.DataType.FLOAT_VECTOR]
    if len(names) != 1:
        raise ValueError(
            f"the Milvus collection {collection!r} has {len(names)} float-vector fields "
            f"{names}; pass vector_field= to choose the one to search"
        )
    return cast(str, names[0])


def _dimension(fields: list[dict[str, Any]], name: str, collection: str, pymilvus: Any) -> int:
    for field in fields:
        if field["name"] == name:
            if field["type"] != pymilvus.DataType.FLOAT_VECTOR:
                raise ValueError(
                    f"field {name!r} of {collection!r} is {field['type']!r}, not FLOAT_VECTOR; "
                    "the exemplar SVM needs float32 vectors"
                )
            return int(field["params"]["dim"])
    raise ValueError(
        f"the Milvus collection {collection!r} has no field {name!r}; "
        f"its fields are {[field['name'] for field in fields]}"
    )


def _index_metric(client: Any, collection: str, field: str) -> Metric:
    names = client.list_indexes(collection, field_name=field)
    if not names:
        raise ValueError(
            f"the vector field {field!r} of {collection!r} has no index, so Milvus cannot "
            "search it; create one (metric_type COSINE keeps the SVM's ranking exact)"
        )
    metric = str(client.describe_index(collection, names[0]).get("metric_type", "")).lower()
    if metric not in METRICS:
        raise ValueError(
            f"the index of {field!r} in {collection!r} uses the metric {metric.upper()!r}; "
            "the exemplar SVM needs COSINE, IP or L2 (COSINE keeps its ranking exact)"
        )
    return cast(Metric, metric)
