"""The VectorStore implementations against real engines: a Chroma server on loopback, Milvus
Lite in a temporary file, FAISS in process, Qdrant in local mode (the client API of a server),
and the in-memory ExemplarIndex.

Every store holds the same 300 unit vectors, so all three metrics rank them by ``x @ q`` and
every answer can be checked against numpy.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from exemplar_svm import ExemplarIndex
from exemplar_svm.stores import BatchVectorStore, VectorStore, nearest_many

N, DIM = 300, 16
# UUIDs (in row order as strings too): the one id format every engine takes, Qdrant included.
IDS = [str(uuid.UUID(int=row + 1)) for row in range(N)]


def unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


DATA = unit(N, seed=7)
ROW = {item: row for row, item in enumerate(IDS)}


# -- engines -------------------------------------------------------------------------------


@pytest.fixture
def milvus_client(milvus_uri: str) -> Iterator[Any]:
    pymilvus = pytest.importorskip("pymilvus")
    client = pymilvus.MilvusClient(milvus_uri)
    yield client
    client.close()


def chroma_collection(client: Any, name: str, **options: Any) -> Any:
    collection = client.get_or_create_collection(name, **options)
    for start in range(0, N - collection.count(), 100):
        collection.add(ids=IDS[start : start + 100], embeddings=DATA[start : start + 100])
    return collection


def milvus_collection(
    client: Any, name: str, metric: str, *, int_ids: bool = False, vector: str = "embedding"
) -> None:
    from pymilvus import DataType

    if client.has_collection(name):
        return
    schema = client.create_schema(auto_id=False)
    if int_ids:
        schema.add_field("key", DataType.INT64, is_primary=True)
    else:
        schema.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field(vector, DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    # FLAT searches exactly; Milvus Lite 3's AUTOINDEX is HNSW.
    index.add_index(vector, metric_type=metric, index_type="FLAT")
    client.create_collection(name, schema=schema, index_params=index)
    keys = range(1000, 1000 + N) if int_ids else IDS
    primary = "key" if int_ids else "doc_id"
    client.insert(
        name, [{primary: key, vector: row.tolist()} for key, row in zip(keys, DATA, strict=True)]
    )


def faiss_store(kind: str) -> VectorStore:
    import faiss

    from exemplar_svm.stores.faiss import FaissStore

    if kind == "flat-ip":
        index = faiss.IndexFlatIP(DIM)
    elif kind == "flat-l2":
        index = faiss.IndexFlatL2(DIM)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = N
    else:
        # Labels that are not row positions, mapped like LangChain's index_to_docstore_id.
        index = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
        labels = np.arange(N, dtype=np.int64) * 7 + 100
        index.add_with_ids(DATA, labels)
        return FaissStore(
            index, {int(label): item for label, item in zip(labels, IDS, strict=True)}
        )
    index.add(DATA)
    return FaissStore(index, IDS)


#: Every store under test and the metric it must report.
STORES: dict[str, str] = {
    "memory": "cosine",
    "chroma-cosine": "cosine",
    "chroma-ip": "ip",
    "chroma-default": "l2",
    "milvus-cosine": "cosine",
    "milvus-ip": "ip",
    "milvus-l2": "l2",
    "faiss-flat-ip": "ip",
    "faiss-flat-l2": "l2",
    "faiss-hnsw": "ip",
    "faiss-idmap": "ip",
    "qdrant-cosine": "cosine",
    "qdrant-dot": "ip",
    "qdrant-euclid": "l2",
    "pgvector-cosine": "cosine",
    "pgvector-ip": "ip",
    "pgvector-l2": "l2",
}


def pgvector_table(url: str, name: str, *, index: str | None = None) -> tuple[Any, Any]:
    """A table of DATA (id, tenant row number, vector) in the test server; (engine, table)."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from pgvector.sqlalchemy import Vector

    engine = sqlalchemy.create_engine(url)
    table = sqlalchemy.Table(
        name,
        sqlalchemy.MetaData(),
        sqlalchemy.Column("id", sqlalchemy.String, primary_key=True),
        sqlalchemy.Column("row", sqlalchemy.Integer),
        sqlalchemy.Column("embedding", Vector(DIM)),
    )
    with engine.begin() as connection:
        if not sqlalchemy.inspect(connection).has_table(name):
            table.create(connection)
            connection.execute(
                table.insert(),
                [
                    {"id": item, "row": i, "embedding": row.tolist()}
                    for i, (item, row) in enumerate(zip(IDS, DATA, strict=True))
                ],
            )
            if index is not None:
                connection.execute(sqlalchemy.text(index.format(table=name)))
    return engine, table


