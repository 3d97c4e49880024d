"""LangChain vector stores as the core's :class:`exemplar_svm.stores.VectorStore`, their
documents by id, and their filters in each engine's syntax: what :class:`ExemplarSVMRetriever`
needs from a ``VectorStore`` it searches in place.
"""

# ruff: noqa: E402 - langchain_core is imported after require() names the extra it comes from.

from __future__ import annotations

from exemplar_svm._optional import class_in, require

require("langchain_core", extra="langchain")

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from langchain_core.documents import Document
from numpy.typing import NDArray

from exemplar_svm.index import (
    ExemplarIndex,
)
from exemplar_svm.stores import Metric, VectorStore

__all__ = [
    "SUPPORTED_VECTORSTORES",
    "documents_by_id",
    "metadata_predicate",
    "store_filter",
    "store_from_vectorstore",
]

#: The LangChain vector stores :func:`store_from_vectorstore` translates, as (package, class);
#: subclasses match too. Matched by name, so none of these packages is imported to check.
SUPPORTED_VECTORSTORES: tuple[tuple[str, str], ...] = (
    ("langchain_chroma", "Chroma"),
    ("langchain_milvus", "Milvus"),
    ("langchain_community", "FAISS"),
    ("langchain_qdrant", "QdrantVectorStore"),
    ("langchain_postgres", "PGVector"),
    ("langchain_core", "InMemoryVectorStore"),
)


def store_from_vectorstore(vectorstore: Any) -> VectorStore:
    """The core's :class:`~exemplar_svm.stores.VectorStore` over a LangChain vector store.

    Nothing is copied: the returned store reads the same collection.

    - ``langchain_chroma.Chroma``: :class:`~exemplar_svm.stores.chroma.ChromaStore` on its
      collection (extra ``chroma``);
    - ``langchain_milvus.Milvus``: :class:`~exemplar_svm.stores.milvus.MilvusStore` on its
      ``MilvusClient`` and collection, with its primary and vector fields (extra ``milvus``);
    - ``langchain_community.vectorstores.FAISS``: :class:`~exemplar_svm.stores.faiss.FaissStore`
      on its index, ids from its ``index_to_docstore_id`` (extra ``faiss``);
    - ``langchain_qdrant.QdrantVectorStore``: :class:`~exemplar_svm.stores.qdrant.QdrantStore`
      on its client, collection and dense vector (extra ``qdrant``);
    - ``langchain_postgres.PGVector``: :class:`~exemplar_svm.stores.pgvector.PgVectorStore` on
      its engine and embedding table, restricted to its collection, with its distance
      strategy's operator (extra ``pgvector``; a synchronous ``PGVector`` only);
    - ``langchain_core.vectorstores.InMemoryVectorStore``: a live view of its ``store`` dict
      (cosine similarity; documents added later are seen).

    Any other vector store raises ``ValueError``: implement
    :class:`exemplar_svm.stores.VectorStore` for it and pass it as
    ``ExemplarSVMRetriever.from_vectorstore(vectorstore, store=...)``.
    """
    kind = class_in(vectorstore, SUPPORTED_VECTORSTORES)
    if kind == "Chroma":
        from exemplar_svm.stores.chroma import ChromaStore

        return ChromaStore(vectorstore._collection)
    if kind == "Milvus":
        from exemplar_svm.stores.milvus import MilvusStore

        vector_field = vectorstore._vector_field
        if not isinstance(vector_field, str):
            if len(vector_field) != 1:
                raise ValueError(
                    f"this Milvus store has {len(vector_field)} vector fields "
                    f"({', '.join(vector_field)}); the exemplar SVM needs exactly one"
                )
            vector_field = vector_field[0]
        return MilvusStore(
            vectorstore.client,
            vectorstore.collection_name,
            vector_field=vector_field,
            id_field=vectorstore._primary_field,
        )
    if kind == "FAISS":
        from exemplar_svm.stores.faiss import FaissStore

        return FaissStore(vectorstore.index, vectorstore.index_to_docstore_id)
    if kind == "QdrantVectorStore":
        from exemplar_svm.stores.qdrant import QdrantStore

        return QdrantStore(
            vectorstore.client, vectorstore.collection_name, vector_name=vectorstore.vector_name
        )
    if kind == "PGVector":
        return _pgvector_store(vectorstore)
    if kind == "InMemoryVectorStore":
        return _InMemoryStore(vectorstore)
    supported = ", ".join(f"{package}.{name}" for package, name in SUPPORTED_VECTORSTORES)
    raise ValueError(
        f"cannot search a {type(vectorstore).__module__}.{type(vectorstore).__name__} yet: "
        f"the supported LangChain vector stores are {supported}. For another one, implement "
        "the protocol exemplar_svm.stores.VectorStore over its collection (str ids equal to "
        "the LangChain document ids) and pass it: "
        "ExemplarSVMRetriever.from_vectorstore(vectorstore, store=your_store)"
    )


