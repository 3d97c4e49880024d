"""``PGVectorStore``: :class:`~exemplar_svm.stores.pgvector.PgVectorStore` on its engine and
table, and ``MetadataFilters`` as a SQLAlchemy clause over that table."""

from __future__ import annotations

from typing import Any

from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.vector_stores.types import MetadataFilters

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.pgvector import PgVectorStore

__all__ = ["FILTERS_IN_QUERY", "store", "store_filter"]

FILTERS_IN_QUERY = True


def store(index: VectorStoreIndex) -> VectorStore:
    vector_store: Any = index.vector_store  # attributes of the engine's own class
    vector_store._initialize()  # creates the engine and the table on first use
    table = vector_store._table_class
    return PgVectorStore(vector_store._engine, table.node_id, table.embedding, metric="cosine")


def store_filter(index: VectorStoreIndex, filters: MetadataFilters) -> Any:
    vector_store: Any = index.vector_store
    return vector_store._recursively_apply_filters(filters)
