"""A FAISS index as a :class:`~exemplar_svm.stores.VectorStore` (extra ``faiss``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_count, check_k
from exemplar_svm._optional import require
from exemplar_svm.stores import Metric, check_many

#: How FAISS labels (what ``index.search`` returns) map to document ids.
IdMap = Union[Sequence[str], Mapping[int, str], None]  # noqa: UP007
#: A FAISS filter: the document ids allowed, or a predicate on a document id.
IdFilter = Union[Collection[str], Callable[[str], bool]]  # noqa: UP007


class FaissStore:
    """A FAISS index in this process, searched and sampled in place.

    Parameters
    ----------
    index : faiss.Index
        Any index that can reconstruct its vectors: ``IndexFlatIP``, ``IndexFlatL2``,
        ``IndexHNSWFlat``, ``IndexIDMap`` / ``IndexIDMap2`` over one of those, or an IVF index
        after ``index.make_direct_map()``. LangChain's ``FAISS`` keeps it in ``index`` and
        LlamaIndex's ``FaissVectorStore`` in ``client``.
    ids : sequence of str, mapping of int to str, or None
        The document id of each FAISS label (the numbers ``index.search`` returns: row
        positions, or the ids given to ``add_with_ids`` of an ``IndexIDMap``). A list indexed
        by label, a dict such as LangChain's ``FAISS.index_to_docstore_id``, or ``None`` for the
        label itself as a string (what LlamaIndex's ``FaissVectorStore`` uses).

    Notes
    -----
    The metric is the index's ``metric_type``: ``METRIC_INNER_PRODUCT`` is ``"ip"`` and
    ``METRIC_L2`` is ``"l2"`` (LangChain's cosine strategy is inner product over normalised
    vectors). The SVM's ranking through the store is exact with either only when the stored
    vectors are unit-normalised; flat indexes search exactly, HNSW as well as its
    ``efSearch`` allows. :meth:`sample` reconstructs uniformly drawn rows directly: it costs
    ``size`` reconstructions and no scan.
    """

    def __init__(self, index: Any, ids: IdMap = None) -> None:
        faiss = require("faiss", extra="faiss")
        self.index = index
        self.ids = ids
        # A plain IndexIDMap cannot reconstruct by label; its inner index can, by row.
        self._id_map = isinstance(index, faiss.IndexIDMap)
        self._inner = faiss.downcast_index(index.index) if self._id_map else index
        if index.metric_type == faiss.METRIC_INNER_PRODUCT:
            self._metric: Metric = "ip"
        elif index.metric_type == faiss.METRIC_L2:
            self._metric = "l2"
        else:
            raise ValueError(
                f"the FAISS index uses metric_type {index.metric_type}; the exemplar SVM needs "
                "METRIC_INNER_PRODUCT (over unit-normalised vectors) or METRIC_L2"
            )
        if index.ntotal:
            try:
                self._inner.reconstruct(0)
            except RuntimeError as exc:
                raise ValueError(
                    f"the FAISS index {type(self._inner).__name__} cannot return its stored "
                    "vectors, which the exemplar SVM trains on: call index.make_direct_map() on "
                    "an IVF index, or use an index that keeps them (IndexFlatIP, IndexHNSWFlat, "
                    f"IndexIDMap2): {str(exc).splitlines()[-1]}"
                ) from None
        # Lookups built on first use and rebuilt when the index has grown (documents added
        # through the framework's store after this wrapper was made).
        self._seen = -1
        self._labels: NDArray[np.int64] | None = None
        self._rows: dict[int, int] | None = None
        self._label_of: dict[str, int] | None = None
        # The documents every search may return (see filtered); None: all.
        self.allowed: IdFilter | None = None

    def _current(self) -> None:
        if self._seen == self.index.ntotal:
            return
        faiss = require("faiss", extra="faiss")
        self._seen = int(self.index.ntotal)
        self._labels = faiss.vector_to_array(self.index.id_map) if self._id_map else None
        self._rows = None
        self._label_of = None

    @property
    def metric(self) -> Metric:
        return self._metric

    def count(self) -> int:
        return int(self.index.ntotal)

    def nearest(self, vector: ArrayLike, k: int) -> tuple[list[str], NDArray[np.float32]]:
        labels = self._search(vector, k)
        return self._ids(labels), self._reconstruct(self._row(labels))

    def nearest_many(
        self, vectors: ArrayLike, k: Sequence[int]
    ) -> list[tuple[list[str], NDArray[np.float32]]]:
        # One search for every query: a flat index streams its vectors once for all of them
        # (FAISS splits the queries between its threads) rather than once per query.
        queries, sizes = check_many(vectors, k, self.index.d)
        if not sizes:
            return []
        return [
            (self._ids(kept), self._reconstruct(self._row(kept)))
            for kept in self._nearest_labels(queries, max(sizes), sizes)
        ]

    def search_by_vector(self, vector: ArrayLike, k: int) -> list[str]:
        return self._ids(self._search(vector, k))

    def filtered(self, filter: IdFilter) -> FaissStore:
        """A view of this store whose searches return only the documents ``filter`` allows:
        a collection of document ids, or a predicate on a document id. FAISS keeps no
        metadata, so the framework adapters evaluate a metadata filter over their docstore
        and pass the ids that match. The searches restrict FAISS itself (an ``IDSelector``),
        so the top ``k`` of the allowed documents come back, however few they are."""
        if not callable(filter) and (isinstance(filter, str) or not isinstance(filter, Collection)):
            raise ValueError(
                "a FAISS filter is a collection of document ids or a predicate on an id, got "
                f"{type(filter).__name__}"
            )
        view = copy.copy(self)
        view.allowed = filter
        return view

    def _params(self) -> Any:
        """Search parameters restricting FAISS to the allowed labels, or None."""
        if self.allowed is None:
            return None
        faiss = require("faiss", extra="faiss")
        self._current()
        if self._label_of is None:
            self._label_of = self._reverse()
        allowed = self.allowed
        if callable(allowed):
            labels = [label for item, label in self._label_of.items() if allowed(item)]
        else:
            labels = [self._label_of[item] for item in allowed if item in self._label_of]
        selector = faiss.IDSelectorBatch(np.asarray(labels, dtype=np.int64))
        if isinstance(self._inner, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=selector)
        elif isinstance(self._inner, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=selector)
        else:
            params = faiss.SearchParameters(sel=selector)
        params._selector = selector  # FAISS holds a raw pointer: keep the selector alive
        return params

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        n = self.count()
        size = min(check_count(size, "size"), n)
        rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        self._current()
        labels = rows if self._labels is None else self._labels[rows]
        return [self._id(int(label)) for label in labels], self._reconstruct(rows)

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        self._current()
        if self._label_of is None:
            self._label_of = self._reverse()
        labels = []
        for item in ids:
            label = self._label_of.get(item)
            if label is None:
                raise ValueError(
                    f"unknown id {item!r}: the FAISS index has no document with it; check the "
                    "id, or pass ids= mapping every FAISS label to its document id"
                )
            labels.append(label)
        return self._reconstruct(self._row(labels))

    def _search(self, vector: ArrayLike, k: int) -> list[int]:
        query = as_matrix(vector, "vector", dim=self.index.d, dtype=np.float32)
        if query.shape[0] != 1:
            raise ValueError(f"pass one query vector, got {query.shape[0]}")
        size = check_k(k)
        return self._nearest_labels(query, size, [size])[0]

    def _nearest_labels(
        self, queries: NDArray[np.float32], k: int, sizes: Sequence[int]
    ) -> list[list[int]]:
        """The labels of each query's ``sizes[i]`` nearest documents (one search for all)."""
        params = self._params()
        size = min(k, max(self.count(), 1))
        if params is None:
            _, labels = self.index.search(queries, size)
        else:
            _, labels = self.index.search(queries, size, params=params)
        # FAISS pads with -1 when fewer than k documents are found.
        return [
            [int(label) for label in found[:size] if label >= 0]
            for found, size in zip(labels, sizes, strict=True)
        ]

    def _ids(self, labels: list[int]) -> list[str]:
        ids = self.ids
        # Tens of thousands of labels per search: index a list directly when all of them map.
        if isinstance(ids, Sequence) and labels and min(labels) >= 0 and max(labels) < len(ids):
            return [ids[label] for label in labels]
        return [self._id(label) for label in labels]

    def _id(self, label: int) -> str:
        if self.ids is None:
            return str(label)
        try:
            return self.ids[label]
        except (IndexError, KeyError):
            raise ValueError(
                f"FAISS label {label} has no document id in ids= (it maps "
                f"{len(self.ids)} labels for {self.count()} vectors); rebuild the id map"
            ) from None

    def _row(self, labels: list[int]) -> NDArray[np.int64]:
        self._current()
        if self._labels is None:
            return np.asarray(labels, dtype=np.int64)
        if self._rows is None:
            self._rows = {int(label): row for row, label in enumerate(self._labels)}
        return np.asarray([self._rows[label] for label in labels], dtype=np.int64)

    def _reverse(self) -> dict[str, int]:
        labels = range(self.count()) if self._labels is None else self._labels.tolist()
        return {self._id(int(label)): int(label) for label in labels}

    def _reconstruct(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        if len(rows) == 0:
            return np.empty((0, self.index.d), dtype=np.float32)
        faiss = require("faiss", extra="faiss")
        if isinstance(self._inner, faiss.IndexFlat):
            # A flat index stores the vectors as they are: read the rows through a view of its
            # storage (reconstruct_batch copies them one by one, 3x slower for 30k rows).
            size = int(self._inner.ntotal)
            stored = faiss.rev_swig_ptr(self._inner.get_xb(), size * self._inner.d)
            return np.asarray(stored.reshape(size, self._inner.d)[rows], dtype=np.float32)
        return np.asarray(self._inner.reconstruct_batch(rows), dtype=np.float32)

    def __repr__(self) -> str:
        return f"FaissStore({type(self.index).__name__}, metric={self.metric!r})"
