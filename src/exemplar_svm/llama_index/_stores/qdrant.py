"""``QdrantVectorStore``: :class:`~exemplar_svm.stores.qdrant.QdrantStore` on its client,
collection and dense vector, and ``MetadataFilters`` as a ``qdrant_client.models.Filter``."""

from __future__ import annotations

from typing import Any

from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.vector_stores.types import MetadataFilters

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.qdrant import QdrantStore

__all__ = ["FILTERS_IN_QUERY", "store", "store_filter"]

FILTERS_IN_QUERY = True


def store(index: VectorStoreIndex) -> VectorStore:
    vector_store: Any = index.vector_store  # attributes of the engine's own class
    if vector_store.client is None:
        raise ValueError(
            "this QdrantVectorStore has only an async client; pass client= (a "
            "QdrantClient) too, which the exemplar SVM searches with"
        )
    return QdrantStore(
        vector_store.client,
        vector_store.collection_name,
        vector_name=_qdrant_vector_name(vector_store),
    )


def store_filter(index: VectorStoreIndex, filters: MetadataFilters) -> Any:
    vector_store: Any = index.vector_store
    return vector_store._build_subfilter(filters)


def _qdrant_vector_name(vector_store: Any) -> str | None:
    """The dense vector a LlamaIndex ``QdrantVectorStore`` writes: its ``dense_vector_name``
    in a collection of named vectors, the unnamed vector of a legacy collection."""
    info = vector_store.client.get_collection(vector_store.collection_name)
    named = isinstance(info.config.params.vectors, dict)
    return str(vector_store.dense_vector_name) if named else None
