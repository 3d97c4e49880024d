"""``langchain_community.vectorstores.FAISS``: :class:`~exemplar_svm.stores.faiss.FaissStore`
on its index, its filters evaluated over its docstore (FAISS keeps no metadata), and its
documents by id."""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.faiss import FaissStore

__all__ = ["documents", "store", "store_filter"]


def store(vectorstore: Any) -> VectorStore:
    return FaissStore(vectorstore.index, vectorstore.index_to_docstore_id)


def store_filter(vectorstore: Any, filter: Any) -> Any:
    matches = vectorstore._create_filter_func(filter)
    documents = vectorstore.docstore._dict
    return {key for key, doc in list(documents.items()) if matches(doc.metadata)}


def documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    return list(vectorstore.get_by_ids(ids))