def qdrant_store(distance: str, *, named: bool = False) -> VectorStore:
    """A Qdrant local-mode collection of DATA, each point's row in its payload."""
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    from exemplar_svm.stores.qdrant import QdrantStore

    client = QdrantClient(":memory:")
    params = models.VectorParams(size=DIM, distance=models.Distance(distance))
    client.create_collection("docs", vectors_config={"dense": params} if named else params)
    client.upsert(
        "docs",
        [
            models.PointStruct(
                id=item,
                vector={"dense": row.tolist()} if named else row.tolist(),
                payload={"row": i},
            )
            for i, (item, row) in enumerate(zip(IDS, DATA, strict=True))
        ],
    )
    return QdrantStore(client, "docs", page_size=64)


def build(name: str, request: pytest.FixtureRequest) -> VectorStore:
    engine, _, kind = name.partition("-")
    if engine == "memory":
        index = ExemplarIndex(DATA, IDS)
        if not isinstance(index, VectorStore):
            pytest.skip("ExemplarIndex does not implement the VectorStore protocol yet")
        return index
    if engine == "chroma":
        from exemplar_svm.stores.chroma import ChromaStore

        client = request.getfixturevalue("chroma_client")
        # A high ef makes Chroma's HNSW exact on 300 vectors; "default" keeps Chroma's l2.
        hnsw = {"ef_search": N, "ef_construction": N}
        options = {} if kind == "default" else {"configuration": {"hnsw": {"space": kind, **hnsw}}}
        return ChromaStore(chroma_collection(client, f"conformance-{kind}", **options))
    if engine == "milvus":
        from exemplar_svm.stores.milvus import MilvusStore

        client = request.getfixturevalue("milvus_client")
        milvus_collection(client, f"conformance_{kind}", kind.upper())
        return MilvusStore(client, f"conformance_{kind}")
    if engine == "qdrant":
        return qdrant_store(kind.capitalize())
    if engine == "pgvector":
        from exemplar_svm.stores.pgvector import PgVectorStore

        database, table = pgvector_table(request.getfixturevalue("postgres_url"), f"docs_{kind}")
        return PgVectorStore(database, table.c.id, table.c.embedding, metric=kind, page_size=64)
    pytest.importorskip("faiss")
    return faiss_store(kind)


@pytest.fixture(scope="session")
def store_cache() -> dict[str, VectorStore]:
    return {}


def store_marks(name: str) -> list[pytest.MarkDecorator]:
    """Chroma and PostgreSQL start a server; Milvus, FAISS and Qdrant need a [dev]-only engine."""
    if name == "memory":
        return []
    return [pytest.mark.slow] if name.startswith(("chroma", "pgvector")) else [pytest.mark.dev]


@pytest.fixture(params=[pytest.param(name, marks=store_marks(name)) for name in STORES])
def store(request: pytest.FixtureRequest, store_cache: dict[str, VectorStore]) -> VectorStore:
    name = request.param
    if name.startswith("milvus"):
        # Built per test: an idle Milvus Lite daemon stops answering (see milvus_uri).
        return build(name, request)
    if name not in store_cache:
        store_cache[name] = build(name, request)
    return store_cache[name]


