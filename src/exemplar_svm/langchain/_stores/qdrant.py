"""``langchain_qdrant.QdrantVectorStore``: :class:`~exemplar_svm.stores.qdrant.QdrantStore` on
its client, collection and dense vector, its filters as ``qdrant_client.models.Filter``, and
its documents by id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.documents import Document

from exemplar_svm._optional import require
from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.qdrant import QdrantStore, point_id

__all__ = ["documents", "store", "store_filter"]


def store(vectorstore: Any) -> VectorStore:
    return QdrantStore(
        vectorstore.client, vectorstore.collection_name, vector_name=vectorstore.vector_name
    )


def store_filter(vectorstore: Any, filter: Any) -> Any:
    models = require("qdrant_client.models", extra="qdrant")
    if isinstance(filter, Mapping):
        prefix = vectorstore.metadata_payload_key
        return models.Filter(
            must=[
                models.FieldCondition(key=f"{prefix}.{key}", match=models.MatchValue(value=value))
                for key, value in filter.items()
            ]
        )
    return filter  # QdrantStore.filtered checks it is a Filter


def documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    """``get_by_ids`` for ``langchain_qdrant.QdrantVectorStore``, whose documents carry the
    point id in ``metadata["_id"]`` only (and which wants integer point ids as integers)."""
    docs = vectorstore.get_by_ids([point_id(item) for item in dict.fromkeys(ids)])
    return [doc.model_copy(update={"id": str(doc.metadata["_id"])}) for doc in docs]
