"""``langchain_core.vectorstores.InMemoryVectorStore``: a live view of its ``store`` dict as the
core's store, its filters as callables on the ``Document``, and its documents by id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from numpy.typing import NDArray

from exemplar_svm.index import ExemplarIndex
from exemplar_svm.langchain._stores import metadata_predicate
from exemplar_svm.stores import Metric, VectorStore

__all__ = ["documents", "store", "store_filter"]


def store(vectorstore: Any) -> VectorStore:
    return _InMemoryStore(vectorstore)


def store_filter(vectorstore: Any, filter: Any) -> Any:
    if not callable(filter):
        equal = metadata_predicate(filter)
        return lambda doc: equal(doc.metadata)
    return filter


def documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    return list(vectorstore.get_by_ids(ids))


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
