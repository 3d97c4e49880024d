"""LlamaIndex vector stores as the core's :class:`exemplar_svm.stores.VectorStore`, their
nodes by id, and ``MetadataFilters`` in each engine's syntax: what :class:`ExemplarSVMRetriever`
needs from the external vector store of a ``VectorStoreIndex`` it searches in place.

This module dispatches: each supported vector store is bridged by one engine module of this
package (``chroma``, ``milvus``, ``faiss``, ``qdrant``, ``pgvector``), imported the first time
a store of its class is used.
"""

# ruff: noqa: E402 - the dependency check must run before llama_index is imported

from __future__ import annotations

from exemplar_svm._optional import class_in, require

require("llama_index.core", extra="llama-index")

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.schema import (
    BaseNode,
)
from llama_index.core.vector_stores.simple import SimpleVectorStore
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery
from numpy.typing import NDArray

from exemplar_svm.stores import FilterableStore, Metric, VectorStore, nearest_many

__all__ = [
    "SUPPORTED_VECTOR_STORES",
    "QueryStore",
    "StoreFilter",
    "is_external",
    "store_filter",
    "store_from_vector_store_index",
    "stored_nodes",
]

#: The external LlamaIndex vector stores searched in place, as (package, class name); matched
#: by name (subclasses too), so none of these packages is imported to check.
SUPPORTED_VECTOR_STORES: tuple[tuple[str, str], ...] = (
    ("llama_index", "ChromaVectorStore"),
    ("llama_index", "MilvusVectorStore"),
    ("llama_index", "FaissVectorStore"),
    ("llama_index", "QdrantVectorStore"),
    ("llama_index", "PGVectorStore"),
)

# The engine module of this package that bridges each class of SUPPORTED_VECTOR_STORES.
_ENGINES: dict[str, str] = {
    "ChromaVectorStore": "chroma",
    "MilvusVectorStore": "milvus",
    "FaissVectorStore": "faiss",
    "QdrantVectorStore": "qdrant",
    "PGVectorStore": "pgvector",
}


class _Engine(Protocol):
    """What every engine module provides for its LlamaIndex vector store."""

    #: Whether the integration's own ``VectorStoreQuery`` applies ``MetadataFilters``.
    FILTERS_IN_QUERY: bool

    def store(self, index: VectorStoreIndex) -> VectorStore:
        """The core's store over ``index``'s vector store (see
        :func:`store_from_vector_store_index`)."""
        ...

    def store_filter(self, index: VectorStoreIndex, filters: MetadataFilters) -> Any:
        """``filters`` in the core store's syntax (see :func:`store_filter`)."""
        ...


if TYPE_CHECKING:  # mypy checks that every engine module has the interface
    from exemplar_svm.llama_index._stores import chroma, faiss, milvus, pgvector, qdrant

    _CHECKED: tuple[_Engine, ...] = (chroma, milvus, faiss, qdrant, pgvector)


def _engine(vector_store: Any) -> _Engine | None:
    """The engine module for ``vector_store``'s class, or None for any other store (the
    in-memory ``SimpleVectorStore``, or one a custom ``store=`` reads)."""
    kind = class_in(vector_store, SUPPORTED_VECTOR_STORES)
    if kind is None:
        return None
    # Imported on first use: a module may import its engine's core store at its top.
    return cast(_Engine, importlib.import_module(f"{__name__}.{_ENGINES[kind]}"))


def store_from_vector_store_index(index: VectorStoreIndex) -> VectorStore:
    """The core's :class:`~exemplar_svm.stores.VectorStore` over the vector store of ``index``.

    Nothing is copied; the ids are node ids.

    - ``ChromaVectorStore``: :class:`~exemplar_svm.stores.chroma.ChromaStore` on its
      collection (extra ``chroma``);
    - ``MilvusVectorStore``: :class:`~exemplar_svm.stores.milvus.MilvusStore` on its
      ``MilvusClient`` and collection, with its id and dense embedding fields (extra
      ``milvus``);
    - ``FaissVectorStore``: :class:`~exemplar_svm.stores.faiss.FaissStore` on its FAISS index,
      positions mapped to node ids through ``index.index_struct.nodes_dict`` (extra ``faiss``);
    - ``QdrantVectorStore``: :class:`~exemplar_svm.stores.qdrant.QdrantStore` on its client,
      collection and dense vector (extra ``qdrant``);
    - ``PGVectorStore``: :class:`~exemplar_svm.stores.pgvector.PgVectorStore` on its engine
      and table, by cosine distance as its own queries rank (extra ``pgvector``).

    Any other vector store raises ``ValueError``: implement
    :class:`exemplar_svm.stores.VectorStore` over it and pass it to
    ``ExemplarSVMRetriever.from_defaults(index=..., store=...)``; or pass the nodes, which are
    embedded again (``from_defaults(nodes=...)``).
    """
    if not isinstance(index, VectorStoreIndex):
        raise TypeError(f"index must be a VectorStoreIndex, got {type(index).__name__}")
    vector_store: Any = index.vector_store
    engine = _engine(vector_store)
    if engine is not None:
        return engine.store(index)
    supported = ", ".join(name for _, name in SUPPORTED_VECTOR_STORES)
    raise ValueError(
        f"this VectorStoreIndex keeps its embeddings in a {type(vector_store).__name__}, which "
        "ExemplarSVMRetriever cannot search in place yet: it supports the in-memory "
        f"SimpleVectorStore and {supported}. For another store, implement "
        "exemplar_svm.stores.VectorStore over it (node ids as ids) and pass "
        "from_defaults(index=..., store=your_store); or pass the nodes instead (they are "
        "re-embedded): ExemplarSVMRetriever.from_defaults(nodes=..., embed_model=...)"
    )