def metadata_predicate(filter: Any) -> Callable[[Mapping[str, Any]], bool]:
    """A filter of the in-memory retriever as a predicate on metadata: a callable taking the
    metadata dict, or a dict of equalities (every key must hold its value)."""
    if callable(filter):
        return cast(Callable[[Mapping[str, Any]], bool], filter)
    if isinstance(filter, Mapping) and all(isinstance(key, str) for key in filter):
        wanted = dict(filter)
        return lambda metadata: all(
            key in metadata and metadata[key] == value for key, value in wanted.items()
        )
    raise ValueError(
        "a filter is a callable on a document's metadata or a dict of equalities such as "
        f"{{'tenant': 'a'}}, got {type(filter).__name__}"
    )


def store_filter(vectorstore: Any, filter: Any) -> Any:
    """``filter``, as a LangChain user passes it to ``vectorstore``'s similarity search, in the
    syntax of the core's store over it (see :class:`exemplar_svm.stores.FilterableStore`).

    - ``Chroma``: a ``where`` dict, passed as it is;
    - ``Milvus``: a boolean expression (its ``expr``), or a dict of equalities turned into one;
    - ``QdrantVectorStore``: a ``qdrant_client.models.Filter``, or a dict of equalities on the
      metadata (under its ``metadata_payload_key``);
    - ``FAISS``: a dict or a callable on metadata, as its own ``filter``, evaluated over its
      docstore into the ids that match;
    - ``PGVector``: a dict in its own filter syntax (``{"tenant": "a"}``, ``$in``, ``$and``,
      ...), translated by the store into SQL;
    - ``InMemoryVectorStore``: a callable on the ``Document`` (its own ``filter``), or a dict
      of equalities on the metadata;
    - any other store: passed as it is to the custom store's ``filtered``.

    Raises ``ValueError`` for a filter the store cannot apply.
    """
    kind = class_in(vectorstore, SUPPORTED_VECTORSTORES)
    if kind == "Chroma":
        if not isinstance(filter, Mapping):
            raise ValueError(
                "a Chroma filter is a where dict such as {'tenant': 'a'} (Chroma cannot apply a "
                f"callable), got {type(filter).__name__}"
            )
        return filter
    if kind == "Milvus":
        if isinstance(filter, Mapping):
            return " and ".join(
                f"{_milvus_name(key)} == {json.dumps(value)}" for key, value in filter.items()
            )
        if not isinstance(filter, str):
            raise ValueError(
                "a Milvus filter is a boolean expression such as 'tenant == \"a\"' or a dict "
                f"of equalities, got {type(filter).__name__}"
            )
        return filter
    if kind == "QdrantVectorStore":
        models = require("qdrant_client.models", extra="qdrant")
        if isinstance(filter, Mapping):
            prefix = vectorstore.metadata_payload_key
            return models.Filter(
                must=[
                    models.FieldCondition(
                        key=f"{prefix}.{key}", match=models.MatchValue(value=value)
                    )
                    for key, value in filter.items()
                ]
            )
        return filter  # QdrantStore.filtered checks it is a Filter
    if kind == "FAISS":
        matches = vectorstore._create_filter_func(filter)
        documents = vectorstore.docstore._dict
        return {key for key, doc in list(documents.items()) if matches(doc.metadata)}
    if kind == "PGVector":
        if not isinstance(filter, Mapping):
            raise ValueError(
                "a PGVector filter is a dict, as PGVector's own filter= (such as "
                f"{{'tenant': 'a'}} or {{'tenant': {{'$in': ['a']}}}}), got {type(filter).__name__}"
            )
        return vectorstore._create_filter_clause(filter)
    if kind == "InMemoryVectorStore":
        if not callable(filter):
            equal = metadata_predicate(filter)
            return lambda doc: equal(doc.metadata)
        return filter
    return filter


def _pgvector_store(vectorstore: Any) -> VectorStore:
    """The core's store over a ``langchain_postgres.PGVector``: its collection's rows."""
    from exemplar_svm.stores.pgvector import PgVectorStore

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


def _milvus_name(key: object) -> str:
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"a Milvus filter's field must be a name, got {key!r}")
    return key


def documents_by_id(vectorstore: Any, ids: list[str]) -> dict[str, Document]:
    """The stored documents of ``ids`` (those found), by id."""
    if not ids:
        return {}
    kind = class_in(vectorstore, SUPPORTED_VECTORSTORES)
    if kind == "Milvus":
        docs = _milvus_documents(vectorstore, ids)
    elif kind == "Chroma":
        docs = _chroma_documents(vectorstore, ids)
    elif kind == "QdrantVectorStore":
        docs = _qdrant_documents(vectorstore, ids)
    else:
        docs = vectorstore.get_by_ids(ids)
    return {str(doc.id): doc for doc in docs if doc.id is not None}


