"""``langchain_postgres.PGVector``: :class:`~exemplar_svm.stores.pgvector.PgVectorStore` on its
engine and embedding table, restricted to its collection, its filters as SQL clauses, and its
documents by id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from langchain_core.documents import Document

from exemplar_svm.stores import Metric, VectorStore
from exemplar_svm.stores.pgvector import PgVectorStore

__all__ = ["documents", "store", "store_filter"]


def store(vectorstore: Any) -> VectorStore:
    """The core's store over a ``langchain_postgres.PGVector``: its collection's rows."""
    if vectorstore._async_engine is not None:
        raise ValueError(
            "this PGVector has an async engine only; build it with a synchronous connection "
            "(a URL or an Engine), which the exemplar SVM searches with"
        )
    strategy = str(getattr(vectorstore._distance_strategy, "value", vectorstore._distance_strategy))
    metrics = {"cosine": "cosine", "inner": "ip", "l2": "l2"}
    metric = metrics.get(strategy)
    if metric is None:
        raise ValueError(f"the PGVector distance strategy {strategy!r} is not supported")
    with vectorstore._make_sync_session() as session:
        collection = vectorstore.get_collection(session)
        if collection is None:
            raise ValueError(f"the PGVector collection {vectorstore.collection_name!r} is missing")
        collection_id = collection.uuid
    table = vectorstore.EmbeddingStore
    return PgVectorStore(
        vectorstore._engine,
        table.id,
        table.embedding,
        metric=cast(Metric, metric),
        where=table.collection_id == collection_id,
    )


def store_filter(vectorstore: Any, filter: Any) -> Any:
    if not isinstance(filter, Mapping):
        raise ValueError(
            "a PGVector filter is a dict, as PGVector's own filter= (such as "
            f"{{'tenant': 'a'}} or {{'tenant': {{'$in': ['a']}}}}), got {type(filter).__name__}"
        )
    return vectorstore._create_filter_clause(filter)


def documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    return list(vectorstore.get_by_ids(ids))