def exact(query: np.ndarray, k: int) -> list[str]:
    return [IDS[row] for row in np.argsort(-(DATA @ query), kind="stable")[:k]]


def assert_stored(ids: list[str], vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(ids), DIM)
    np.testing.assert_allclose(vectors, DATA[[ROW[item] for item in ids]], atol=1e-5)


# -- the protocol ----------------------------------------------------------------------------


def test_metric_count_and_protocol(store: VectorStore, request: pytest.FixtureRequest) -> None:
    assert isinstance(store, VectorStore)
    assert store.metric == STORES[request.node.callspec.params["store"]]
    assert store.count() == N


def test_nearest_is_the_exact_ranking(store: VectorStore) -> None:
    for query in unit(3, seed=11):
        ids, vectors = store.nearest(query, 10)
        assert ids == exact(query, 10)
        assert_stored(ids, vectors)
        assert store.search_by_vector(query, 10) == ids


def test_nearest_returns_at_most_the_store(store: VectorStore) -> None:
    ids, vectors = store.nearest(DATA[0], N + 50)
    assert sorted(ids) == IDS
    assert vectors.shape == (N, DIM)


def test_nearest_many_answers_each_vector_as_nearest_does(
    store: VectorStore, request: pytest.FixtureRequest
) -> None:
    # The engines answer a batch in one request; the in-memory index through the fallback.
    engine = request.node.callspec.params["store"].partition("-")[0]
    assert isinstance(store, BatchVectorStore) == (engine != "memory")
    queries = unit(3, seed=12)
    sizes = [10, 3, N + 20]
    answers = nearest_many(store, queries, sizes)
    assert len(answers) == 3
    for query, size, (ids, vectors) in zip(queries, sizes, answers, strict=True):
        assert ids == exact(query, min(size, N))
        assert_stored(ids, vectors)
    assert nearest_many(store, queries[:0], []) == []
    with pytest.raises(ValueError, match="one k per vector"):
        nearest_many(store, queries, [10, 10])


def test_fetch_keeps_the_asked_order(store: VectorStore) -> None:
    asked = [IDS[250], IDS[3], IDS[117], IDS[3]]
    assert_stored(asked, store.fetch(asked))
    assert store.fetch([]).shape == (0, DIM)


def test_fetch_names_an_unknown_id(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="no-such-doc"):
        store.fetch([IDS[1], "no-such-doc"])


def test_sample_is_distinct_deterministic_and_stored(store: VectorStore) -> None:
    ids, vectors = store.sample(40, seed=3)
    assert len(ids) == len(set(ids)) == 40
    assert_stored(ids, vectors)
    again, vectors_again = store.sample(40, seed=3)
    assert again == ids
    np.testing.assert_array_equal(vectors_again, vectors)
    assert store.sample(40, seed=4)[0] != ids


def test_sample_is_capped_at_the_store(store: VectorStore) -> None:
    ids, vectors = store.sample(N + 100, seed=0)
    assert sorted(ids) == IDS
    assert_stored(ids, vectors)
    ids, vectors = store.sample(0, seed=0)
    assert ids == []
    assert vectors.shape == (0, DIM)


def test_sample_is_uniform(store: VectorStore) -> None:
    """Every decile of the insertion order gets its share, and a sample is not made of runs of
    neighbours (as contiguous pages would be)."""
    rounds, size = 40, 30
    counts = np.zeros(N)
    neighbours = []
    for seed in range(rounds):
        rows = np.sort([ROW[item] for item in store.sample(size, seed=seed)[0]])
        counts[rows] += 1
        neighbours.append(int(np.sum(np.diff(rows) == 1)))
    per_decile = counts.reshape(10, -1).sum(axis=1)
    expected = rounds * size / 10
    # Sd of a decile's count is about sqrt(1200 * 0.1 * 0.9) = 10; allow 4 sd.
    assert np.all(np.abs(per_decile - expected) < 40), per_decile
    # A simple random sample of 30 of 300 has about 2.9 neighbouring pairs; runs have ~29.
    assert np.mean(neighbours) < 6, neighbours