def store_filter(index: VectorStoreIndex, filters: MetadataFilters) -> Any:
    """``filters`` in the syntax of the core's store over ``index``'s vector store (see
    :class:`exemplar_svm.stores.FilterableStore`), translated as the LlamaIndex store
    integration translates them for its own queries.

    - ``ChromaVectorStore``: a Chroma ``where`` dict;
    - ``MilvusVectorStore``: a Milvus boolean expression;
    - ``QdrantVectorStore``: a ``qdrant_client.models.Filter``;
    - ``PGVectorStore``: a SQLAlchemy clause over its table;
    - ``FaissVectorStore`` (FAISS keeps no metadata): the ids of the docstore's nodes that
      match (``build_metadata_filter_fn`` semantics);
    - any other store: ``filters`` as they are, for a custom store's ``filtered``.

    Raises ``ValueError`` for filters the integration cannot translate.
    """
    engine = _engine(index.vector_store)
    return filters if engine is None else engine.store_filter(index, filters)


@dataclass(frozen=True)
class StoreFilter:
    """A query's filters: as LlamaIndex states them, and in the core store's syntax."""

    filters: MetadataFilters
    native: Any


def is_external(index: VectorStoreIndex) -> bool:
    """True for a VectorStoreIndex whose embeddings are not in a SimpleVectorStore."""
    return isinstance(index, VectorStoreIndex) and not isinstance(
        index.vector_store, SimpleVectorStore
    )


class QueryStore:
    """A store whose ranking query is the LlamaIndex vector store's own ``VectorStoreQuery``
    (``query_embedding`` = the SVM's weight vector); vectors come from the core's store."""

    def __init__(self, core: VectorStore, index: VectorStoreIndex) -> None:
        self.core = core
        self._index = index
        self._filters: MetadataFilters | None = None

    def filtered(self, filter: StoreFilter) -> QueryStore:
        """The view whose searches apply ``filter``: the core's in its store's syntax, and the
        ranking query's as ``VectorStoreQuery.filters`` (the integration translates them)."""
        if not isinstance(self.core, FilterableStore):
            raise TypeError(
                f"{type(self.core).__name__} cannot apply metadata filters (it has no "
                "filtered(filter) method; see exemplar_svm.stores.FilterableStore), and filters "
                "are never ignored: implement it, or query without filters"
            )
        view = QueryStore(self.core.filtered(filter.native), self._index)
        # An integration that refuses filters (FAISS's): its ranking query goes to the core's view.
        engine = _engine(self._index.vector_store)
        if engine is None or engine.FILTERS_IN_QUERY:
            view._filters = filter.filters
        else:
            view._direct = True
        return view

    @property
    def metric(self) -> Metric:
        return self.core.metric

    def count(self) -> int:
        return self.core.count()

    def nearest(self, vector: NDArray[np.float32], k: int) -> tuple[list[str], NDArray[np.float32]]:
        return self.core.nearest(vector, k)

    def nearest_many(
        self, vectors: NDArray[np.float32], k: Sequence[int]
    ) -> list[tuple[list[str], NDArray[np.float32]]]:
        # The core's batched search when it has one (FAISS scans once for all the vectors).
        return nearest_many(self.core, vectors, k)

    _direct = False

    def search_by_vector(self, vector: NDArray[np.float32], k: int) -> list[str]:
        if self._direct:
            return self.core.search_by_vector(vector, k)
        query = VectorStoreQuery(
            query_embedding=[float(x) for x in np.ravel(vector)],
            similarity_top_k=k,
            filters=self._filters,
        )
        result = self._index.vector_store.query(query)
        if result.nodes is not None:
            return [node.node_id for node in result.nodes]
        # A store without text returns its own ids; the index maps them to node ids.
        nodes_dict = self._index.index_struct.nodes_dict
        return [str(nodes_dict.get(item, item)) for item in result.ids or []]

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        return self.core.sample(size, seed)

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        return self.core.fetch(ids)

    def __repr__(self) -> str:
        return repr(self.core)


def stored_nodes(index: VectorStoreIndex, ids: list[str]) -> dict[str, BaseNode]:
    """The nodes of ``ids`` (those found) by id: from the vector store when it keeps text, as
    LlamaIndex's own retriever reads them, else from the index's docstore."""
    if not ids:
        return {}
    vector_store = index.vector_store
    if vector_store.stores_text:
        nodes = vector_store.get_nodes(node_ids=ids)
    else:
        nodes = index.docstore.get_nodes(ids, raise_error=False)
    return {node.node_id: node for node in nodes if node is not None}
