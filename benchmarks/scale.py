"""The exemplar SVM over a vector database (StoreIndex) against the exact SVM and the store's kNN.

    python benchmarks/scale.py                    # 100k and 1M vectors in FAISS (about 25 minutes)
    python benchmarks/scale.py --sizes 100000     # one size
    python benchmarks/scale.py --store qdrant     # Qdrant (qdrant-client's local mode)
    python benchmarks/scale.py --store pgvector   # PostgreSQL + pgvector (pgserver), exact scan
    python benchmarks/scale.py --store pgvector --pg-index hnsw   # under an HNSW index
    python benchmarks/scale.py --store milvus     # Milvus Lite instead of FAISS (slow to load)
    python benchmarks/scale.py --store memory     # an in-memory ExemplarIndex as the store

For each size it loads unit vectors shaped like all-MiniLM-L6-v2 embeddings (the fitted
generator of ``benchmarks/generators.py``: its spectrum, mean cosine and topic neighbourhood)
into the store, draws held-out queries from the same distribution (never in the corpus), and
prints, per ranking mode:

- top-10 overlap of ``StoreIndex.search`` with the exact SVM trained on the whole corpus
  (``ExemplarIndex.search`` over the same vectors in memory), mean and worst query;
- latency per query of ``StoreIndex.search`` and of the store's own kNN query (top 10), medians
  measured side by side, and their ratio;
- how often the fetched documents held the top 10 without a last store query (proven, or
  estimated from the background: ``skip_when``);
- the client's peak extra memory during one search (tracemalloc), which should not grow with n;
- the background size and candidate counts used.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generators import MINILM, OPENAI, Shape, fit

from exemplar_svm import ExemplarIndex, StoreIndex
from exemplar_svm.stores import VectorStore

# Seconds of rest before each timed call (see run).
SETTLE = 0.3
MODES: dict[str, dict[str, Any]] = {
    "svm (textbook, C=0.1)": {"mode": "svm", "C": 0.1, "feedback": 0},
    "default": {},
}
# Set by --pg-index: the index the pgvector table is searched through ("none": a plain scan).
PG_INDEX = "none"


def faiss_store(corpus: np.ndarray, ids: list[str]) -> tuple[VectorStore, Callable[..., Any]]:
    import faiss

    from exemplar_svm.stores.faiss import FaissStore

    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    return FaissStore(index, ids), lambda q, k: index.search(q[np.newaxis], k)


def milvus_store(corpus: np.ndarray, ids: list[str]) -> tuple[VectorStore, Callable[..., Any]]:
    from pymilvus import MilvusClient

    from exemplar_svm.stores.milvus import MilvusStore

    folder = tempfile.mkdtemp(prefix="exemplar-svm-bench-")
    client = MilvusClient(f"{folder}/bench.db")
    client.create_collection("bench", dimension=corpus.shape[1], metric_type="IP")
    for start in range(0, len(corpus), 10_000):
        block = corpus[start : start + 10_000]
        client.insert(
            "bench",
            [{"id": start + i, "vector": row.tolist()} for i, row in enumerate(block)],
        )
    client.flush("bench")
    store = MilvusStore(client, "bench")
    return store, lambda q, k: client.search("bench", data=[q.tolist()], limit=k)


def qdrant_store(corpus: np.ndarray, ids: list[str]) -> tuple[VectorStore, Callable[..., Any]]:
    from qdrant_client import QdrantClient, models

    from exemplar_svm.stores.qdrant import QdrantStore

    # Local mode: the client API of a Qdrant server, which scans exactly.
    client = QdrantClient(":memory:")
    params = models.VectorParams(size=corpus.shape[1], distance=models.Distance.COSINE)
    client.create_collection("bench", vectors_config=params)
    for start in range(0, len(corpus), 10_000):
        block = corpus[start : start + 10_000]
        client.upsert(
            "bench",
            models.Batch(ids=list(range(start, start + len(block))), vectors=block.tolist()),
        )
    store = QdrantStore(client, "bench")
    return store, lambda q, k: client.query_points("bench", query=q.tolist(), limit=k)


def pgvector_store(corpus: np.ndarray, ids: list[str]) -> tuple[VectorStore, Callable[..., Any]]:
    import pgserver
    import sqlalchemy
    from pgvector.sqlalchemy import Vector

    from exemplar_svm.stores.pgvector import PgVectorStore

    server = pgserver.get_server(
        tempfile.mkdtemp(prefix="exemplar-svm-bench-"), cleanup_mode="stop"
    )
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    # Without the iterative scan an HNSW query returns at most hnsw.ef_search (40) rows.
    options = "-c hnsw.iterative_scan=relaxed_order -c hnsw.max_scan_tuples=100000"
    engine = sqlalchemy.create_engine(url, connect_args={"options": options})
    table = sqlalchemy.Table(
        "bench",
        sqlalchemy.MetaData(),
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("embedding", Vector(corpus.shape[1])),
    )
    with engine.begin() as connection:
        table.create(connection)
        cursor = connection.connection.cursor()
        with cursor.copy("COPY bench (id, embedding) FROM STDIN") as copy:
            for row, vector in enumerate(corpus):
                copy.write_row((row, "[" + ",".join(map(repr, vector.tolist())) + "]"))
    if PG_INDEX != "none":
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("SET maintenance_work_mem = '2GB'"))
            operator = "vector_ip_ops"
            options = " WITH (lists = 316)" if PG_INDEX == "ivfflat" else ""
            connection.execute(
                sqlalchemy.text(
                    f"CREATE INDEX ON bench USING {PG_INDEX} (embedding {operator}){options}"
                )
            )
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("ANALYZE bench"))
    store = PgVectorStore(engine, table.c.id, table.c.embedding, metric="ip")

    def knn(query: np.ndarray, k: int) -> list[Any]:
        statement = (
            sqlalchemy.select(table.c.id)
            .order_by(table.c.embedding.max_inner_product(query.tolist()))
            .limit(k)
        )
        with engine.connect() as connection:
            return list(connection.execute(statement))

    return store, knn


def memory_store(corpus: np.ndarray, ids: list[str]) -> tuple[VectorStore, Callable[..., Any]]:
    index = ExemplarIndex(corpus, ids=ids)
    return index, index.nearest


STORES = {
    "faiss": faiss_store,
    "milvus": milvus_store,
    "qdrant": qdrant_store,
    "pgvector": pgvector_store,
    "memory": memory_store,
}


def median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def peak_mb(function: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def run(
    n: int,
    shape: Shape,
    store_name: str,
    queries: int,
    background: int,
    settings: dict[str, Any],
) -> None:
    start = time.perf_counter()
    generator = fit(shape)
    corpus = generator.corpus(n)
    ids = [str(i) for i in range(n)]
    store, knn = STORES[store_name](corpus, ids)
    load = time.perf_counter() - start
    exact = ExemplarIndex(corpus, ids=ids)
    index = StoreIndex(store, background=background, **settings)
    start = time.perf_counter()
    index.refresh_background()
    sample_time = time.perf_counter() - start
    query_set = generator.held_out(queries)
    engine = store_name if store_name != "pgvector" else f"pgvector (index: {PG_INDEX})"
    print(
        f"\n## n = {n:,}, {generator.shape.name} (d = {generator.shape.dim}), store {engine} "
        f"(loaded in {load:.0f} s; background of {background} drawn in {sample_time:.1f} s)\n"
    )
    print(
        "| mode | top-10 overlap (mean / worst) | StoreIndex ms | store kNN ms | ratio "
        "| no last query | client peak MB |"
    )
    print("|---|---|---|---|---|---|---|")
    calls = _count_calls(store)
    for label, options in MODES.items():
        overlaps, ours, theirs, skipped = [], [], [], 0
        for query in query_set:
            reference = {hit.id for hit in exact.search(query, 10, **options)}
            knn(query, 10)
            before = calls()
            # Both timed calls start after a pause: BLAS and OpenMP worker threads spin for a
            # while after their last task, and one running against the other's spinning
            # threads on a small machine takes up to 40% longer.
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            hits = index.search(query, 10, **options)
            ours.append(time.perf_counter() - t0)
            skipped += calls() == before
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            knn(query, 10)
            theirs.append(time.perf_counter() - t0)
            overlaps.append(len(reference & {hit.id for hit in hits}) / 10)
        memory = peak_mb(lambda o=options: index.search(query_set[0], 10, **o))
        print(
            f"| {label} | {np.mean(overlaps):.3f} / {min(overlaps):.1f} | {median_ms(ours):.1f} "
            f"| {median_ms(theirs):.1f} | {median_ms(ours) / median_ms(theirs):.2f}x "
            f"| {skipped}/{queries} | {memory:.1f} |"
        )
    corpus_mb = corpus.nbytes / 2**20
    print(
        f"\n(the corpus matrix is {corpus_mb:.0f} MB; candidates {index.candidates} + up to "
        f"{index.max_candidates}; last query skipped when {index.skip_when})"
    )


def _count_calls(store: VectorStore) -> Callable[[], int]:
    """Count the store's ``search_by_vector`` calls (the last, optional query of a search)."""
    original = store.search_by_vector
    counter = [0]

    def counted(vector: np.ndarray, k: int) -> list[str]:
        counter[0] += 1
        return original(vector, k)

    store.search_by_vector = counted  # type: ignore[method-assign]
    return lambda: counter[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--shape", choices=["minilm", "openai"], default="minilm", help="the embeddings' shape"
    )
    parser.add_argument("--store", choices=sorted(STORES), default="faiss")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--background", type=int, default=4000)
    parser.add_argument("--max-candidates", type=int, help="StoreIndex's (its default if unset)")
    parser.add_argument("--skip-when", choices=["estimated", "proven"], help="StoreIndex's")
    parser.add_argument(
        "--pg-index",
        choices=["none", "hnsw", "ivfflat"],
        default="none",
        help="the pgvector table's index (none: PostgreSQL scans it, exactly)",
    )
    args = parser.parse_args()
    global PG_INDEX
    PG_INDEX = args.pg_index
    settings = {
        name: value
        for name, value in (("max_candidates", args.max_candidates), ("skip_when", args.skip_when))
        if value is not None
    }
    print(
        f"# StoreIndex at scale ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__})"
    )
    for n in args.sizes:
        shape = {"minilm": MINILM, "openai": OPENAI}[args.shape]
        run(n, shape, args.store, args.queries, args.background, settings)


if __name__ == "__main__":
    main()
