"""``langchain_chroma.Chroma``: :class:`~exemplar_svm.stores.chroma.ChromaStore` on its
collection, its ``where`` filters, and its documents by id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.documents import Document

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.chroma import ChromaStore

__all__ = ["documents", "store", "store_filter"]


def store(vectorstore: Any) -> VectorStore:
    return ChromaStore(vectorstore._collection)


def store_filter(vectorstore: Any, filter: Any) -> Any:
    if not isinstance(filter, Mapping):
        raise ValueError(
            "a Chroma filter is a where dict such as {'tenant': 'a'} (Chroma cannot apply a "
            f"callable), got {type(filter).__name__}"
        )
    return filter


def documents(vectorstore: Any, ids: list[str]) -> list[Document]:
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