# -- engine specifics ------------------------------------------------------------------------


@pytest.mark.slow
def test_chroma_metric_from_metadata(chroma_client: Any) -> None:
    from exemplar_svm.stores.chroma import ChromaStore

    collection = chroma_client.create_collection("legacy-space", metadata={"hnsw:space": "ip"})
    assert ChromaStore(collection).metric == "ip"


@pytest.mark.slow
def test_chroma_samples_across_pages(chroma_client: Any) -> None:
    from exemplar_svm.stores.chroma import ChromaStore

    collection = chroma_collection(chroma_client, "pages")
    small_pages = ChromaStore(collection, page_size=7, workers=3)
    ids, vectors = small_pages.sample(60, seed=5)
    assert_stored(ids, vectors)
    assert ids == ChromaStore(collection).sample(60, seed=5)[0]


@pytest.mark.dev
def test_milvus_integer_keys(milvus_client: Any) -> None:
    from exemplar_svm.stores.milvus import MilvusStore

    milvus_collection(milvus_client, "integer_keys", "COSINE", int_ids=True, vector="vector")
    store = MilvusStore(milvus_client, "integer_keys")
    assert store.id_field == "key"
    ids, vectors = store.nearest(DATA[5], 3)
    assert ids[0] == "1005"
    np.testing.assert_allclose(store.fetch(ids), vectors)
    sample, _ = store.sample(20, seed=1)
    assert all(item.isdigit() for item in sample)
    with pytest.raises(ValueError, match=r"'doc-1'.*integer primary keys"):
        store.fetch(["doc-1"])
    with pytest.raises(ValueError, match="'999'"):
        store.fetch(["999"])


@pytest.mark.dev
def test_milvus_loads_a_released_collection_and_checks_fields(milvus_client: Any) -> None:
    from exemplar_svm.stores.milvus import MilvusStore

    milvus_collection(milvus_client, "released", "IP")
    milvus_client.release_collection("released")
    store = MilvusStore(milvus_client, "released", vector_field="embedding", id_field="doc_id")
    assert store.search_by_vector(DATA[9], 1) == [IDS[9]]
    with pytest.raises(ValueError, match="no collection 'missing'"):
        MilvusStore(milvus_client, "missing")
    with pytest.raises(ValueError, match="not the primary key"):
        MilvusStore(milvus_client, "released", id_field="embedding")
    with pytest.raises(ValueError, match="no field 'vec'"):
        MilvusStore(milvus_client, "released", vector_field="vec")


@pytest.mark.dev
def test_faiss_refuses_an_index_without_its_vectors() -> None:
    faiss = pytest.importorskip("faiss")
    from exemplar_svm.stores.faiss import FaissStore

    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(DIM), DIM, 4)
    index.train(DATA)
    index.add(DATA)
    with pytest.raises(ValueError, match="make_direct_map"):
        FaissStore(index, IDS)
    index.make_direct_map()
    assert_stored(*FaissStore(index, IDS).sample(10, seed=0))


@pytest.mark.dev
def test_faiss_id_maps() -> None:
    faiss = pytest.importorskip("faiss")
    from exemplar_svm.stores.faiss import FaissStore

    index = faiss.IndexIDMap2(faiss.IndexFlatL2(DIM))
    index.add_with_ids(DATA, np.arange(N, dtype=np.int64) + 5000)
    store = FaissStore(index)  # LlamaIndex's ids: the label as a string
    assert store.metric == "l2"
    assert store.search_by_vector(DATA[2], 1) == ["5002"]
    np.testing.assert_allclose(store.fetch(["5010"]), DATA[10:11])
    with pytest.raises(ValueError, match="rebuild the id map"):
        FaissStore(index, IDS[:10]).search_by_vector(DATA[2], 1)
    with pytest.raises(ValueError, match="metric_type"):
        FaissStore(faiss.IndexFlat(DIM, faiss.METRIC_L1))


