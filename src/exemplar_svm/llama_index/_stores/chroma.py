"""``ChromaVectorStore``: :class:`~exemplar_svm.stores.chroma.ChromaStore` on its collection,
and ``MetadataFilters`` as a Chroma ``where`` dict."""

from __future__ import annotations

import sys
from typing import Any

from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.vector_stores.types import MetadataFilters

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.chroma import ChromaStore

__all__ = ["FILTERS_IN_QUERY", "store", "store_filter"]

FILTERS_IN_QUERY = True


def store(index: VectorStoreIndex) -> VectorStore:
    vector_store: Any = index.vector_store  # attributes of the engine's own class
    return ChromaStore(vector_store._collection)


def store_filter(index: VectorStoreIndex, filters: MetadataFilters) -> Any:
    module = sys.modules[type(index.vector_store).__module__]
    return module._to_chroma_filter(filters)
