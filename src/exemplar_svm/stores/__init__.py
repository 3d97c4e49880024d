"""Vector databases the exemplar SVM can search without copying the corpus out of them.

:class:`VectorStore` is all the SVM needs from a store; :class:`exemplar_svm.StoreIndex` trains
and ranks through it. The in-memory :class:`exemplar_svm.ExemplarIndex` implements it, and the
modules here wrap real engines (each behind its own extra): :mod:`exemplar_svm.stores.chroma`,
:mod:`exemplar_svm.stores.milvus`, :mod:`exemplar_svm.stores.faiss` and
:mod:`exemplar_svm.stores.qdrant`.

Metadata filters: a store that implements :class:`FilterableStore` returns, from
:meth:`FilterableStore.filtered`, a view whose searches apply a filter in the engine's own
syntax (a Chroma ``where`` dict, a Milvus boolean expression, a Qdrant ``Filter``, a set of ids
for FAISS). :meth:`exemplar_svm.StoreIndex.search` takes it as ``filter=``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_k

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
    documents as the store holds (or as its engine returns for one query, such as Milvus's
    16384: the best ones, in order).
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


@runtime_checkable
class BatchVectorStore(VectorStore, Protocol):
    """A :class:`VectorStore` that answers several nearest-neighbour queries in one request.

    Optional: :func:`nearest_many` uses it when a store has it and asks the queries one by one
    otherwise. A flat index then scans its vectors once for all the queries instead of once
    each, and a remote store answers them in one round trip.
    """

    def nearest_many(
        self, vectors: NDArray[np.float32], k: Sequence[int]
    ) -> list[tuple[list[str], NDArray[np.float32]]]:
        """For each row of ``vectors`` (shape ``(m, dim)``), what :meth:`VectorStore.nearest`
        returns for it with ``k[i]`` documents."""
        ...


@runtime_checkable
class FilterableStore(VectorStore, Protocol):
    """A :class:`VectorStore` whose searches can be restricted by a metadata filter.

    Optional: :meth:`exemplar_svm.StoreIndex.search` refuses ``filter=`` over a store without
    it, rather than return documents outside the filter.
    """

    def filtered(self, filter: Any) -> VectorStore:
        """A view of this store whose :meth:`~VectorStore.nearest`, ``nearest_many`` and
        :meth:`~VectorStore.search_by_vector` return only documents that match ``filter`` (in
        the engine's own syntax); ``count``, ``sample`` and ``fetch`` still see the whole
        collection (the background sample only shapes the model). ``ValueError`` on a filter
        the engine cannot apply."""
        ...


def check_many(
    vectors: ArrayLike, k: Sequence[int], dim: int | None = None
) -> tuple[NDArray[np.float32], list[int]]:
    """The query matrix of a ``nearest_many`` call and each row's checked ``k``."""
    sizes = [check_k(size) for size in k]
    if not sizes:
        return np.empty((0, dim or 0), dtype=np.float32), sizes
    queries = as_matrix(vectors, "vectors", dim=dim, dtype=np.float32)
    if len(queries) != len(sizes):
        raise ValueError(f"pass one k per vector: got {len(sizes)} for {len(queries)}")
    return queries, sizes


def nearest_many(
    store: VectorStore, vectors: NDArray[np.float32], k: Sequence[int]
) -> list[tuple[list[str], NDArray[np.float32]]]:
    """:meth:`VectorStore.nearest` for every row of ``vectors``, ``k[i]`` documents for row ``i``.

    One request when the store implements :class:`BatchVectorStore`; otherwise one request per
    row, sent at the same time (a remote store then answers them concurrently).
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(k):
        raise ValueError(f"pass one k per vector: got {len(k)} for an array of {matrix.shape}")
    if isinstance(store, BatchVectorStore):
        return store.nearest_many(matrix, list(k))
    if len(matrix) <= 1:
        return [store.nearest(row, size) for row, size in zip(matrix, k, strict=True)]
    with ThreadPoolExecutor(max_workers=len(matrix)) as workers:
        return list(workers.map(store.nearest, matrix, k))


class StoreError(RuntimeError):
    """A vector store failed, or did not answer within the timeout.

    The message names the store and what it was asked; the store's own exception, if any, is
    the ``__cause__``. ``ValueError`` and ``TypeError`` from a store (an unknown id, a filter
    it cannot apply) are raised as they are: they are about the input, not the store.
    """


_T = TypeVar("_T")


def ask(store: object, what: str, timeout: float | None, call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)``, a request to ``store`` for ``what``: its failures as
    :class:`StoreError`, and, with a ``timeout`` in seconds, a ``StoreError`` when it has not
    answered by then.

    The request runs in a daemon thread, which a hung store keeps: no client library can be
    interrupted from outside, so the caller is released and the thread ends when the store
    answers or the process exits.
    """
    if timeout is None:
        try:
            return call(*args)
        except (ValueError, TypeError):
            raise
        except Exception as exc:
            raise StoreError(f"{_named(store)} failed to answer {what}: {exc!r}") from exc
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as exc:  # handed to the caller, who decides
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name=f"exemplar-svm {what}", daemon=True).start()
    if not done.wait(timeout):
        raise StoreError(
            f"{_named(store)} did not answer {what} within {timeout:g} s: check that the "
            "server is up and reachable, or pass a larger timeout="
        )
    answered, value = outcome[0]
    if answered:
        return value  # type: ignore[no-any-return]
    if isinstance(value, (ValueError, TypeError)) or not isinstance(value, Exception):
        raise value
    raise StoreError(f"{_named(store)} failed to answer {what}: {value!r}") from value


def _named(store: object) -> str:
    text = repr(store)
    return f"the store {text if len(text) <= 120 else text[:117] + '...'}"


__all__ = [
    "METRICS",
    "BatchVectorStore",
    "FilterableStore",
    "Metric",
    "StoreError",
    "VectorStore",
    "ask",
    "nearest_many",
]
