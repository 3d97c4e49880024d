"""``MilvusVectorStore``: :class:`~exemplar_svm.stores.milvus.MilvusStore` on its
``MilvusClient`` and collection, and ``MetadataFilters`` as a Milvus boolean expression."""

from __future__ import annotations

import sys
from typing import Any

from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.vector_stores.types import MetadataFilters

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.milvus import MilvusStore

__all__ = ["FILTERS_IN_QUERY", "store", "store_filter"]

FILTERS_IN_QUERY = True


def store(index: VectorStoreIndex) -> VectorStore:
    vector_store: Any = index.vector_store  # attributes of the engine's own class
    if not vector_store.enable_dense:
        raise ValueError("this MilvusVectorStore has no dense embedding field to search")
    module = sys.modules[type(vector_store).__module__]
    return MilvusStore(
        vector_store.client,
        vector_store.collection_name,
        vector_field=vector_store.embedding_field,
        id_field=getattr(module, "MILVUS_ID_FIELD", "id"),
    )


def store_filter(index: VectorStoreIndex, filters: MetadataFilters) -> Any:
    module = sys.modules[type(index.vector_store).__module__]
    expression = module._to_milvus_filter(filters)
    if not expression:
        raise ValueError(f"the MilvusVectorStore cannot translate the filters {filters!r}")
    return expression
