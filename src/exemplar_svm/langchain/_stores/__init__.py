"""LangChain vector stores as the core's :class:`exemplar_svm.stores.VectorStore`, their
documents by id, and their filters in each engine's syntax: what :class:`ExemplarSVMRetriever`
needs from a ``VectorStore`` it searches in place.

This module dispatches: each supported vector store is bridged by one engine module of this
package (``chroma``, ``milvus``, ``faiss``, ``qdrant``, ``pgvector``, ``inmemory``), imported
the first time a store of its class is used.
"""

# ruff: noqa: E402 - langchain_core is imported after require() names the extra it comes from.

from __future__ import annotations

from exemplar_svm._optional import class_in, require

require("langchain_core", extra="langchain")

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from langchain_core.documents import Document

from exemplar_svm.stores import VectorStore

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

# The engine module of this package that bridges each class of SUPPORTED_VECTORSTORES.
_ENGINES: dict[str, str] = {
    "Chroma": "chroma",
    "Milvus": "milvus",
    "FAISS": "faiss",
    "QdrantVectorStore": "qdrant",
    "PGVector": "pgvector",
    "InMemoryVectorStore": "inmemory",
}


class _Engine(Protocol):
    """What every engine module provides for its LangChain vector store."""

    def store(self, vectorstore: Any) -> VectorStore:
        """The core's store over ``vectorstore`` (see :func:`store_from_vectorstore`)."""
        ...

    def store_filter(self, vectorstore: Any, filter: Any) -> Any:
        """``filter`` in the core store's syntax (see :func:`store_filter`)."""
        ...

    def documents(self, vectorstore: Any, ids: list[str]) -> list[Document]:
        """The stored documents of ``ids`` (those found), with ``Document.id`` set."""
        ...


if TYPE_CHECKING:  # mypy checks that every engine module has the interface
    from exemplar_svm.langchain._stores import chroma, faiss, inmemory, milvus, pgvector, qdrant

    _CHECKED: tuple[_Engine, ...] = (chroma, milvus, faiss, qdrant, pgvector, inmemory)


def _engine(vectorstore: Any) -> _Engine | None:
    """The engine module for ``vectorstore``'s class, or None for any other store (a custom
    store the user passes as ``store=``)."""
    kind = class_in(vectorstore, SUPPORTED_VECTORSTORES)
    if kind is None:
        return None
    # Imported on first use: a module may import its engine's core store at its top.
    return cast(_Engine, importlib.import_module(f"{__name__}.{_ENGINES[kind]}"))


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
    engine = _engine(vectorstore)
    if engine is not None:
        return engine.store(vectorstore)
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
    engine = _engine(vectorstore)
    return filter if engine is None else engine.store_filter(vectorstore, filter)


def documents_by_id(vectorstore: Any, ids: list[str]) -> dict[str, Document]:
    """The stored documents of ``ids`` (those found), by id."""
    if not ids:
        return {}
    engine = _engine(vectorstore)
    docs = vectorstore.get_by_ids(ids) if engine is None else engine.documents(vectorstore, ids)
    return {str(doc.id): doc for doc in docs if doc.id is not None}