@pytest.mark.dev
def test_faiss_follows_documents_added_after_wrapping() -> None:
    faiss = pytest.importorskip("faiss")
    from exemplar_svm.stores.faiss import FaissStore

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    index.add_with_ids(DATA[:100], np.arange(100, dtype=np.int64))
    store = FaissStore(index)
    np.testing.assert_allclose(store.fetch(["5"]), DATA[5:6])
    index.add_with_ids(DATA[100:], np.arange(100, N, dtype=np.int64))
    np.testing.assert_allclose(store.fetch([str(N - 1)]), DATA[N - 1 :])
    assert store.nearest(DATA[N - 2], 1)[0] == [str(N - 2)]
    assert len(set(store.sample(N, seed=0)[0])) == N


@pytest.mark.parametrize(
    ("module", "engine"),
    [("chroma", "chromadb"), ("milvus", "pymilvus"), ("faiss", "faiss")],
)
def test_engines_are_imported_only_when_used(module: str, engine: str) -> None:
    code = (
        f"import sys; sys.modules[{engine!r}] = None\n"
        f"import exemplar_svm.stores.{module} as m\n"
        "cls = next(v for k, v in vars(m).items() if k.endswith('Store') and k != 'VectorStore')\n"
        "try:\n    cls(None, 'x') if cls.__name__ == 'MilvusStore' else cls(None)\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"exemplar-svm[{module}]" in done.stdout, done.stdout + done.stderr


# -- filters -------------------------------------------------------------------------------

EVEN = [item for row, item in enumerate(IDS) if row % 2 == 0]


def _exact_among(query: np.ndarray, k: int, allowed: list[str]) -> list[str]:
    rows = np.array([ROW[item] for item in allowed])
    order = rows[np.argsort(-(DATA[rows] @ query), kind="stable")]
    return [IDS[row] for row in order[:k]]


@pytest.mark.dev
@pytest.mark.parametrize("kind", ["flat-ip", "flat-l2", "hnsw", "idmap"])
def test_faiss_filtered_searches_only_the_allowed_ids(kind: str) -> None:
    pytest.importorskip("faiss")
    store = faiss_store(kind)
    query = unit(1, seed=3)[0]
    for allowed in (set(EVEN), lambda item: ROW[item] % 2 == 0):
        view = store.filtered(allowed)  # type: ignore[attr-defined]
        ids, vectors = view.nearest(query, 10)
        assert ids == _exact_among(query, 10, EVEN)
        assert_stored(ids, vectors)
        assert view.search_by_vector(query, 10) == ids
        assert [found for found, _ in nearest_many(view, np.stack([query, -query]), [3, 4])] == [
            _exact_among(query, 3, EVEN),
            _exact_among(-query, 4, EVEN),
        ]
        assert view.count() == store.count() == N  # sampling still sees the whole index
    with pytest.raises(ValueError, match="collection of document ids or a predicate"):
        store.filtered("doc")  # type: ignore[attr-defined]


@pytest.mark.dev
def test_qdrant_filtered_and_named_vectors() -> None:
    from qdrant_client import models

    store = qdrant_store("Cosine", named=True)
    assert store.vector_name == "dense"  # type: ignore[attr-defined]
    query = unit(1, seed=5)[0]
    assert store.nearest(query, 5)[0] == exact(query, 5)
    low = models.Filter(must=[models.FieldCondition(key="row", range=models.Range(lt=100))])
    view = store.filtered(low)  # type: ignore[attr-defined]
    ids, vectors = view.nearest(query, 10)
    assert ids == _exact_among(query, 10, IDS[:100])
    assert_stored(ids, vectors)
    assert view.search_by_vector(query, 7) == ids[:7]
    with pytest.raises(ValueError, match=r"qdrant_client\.models\.Filter"):
        store.filtered({"row": 1})  # type: ignore[attr-defined]


@pytest.mark.dev
def test_qdrant_refuses_manhattan_and_unknown_ids() -> None:
    with pytest.raises(ValueError, match="distance 'Manhattan'"):
        qdrant_store("Manhattan")
    store = qdrant_store("Dot")
    with pytest.raises(ValueError, match="unsigned integers or UUIDs"):
        store.fetch(["doc-1"])


@pytest.mark.dev
def test_qdrant_batches_the_queries_in_one_request() -> None:
    store = qdrant_store("Cosine")
    calls: list[int] = []
    client = store.client  # type: ignore[attr-defined]
    original = client.query_batch_points

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["requests"]))
        return original(*args, **kwargs)

    client.query_batch_points = spy
    queries = unit(3, seed=11)
    answers = nearest_many(store, queries, [2, 3, 4])
    assert calls == [3]
    assert [ids for ids, _ in answers] == [
        exact(q, k) for q, k in zip(queries, [2, 3, 4], strict=True)
    ]


