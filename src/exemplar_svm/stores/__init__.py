"""Vector databases the exemplar SVM can search without copying the corpus out of them.

:class:`VectorStore` is all the SVM needs from a store; :class:`exemplar_svm.StoreIndex` trains
and ranks through it. The in-memory :class:`exemplar_svm.ExemplarIndex` implements it, and the
modules here wrap real engines (each behind its own extra): :mod:`exemplar_svm.stores.chroma`,
:mod:`exemplar_svm.stores.milvus` and :mod:`exemplar_svm.stores.faiss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

#: How a store compares a query vector with its documents. Ranking by the SVM's weight vector
#: through the store is exact for ``"cosine"`` always, and for ``"ip"`` and ``"l2"`` only when
#: the stored vectors are unit-normalised (then all three order documents by ``w @ x``).
Metric = Literal["cosine", "ip", "l2"]
METRICS: tuple[str, ...] = ("cosine", "ip", "l2")


@runtime_checkable
class VectorStore(Protocol):
    """What the exemplar SVM needs from a vector database.

    Ids are strings (a store with integer keys converts them). Vectors come back as float32
    arrays of shape ``(len(ids), dim)``, as stored. Every method returns at most as many
    documents as the store holds.
    """

    @property
    def metric(self) -> Metric:
        """The store's similarity: ``"cosine"``, ``"ip"`` (inner product) or ``"l2"``."""
        ...

    def count(self) -> int:
        """How many documents the store holds."""
        ...

    def nearest(self, vector: NDArray[np.float32], k: int) -> tuple[list[str], NDArray[np.float32]]:
        """The ``k`` documents most similar to ``vector`` by the store's metric, best first,
        with their stored vectors."""
        ...

    def search_by_vector(self, vector: NDArray[np.float32], k: int) -> list[str]:
        """Ids of the ``k`` documents most similar to ``vector``, best first (as exact as the
        store's own index)."""
        ...

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        """A uniform random sample of ``min(size, count())`` distinct documents with their
        vectors; the same seed on the same contents gives the same sample."""
        ...

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        """The stored vectors of ``ids``, in order; ``ValueError`` naming an unknown id."""
        ...


__all__ = ["METRICS", "Metric", "VectorStore"]