def _chroma_documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    """``get_by_ids`` for ``langchain_chroma.Chroma``, whose own fails on a document stored
    without metadata (langchain-chroma 1.1 passes ``metadata=None`` to ``Document``)."""
    result = vectorstore._collection.get(
        ids=list(dict.fromkeys(ids)), include=["documents", "metadatas"]
    )
    metadatas = result.get("metadatas") or [None] * len(result["ids"])
    return [
        Document(page_content=text or "", metadata=dict(metadata or {}), id=key)
        for key, text, metadata in zip(result["ids"], result["documents"], metadatas, strict=True)
    ]


def _qdrant_documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    """``get_by_ids`` for ``langchain_qdrant.QdrantVectorStore``, whose documents carry the
    point id in ``metadata["_id"]`` only (and which wants integer point ids as integers)."""
    from exemplar_svm.stores.qdrant import point_id

    docs = vectorstore.get_by_ids([point_id(item) for item in dict.fromkeys(ids)])
    return [doc.model_copy(update={"id": str(doc.metadata["_id"])}) for doc in docs]


def _milvus_documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    """``get_by_ids`` for ``langchain_milvus.Milvus``, which has none: the rows its searches
    return, parsed by the store itself, with the primary key as the id."""
    client = vectorstore.client
    name = vectorstore.collection_name
    primary = vectorstore._primary_field
    schema = client.describe_collection(name)
    keys: list[Any] = list(ids)
    for field in schema.get("fields", []):
        kind = field.get("type")
        if field.get("name") == primary and str(getattr(kind, "name", kind)).startswith("INT"):
            keys = [int(item) for item in ids if item.lstrip("-").isdigit()]
    if vectorstore.fields and not vectorstore.enable_dynamic_field:
        fields = vectorstore._remove_forbidden_fields(list(vectorstore.fields))
    else:
        fields = ["*"]
    rows = client.get(name, ids=keys, output_fields=fields)
    docs = []
    for row in rows:
        key = str(row[primary])
        doc = vectorstore._parse_document(dict(row))
        docs.append(doc.model_copy(update={"id": key}))
    return docs


class _InMemoryStore:
    """The core's :class:`~exemplar_svm.stores.VectorStore` over an ``InMemoryVectorStore``.

    A live view of its ``store`` dict (id -> {"vector", "text", ...}); it ranks by cosine
    similarity, like the LangChain store. Every call reads the current entries (a snapshot of
    the dict, so a concurrent add is either seen whole or not at all).
    """

    metric: Metric = "cosine"

    def __init__(self, vectorstore: Any) -> None:
        self._entries: dict[str, dict[str, Any]] = vectorstore.store
        self._keep: Callable[[Document], bool] | None = None

    def _snapshot(self) -> ExemplarIndex | None:
        """The current entries (those the filter keeps) as an index (which ranks by cosine
        too), or None if none."""
        items = list(self._entries.items())
        keep = self._keep
        if keep is not None:
            items = [
                (key, entry)
                for key, entry in items
                if keep(
                    Document(
                        id=key,
                        page_content=entry.get("text", ""),
                        metadata=entry.get("metadata", {}),
                    )
                )
            ]
        if not items:
            return None
        return ExemplarIndex([entry["vector"] for _, entry in items], ids=[key for key, _ in items])

    def count(self) -> int:
        return len(self._entries)

    def nearest(self, vector: NDArray[np.float32], k: int) -> tuple[list[str], NDArray[np.float32]]:
        index = self._snapshot()
        return (
            ([], np.empty((0, 0), dtype=np.float32)) if index is None else index.nearest(vector, k)
        )

    def search_by_vector(self, vector: NDArray[np.float32], k: int) -> list[str]:
        return self.nearest(vector, k)[0]

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        index = _InMemoryStore.__new__(_InMemoryStore)  # the whole store, filtered or not
        index._entries, index._keep = self._entries, None
        whole = index._snapshot()
        return (
            ([], np.empty((0, 0), dtype=np.float32)) if whole is None else whole.sample(size, seed)
        )

    def filtered(self, filter: Callable[[Document], bool]) -> _InMemoryStore:
        """A view whose searches see only the documents ``filter`` (a callable on the
        ``Document``, as ``InMemoryVectorStore`` filters) keeps; sampling and fetching see all."""
        if not callable(filter):
            raise ValueError(
                "an InMemoryVectorStore filter is a callable on the Document, got "
                f"{type(filter).__name__}"
            )
        view = _InMemoryStore.__new__(_InMemoryStore)
        view._entries = self._entries
        view._keep = filter
        return view

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        missing = next((item for item in ids if item not in self._entries), None)
        if missing is not None:
            raise ValueError(
                f"unknown id {missing!r}: the InMemoryVectorStore has no such document"
            )
        if not ids:
            return np.empty((0, 0), dtype=np.float32)
        return np.asarray([self._entries[item]["vector"] for item in ids], dtype=np.float32)