@pytest.mark.dev
def test_store_index_refuses_unnormalised_vectors_in_a_dot_collection() -> None:
    from qdrant_client import QdrantClient, models

    from exemplar_svm import StoreIndex
    from exemplar_svm.stores.qdrant import QdrantStore

    client = QdrantClient(":memory:")
    params = models.VectorParams(size=DIM, distance=models.Distance.DOT)
    client.create_collection("scaled", vectors_config=params)
    client.upsert(
        "scaled",
        [models.PointStruct(id=i + 1, vector=(3 * row).tolist()) for i, row in enumerate(DATA)],
    )
    with pytest.raises(ValueError, match="not unit-normalised"):
        StoreIndex(QdrantStore(client, "scaled")).search(DATA[0], k=3)


@pytest.mark.slow
def test_pgvector_filtered_and_hnsw(postgres_url: str) -> None:
    from exemplar_svm.stores.pgvector import PgVectorStore

    database, table = pgvector_table(postgres_url, "docs_filtered")
    store = PgVectorStore(database, table.c.id, table.c.embedding)
    query = unit(1, seed=5)[0]
    view = store.filtered(table.c.row < 100)
    ids, vectors = view.nearest(query, 10)
    assert ids == _exact_among(query, 10, IDS[:100])
    assert_stored(ids, vectors)
    assert view.search_by_vector(query, 7) == ids[:7]
    assert [found for found, _ in nearest_many(view, np.stack([query, -query]), [3, 4])] == [
        _exact_among(query, 3, IDS[:100]),
        _exact_among(-query, 4, IDS[:100]),
    ]
    assert view.count() == N
    with pytest.raises(ValueError, match="SQLAlchemy clause"):
        store.filtered({"row": 1})
    # An HNSW index approximates the order; with hnsw.ef_search above the table's size (set
    # per connection) it finds the exact one, which the plan shows it uses.
    import sqlalchemy

    hnsw = "CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops)"
    _, table = pgvector_table(postgres_url, "docs_hnsw", index=hnsw)
    searching = sqlalchemy.create_engine(
        postgres_url, connect_args={"options": "-c hnsw.ef_search=400 -c enable_seqscan=off"}
    )
    store = PgVectorStore(searching, table.c.id, table.c.embedding)
    assert store.nearest(query, 10)[0] == exact(query, 10)
    literal = "[" + ",".join(f"{x:.6f}" for x in query) + "]"
    explain = f"EXPLAIN SELECT id FROM docs_hnsw ORDER BY embedding <=> '{literal}' LIMIT 10"
    with searching.connect() as connection:
        plan = connection.execute(sqlalchemy.text(explain)).fetchall()
    assert "docs_hnsw_embedding_idx" in " ".join(str(row[0]) for row in plan)
