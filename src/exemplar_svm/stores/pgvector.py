"""PostgreSQL with pgvector as a :class:`~exemplar_svm.stores.VectorStore` (extra ``pgvector``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_count, check_k, check_positive
from exemplar_svm._optional import require
from exemplar_svm.stores import METRICS, Metric, check_many

# The pgvector operator (as its SQLAlchemy comparator) of each metric; smaller is nearer.
_DISTANCES = {"cosine": "cosine_distance", "ip": "max_inner_product", "l2": "l2_distance"}


class PgVectorStore:
    """A pgvector table, searched and sampled in PostgreSQL.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        A synchronous SQLAlchemy engine on the database (``create_engine("postgresql+psycopg://
        ...")``). LangChain's ``PGVector`` keeps one in ``_engine``, LlamaIndex's
        ``PGVectorStore`` in ``_engine``.
    id_column, vector_column : sqlalchemy column
        The document id (compared as a string) and the ``vector`` column, as SQLAlchemy
        columns of one table (``Table.c.id`` or an ORM attribute such as
        ``EmbeddingStore.id``).
    metric : {"cosine", "ip", "l2"}
        The operator the searches order by: ``<=>`` (cosine distance), ``<#>`` (negative inner
        product) or ``<->`` (L2 distance); use the one the table's index was built for.
    where : sqlalchemy clause, optional
        Rows outside it are not in the store (LangChain's collection, for example).
    page_size : int, default 10000
        Ids per page while sampling; it bounds the client's memory.

    Notes
    -----
    The ranking by the SVM's weight vector is exact for ``"cosine"``, and for ``"ip"`` and
    ``"l2"`` only over unit-normalised vectors (:class:`exemplar_svm.StoreIndex` refuses
    others). Without an index, or with a plain B-tree only, PostgreSQL scans the table and the
    order is exact. An **HNSW** index (``USING hnsw (embedding vector_cosine_ops)``) approximates
    it, as good as ``hnsw.ef_search`` (default 40) allows, and returns at most ``ef_search``
    rows per query unless ``hnsw.iterative_scan`` (pgvector 0.8) is on; an **IVFFlat** index
    approximates it too, as good as ``ivfflat.probes`` (default 1) allows: set ``probes`` to
    the index's ``lists`` for an exact scan. Filters under an approximate index are applied
    after the index scan, so they can return fewer rows than asked for; set the iterative
    scan, or search exactly. Several queries go in one ``UNION ALL`` statement.
    """

    def __init__(
        self,
        engine: Any,
        id_column: Any,
        vector_column: Any,
        *,
        metric: Metric = "cosine",
        where: Any = None,
        page_size: int = 10_000,
    ) -> None:
        require("pgvector.sqlalchemy", extra="pgvector")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.engine = engine
        self.id_column = id_column
        self.vector_column = vector_column
        self._metric: Metric = metric
        self.where = where
        self.page_size = int(check_positive(page_size, "page_size"))
        # The filter every search applies (see filtered); None: none.
        self.query_filter: Any = None
        self._dim: int | None = None

    @property
    def metric(self) -> Metric:
        return self._metric

    def count(self) -> int:
        sqlalchemy = require("sqlalchemy", extra="pgvector")
        statement = self._where(
            sqlalchemy.select(sqlalchemy.func.count(self.id_column)), search=False
        )
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def nearest(self, vector: ArrayLike, k: int) -> tuple[list[str], NDArray[np.float32]]:
        return self.nearest_many(self._one(vector), [k])[0]

    def nearest_many(
        self, vectors: ArrayLike, k: Sequence[int]
    ) -> list[tuple[list[str], NDArray[np.float32]]]:
        queries, sizes = check_many(vectors, k, self._dim)
        if not sizes:
            return []
        rows = self._search(queries, sizes, with_vectors=True)
        return [(ids, self._vectors(found)) for ids, found in rows]

    def search_by_vector(self, vector: ArrayLike, k: int) -> list[str]:
        return self._search(self._one(vector), [check_k(k)], with_vectors=False)[0][0]

    def filtered(self, filter: Any) -> PgVectorStore:
        """A view of this store whose searches return only rows matching ``filter``, a
        SQLAlchemy boolean clause over the table (LangChain's ``PGVector`` and LlamaIndex's
        ``PGVectorStore`` build theirs from their own filter syntax); ``count``, ``sample`` and
        ``fetch`` still see the whole table."""
        sqlalchemy = require("sqlalchemy", extra="pgvector")
        if not isinstance(filter, sqlalchemy.sql.ClauseElement):
            raise ValueError(
                "a pgvector filter is a SQLAlchemy clause over the table, such as "
                f"table.c.metadata['tenant'].astext == 'a', got {type(filter).__name__}"
            )
        view = copy.copy(self)
        view.query_filter = filter
        return view

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        sqlalchemy = require("sqlalchemy", extra="pgvector")
        n = self.count()
        size = min(check_count(size, "size"), n)
        ranks = np.sort(np.random.default_rng(seed).choice(n, size, replace=False)).tolist()
        chosen: list[str] = []
        statement = self._where(
            sqlalchemy.select(sqlalchemy.cast(self.id_column, sqlalchemy.String)).order_by(
                self.id_column
            ),
            search=False,
        )
        wanted = iter(ranks)
        rank = next(wanted, None)
        with self.engine.connect() as connection:
            # A server-side cursor: one page of ids on the client at a time.
            result = connection.execution_options(stream_results=True).execute(statement)
            for position, (item,) in enumerate(result):
                if rank is None:
                    break
                if position == rank:
                    chosen.append(str(item))
                    rank = next(wanted, None)
            result.close()
        if rank is not None:
            raise RuntimeError(
                "the pgvector table shrank while it was sampled; sample again once writes "
                "have finished"
            )
        return chosen, self.fetch(chosen)

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        sqlalchemy = require("sqlalchemy", extra="pgvector")
        ids = list(ids)
        if not ids:
            return np.empty((0, self._dim or 0), dtype=np.float32)
        unique = list(dict.fromkeys(ids))
        key = sqlalchemy.cast(self.id_column, sqlalchemy.String)
        found: dict[str, NDArray[np.float32]] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(unique), 1000):
                statement = self._where(
                    sqlalchemy.select(key, self.vector_column).where(
                        key.in_(unique[start : start + 1000])
                    ),
                    search=False,
                )
                for item, vector in connection.execute(statement):
                    found[str(item)] = np.asarray(vector, dtype=np.float32)
        for item in unique:
            if item not in found:
                raise ValueError(
                    f"unknown id {item!r}: the pgvector table has no row with it; check the id "
                    "or re-fetch it from the store"
                )
        return np.stack([found[item] for item in ids])

    def _where(self, statement: Any, *, search: bool) -> Any:
        if self.where is not None:
            statement = statement.where(self.where)
        if search and self.query_filter is not None:
            statement = statement.where(self.query_filter)
        return statement

    def _one(self, vector: ArrayLike) -> NDArray[np.float32]:
        query = as_matrix(vector, "vector", dim=self._dim, dtype=np.float32)
        if query.shape[0] != 1:
            raise ValueError(f"pass one query vector, got {query.shape[0]}")
        return query

    def _search(
        self, queries: NDArray[np.float32], sizes: Sequence[int], *, with_vectors: bool
    ) -> list[tuple[list[str], list[Any]]]:
        """Each query's nearest rows, every query in one ``UNION ALL`` statement."""
        sqlalchemy = require("sqlalchemy", extra="pgvector")
        key = sqlalchemy.cast(self.id_column, sqlalchemy.String).label("id")
        parts = []
        for number, (row, size) in enumerate(zip(queries, sizes, strict=True)):
            distance = getattr(self.vector_column, _DISTANCES[self._metric])(row.tolist())
            columns = [sqlalchemy.literal(number).label("query"), key, distance.label("distance")]
            if with_vectors:
                columns.append(self.vector_column.label("vector"))
            inner = self._where(sqlalchemy.select(*columns), search=True)
            parts.append(inner.order_by(distance).limit(int(size)).subquery())
        statement = sqlalchemy.union_all(*(sqlalchemy.select(part) for part in parts))
        answers: list[tuple[list[tuple[float, int, str]], list[Any]]] = [([], []) for _ in parts]
        with self.engine.connect() as connection:
            for position, found in enumerate(connection.execute(statement)):
                ids, vectors = answers[found.query]
                ids.append((float(found.distance), position, str(found.id)))
                vectors.append(found.vector if with_vectors else None)
        # The union keeps no order: sort each query's rows by distance (ties as returned).
        out = []
        for keyed, vectors in answers:
            order = sorted(range(len(keyed)), key=lambda i: keyed[i][:2])
            out.append(([keyed[i][2] for i in order], [vectors[i] for i in order]))
        return out

    def _vectors(self, rows: list[Any]) -> NDArray[np.float32]:
        if not rows:
            return np.empty((0, self._dim or 0), dtype=np.float32)
        matrix = np.asarray(np.stack([np.asarray(row) for row in rows]), dtype=np.float32)
        self._dim = matrix.shape[1]
        return matrix

    def __repr__(self) -> str:
        return f"PgVectorStore({self.vector_column}, metric={self.metric!r})"
