"""Metadata filters on every path: no result ever comes from outside the filter.

Two tenants hold near-duplicates of each other's documents (tenant b's document i is tenant a's
plus a little noise), and each query lies next to tenant b's copy, so an unfiltered search
would return b's documents first and the background sample (drawn from the whole collection)
holds b's documents that outscore every document of a. 100 queries filtered to tenant a,
across the modes, over every engine, must return tenant a's documents only, and find the
query's own document of a first.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.embeddings import Embeddings

import exemplar_svm.langchain as lc
from exemplar_svm import ExemplarIndex, StoreIndex

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*ORM-style PyMilvus API"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
]

DIM = 32
PER_TENANT = 150
QUERIES = 100
MODES = ["auto", "svm", "knn", "hybrid"]
# A background smaller than the store, and few candidates: the searches cannot cover it.
SMALL = {"background": 120, "candidates": 16}


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _corpus() -> tuple[list[str], list[str], list[dict[str, Any]], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(19)
    base = _unit(rng.normal(size=(PER_TENANT, DIM)))
    twins = _unit(base + 0.002 * rng.normal(size=base.shape))
    queries = _unit(twins[:QUERIES] + 0.05 * rng.normal(size=(QUERIES, DIM)))
    # UUIDs: the one id format every engine (Qdrant's points too) takes as it is.
    ids = [str(uuid.UUID(int=i + 1)) for i in range(2 * PER_TENANT)]
    texts = [f"doc {i}" for i in range(2 * PER_TENANT)]
    metadatas = [{"tenant": "a" if i < PER_TENANT else "b"} for i in range(2 * PER_TENANT)]
    return ids, texts, metadatas, np.vstack([base, twins]), queries


IDS, TEXTS, METADATAS, VECTORS, QUERY_VECTORS = _corpus()
TENANT = dict(zip(IDS, (m["tenant"] for m in METADATAS), strict=True))
QUERY_TEXTS = [f"query {i}" for i in range(QUERIES)]


class TableEmbeddings(Embeddings):
    """The corpus's and the queries' vectors by text (anything else: a fixed random vector)."""

    def __init__(self) -> None:
        self.table = dict(zip(TEXTS, VECTORS, strict=True))
        self.table.update(zip(QUERY_TEXTS, QUERY_VECTORS, strict=True))

    def _one(self, text: str) -> list[float]:
        if text in self.table:
            return self.table[text].tolist()
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return _unit(np.random.default_rng(seed).normal(size=(1, DIM)))[0].tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


def _name() -> str:
    return f"f{uuid.uuid4().hex[:12]}"


def assert_tenant_a_only(retrieve: Any) -> None:
    """``retrieve(query_text, mode)`` returns ids; 100 queries, tenant a's documents only."""
    first = 0
    for i, text in enumerate(QUERY_TEXTS):
        ids = retrieve(text, MODES[i % len(MODES)])
        assert len(ids) == 5, (i, ids)
        leaked = [item for item in ids if TENANT[item] != "a"]
        assert not leaked, f"query {i} returned tenant b's {leaked}"
        first += ids[0] == IDS[i]
    # The filter keeps the right documents, not just any of tenant a's.
    assert first >= 90


# -- LangChain ---------------------------------------------------------------------------------


def langchain_store(kind: str, request: pytest.FixtureRequest) -> Any:
    embeddings = TableEmbeddings()
    if kind == "inmemory":
        from langchain_core.vectorstores import InMemoryVectorStore

        store: Any = InMemoryVectorStore(embeddings)
    elif kind == "chroma":
        chroma = pytest.importorskip("langchain_chroma")
        store = chroma.Chroma(
            collection_name=_name(),
            embedding_function=embeddings,
            client=request.getfixturevalue("chroma_client"),
            collection_metadata={"hnsw:space": "cosine"},
        )
    elif kind == "milvus":
        milvus = pytest.importorskip("langchain_milvus")
        uri = request.getfixturevalue("milvus_uri")
        store = milvus.Milvus(
            embeddings,
            collection_name=_name(),
            connection_args={"uri": uri},
            index_params={"index_type": "FLAT", "metric_type": "IP"},
        )
        from pymilvus import connections  # see tests/test_vectorstores.py

        connections.connect(alias=store.alias, uri=uri)
    elif kind == "faiss":
        pytest.importorskip("faiss")
        faiss_module = pytest.importorskip("langchain_community.vectorstores.faiss")
        return faiss_module.FAISS.from_texts(TEXTS, embeddings, metadatas=METADATAS, ids=IDS)
    elif kind == "qdrant":
        qdrant = pytest.importorskip("langchain_qdrant")
        from qdrant_client import QdrantClient, models

        client = QdrantClient(":memory:")
        name = _name()
        client.create_collection(
            name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        store = qdrant.QdrantVectorStore(client, name, embedding=embeddings)
    else:
        raise AssertionError(kind)
    store.add_texts(TEXTS, metadatas=METADATAS, ids=IDS)
    return store


def _native_filter(kind: str) -> Any:
    """Tenant a in the store's own filter syntax, as a LangChain user passes it."""
    if kind == "chroma":
        return {"tenant": "a"}
    if kind == "milvus":
        return 'tenant == "a"'
    if kind == "qdrant":
        from qdrant_client import models

        condition = models.FieldCondition(key="metadata.tenant", match=models.MatchValue(value="a"))
        return models.Filter(must=[condition])
    if kind == "inmemory":
        return lambda doc: doc.metadata["tenant"] == "a"
    return lambda metadata: metadata["tenant"] == "a"  # FAISS: a callable on metadata


def test_langchain_in_memory_retriever_filters_by_callable_and_dict() -> None:
    retriever = lc.ExemplarSVMRetriever.from_embeddings(
        zip(TEXTS, VECTORS, strict=True),
        TableEmbeddings(),
        metadatas=METADATAS,
        ids=IDS,
        k=5,
        search_kwargs={"filter": {"tenant": "a"}},
    )
    # search_kwargs' dict of equalities, then a per-call callable on metadata.
    assert_tenant_a_only(lambda text, mode: [doc.id for doc in retriever.invoke(text, mode=mode)])
    everyone = retriever.invoke(QUERY_TEXTS[0], filter=lambda metadata: True, mode="knn")
    # The per-call filter replaces search_kwargs': the twins of both tenants come back.
    assert {TENANT[str(doc.id)] for doc in everyone[:2]} == {"a", "b"}
    assert retriever.invoke(QUERY_TEXTS[0], filter={"tenant": "nobody"}) == []
    with pytest.raises(ValueError, match="callable on a document's metadata or a dict"):
        retriever.invoke(QUERY_TEXTS[0], filter="tenant == 'a'")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["inmemory", "chroma", "milvus", "faiss", "qdrant"])
def test_langchain_store_never_returns_another_tenant(
    kind: str, request: pytest.FixtureRequest
) -> None:
    vectorstore = langchain_store(kind, request)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(
        vectorstore, k=5, search_kwargs={"filter": _native_filter(kind)}, **SMALL
    )
    everyone = retriever.invoke(QUERY_TEXTS[0], filter=_everyone(kind), mode="knn")
    # Without the tenant filter, the twins of both tenants come first.
    assert {TENANT[str(doc.id)] for doc in everyone[:2]} == {"a", "b"}
    assert_tenant_a_only(lambda text, mode: [doc.id for doc in retriever.invoke(text, mode=mode)])
    if kind != "chroma":  # a dict of equalities works on every store (Chroma's own syntax)
        docs = retriever.invoke(QUERY_TEXTS[1], filter={"tenant": "a"}, mode="svm")
        assert docs and all(doc.metadata["tenant"] == "a" for doc in docs)


def _everyone(kind: str) -> Any:
    """A filter every document matches, in the store's syntax."""
    if kind == "chroma":
        return {"tenant": {"$in": ["a", "b"]}}
    if kind == "milvus":
        return 'tenant in ["a", "b"]'
    if kind == "qdrant":
        from qdrant_client import models

        condition = models.FieldCondition(
            key="metadata.tenant", match=models.MatchAny(any=["a", "b"])
        )
        return models.Filter(must=[condition])
    return lambda _: True


@pytest.mark.slow
def test_a_filter_the_store_cannot_apply_is_refused(request: pytest.FixtureRequest) -> None:
    vectorstore = langchain_store("chroma", request)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(vectorstore, k=5, **SMALL)
    with pytest.raises(ValueError, match="Chroma filter is a where dict"):
        retriever.invoke(QUERY_TEXTS[0], filter=lambda metadata: True)


def test_a_store_without_filters_refuses_one() -> None:
    index = StoreIndex(ExemplarIndex(VECTORS, ids=IDS), **SMALL)
    with pytest.raises(TypeError, match="cannot apply a metadata filter"):
        index.search(QUERY_VECTORS[0], k=5, filter={"tenant": "a"})


# -- LlamaIndex --------------------------------------------------------------------------------


def llama_nodes() -> list[Any]:
    from llama_index.core.schema import TextNode

    return [
        TextNode(id_=item, text=text, metadata=dict(metadata), embedding=vector.tolist())
        for item, text, metadata, vector in zip(IDS, TEXTS, METADATAS, VECTORS, strict=True)
    ]


def llama_index(kind: str, request: pytest.FixtureRequest) -> Any:
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    if kind == "chroma":
        chroma = pytest.importorskip("llama_index.vector_stores.chroma")
        collection = request.getfixturevalue("chroma_client").create_collection(
            _name(), metadata={"hnsw:space": "cosine"}
        )
        vector_store: Any = chroma.ChromaVectorStore(chroma_collection=collection)
    elif kind == "milvus":
        milvus = pytest.importorskip("llama_index.vector_stores.milvus")
        vector_store = milvus.MilvusVectorStore(
            uri=request.getfixturevalue("milvus_uri"),
            collection_name=_name(),
            dim=DIM,
            overwrite=True,
            similarity_metric="IP",
        )
    elif kind == "faiss":
        faiss = pytest.importorskip("faiss")
        store_module = pytest.importorskip("llama_index.vector_stores.faiss")
        vector_store = store_module.FaissVectorStore(faiss_index=faiss.IndexFlatIP(DIM))
    elif kind == "qdrant":
        qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
        from qdrant_client import QdrantClient

        vector_store = qdrant.QdrantVectorStore(
            collection_name=_name(), client=QdrantClient(":memory:")
        )
    else:
        raise AssertionError(kind)
    storage = StorageContext.from_defaults(vector_store=vector_store)
    return VectorStoreIndex(
        llama_nodes(), storage_context=storage, embed_model=MockEmbedding(embed_dim=DIM)
    )


def _tenant(value: str) -> Any:
    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

    return MetadataFilters(filters=[MetadataFilter(key="tenant", value=value)])


def _llama_retrieve(retrievers: dict[str, Any]) -> Any:
    from llama_index.core.schema import QueryBundle

    table = dict(zip(QUERY_TEXTS, QUERY_VECTORS, strict=True))

    def retrieve(text: str, mode: str) -> list[str]:
        bundle = QueryBundle(query_str=text, embedding=table[text].tolist())
        return [result.node.node_id for result in retrievers[mode].retrieve(bundle)]

    return retrieve


def test_llama_index_in_memory_filters() -> None:
    li = pytest.importorskip("exemplar_svm.llama_index")
    from llama_index.core.embeddings import MockEmbedding

    nodes = llama_nodes()
    retrievers = {
        mode: li.ExemplarSVMRetriever.from_defaults(
            nodes=nodes,
            embed_model=MockEmbedding(embed_dim=DIM),
            similarity_top_k=5,
            mode=mode,
            filters=_tenant("a"),
        )
        for mode in MODES
    }
    assert_tenant_a_only(_llama_retrieve(retrievers))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["chroma", "milvus", "faiss", "qdrant"])
def test_llama_index_store_never_returns_another_tenant(
    kind: str, request: pytest.FixtureRequest
) -> None:
    li = pytest.importorskip("exemplar_svm.llama_index")
    index = llama_index(kind, request)
    retrievers = {
        mode: li.ExemplarSVMRetriever.from_defaults(
            index=index, similarity_top_k=5, mode=mode, filters=_tenant("a"), **SMALL
        )
        for mode in MODES
    }
    assert_tenant_a_only(_llama_retrieve(retrievers))
    # The same retriever's filters, replaced per query: tenant b only.
    from llama_index.core.schema import QueryBundle

    bundle = QueryBundle(query_str="q", embedding=QUERY_VECTORS[0].tolist())
    results = retrievers["svm"].retrieve_with_examples(bundle, filters=_tenant("b"))
    assert results and all(TENANT[result.node.node_id] == "b" for result in results)


# -- PostgreSQL + pgvector (a real server from the pgserver package) ---------------------------


@pytest.mark.slow
def test_langchain_pgvector_never_returns_another_tenant(postgres_url: str) -> None:
    postgres = pytest.importorskip("langchain_postgres")
    vectorstore = postgres.PGVector(
        embeddings=TableEmbeddings(), collection_name=_name(), connection=postgres_url
    )
    vectorstore.add_texts(TEXTS, metadatas=METADATAS, ids=IDS)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(
        vectorstore, k=5, search_kwargs={"filter": {"tenant": "a"}}, **SMALL
    )
    everyone = retriever.invoke(QUERY_TEXTS[0], filter={"tenant": {"$in": ["a", "b"]}}, mode="knn")
    assert {TENANT[str(doc.id)] for doc in everyone[:2]} == {"a", "b"}
    assert_tenant_a_only(lambda text, mode: [doc.id for doc in retriever.invoke(text, mode=mode)])
    with pytest.raises(ValueError, match="PGVector filter is a dict"):
        retriever.invoke(QUERY_TEXTS[0], filter="tenant = 'a'")


@pytest.mark.slow
def test_llama_index_pgvector_never_returns_another_tenant(
    postgres_url: str, request: pytest.FixtureRequest
) -> None:
    li = pytest.importorskip("exemplar_svm.llama_index")
    postgres = pytest.importorskip("llama_index.vector_stores.postgres")
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    vector_store = postgres.PGVectorStore(
        connection_string=postgres_url,
        async_connection_string=postgres_url.replace("+psycopg", "+asyncpg"),
        table_name=_name(),
        embed_dim=DIM,
    )
    storage = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex(
        llama_nodes(), storage_context=storage, embed_model=MockEmbedding(embed_dim=DIM)
    )
    retrievers = {
        mode: li.ExemplarSVMRetriever.from_defaults(
            index=index, similarity_top_k=5, mode=mode, filters=_tenant("a"), **SMALL
        )
        for mode in MODES
    }
    assert_tenant_a_only(_llama_retrieve(retrievers))


@pytest.mark.dev
@pytest.mark.parametrize("background", [120, 1000])
def test_store_index_over_qdrant_never_returns_another_tenant(background: int) -> None:
    """The core alone, with a background that samples the store and one that covers it (every
    document then in the problem, most of them outside the filter)."""
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    from exemplar_svm.stores.qdrant import QdrantStore

    client = QdrantClient(":memory:")
    params = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    client.create_collection("tenants", vectors_config=params)
    client.upsert(
        "tenants",
        [
            models.PointStruct(id=item, vector=vector.tolist(), payload=metadata)
            for item, vector, metadata in zip(IDS, VECTORS, METADATAS, strict=True)
        ],
    )
    index = StoreIndex(QdrantStore(client, "tenants"), background=background, candidates=16)
    tenant_a = models.Filter(
        must=[models.FieldCondition(key="tenant", match=models.MatchValue(value="a"))]
    )
    table = dict(zip(QUERY_TEXTS, QUERY_VECTORS, strict=True))

    def retrieve(text: str, mode: str) -> list[str]:
        hits = index.search(table[text], k=5, mode=mode, filter=tenant_a)
        return [hit.id for hit in hits]

    assert_tenant_a_only(retrieve)
    # Positives and negatives by id, from either tenant: still tenant a's documents only.
    hits = index.search(
        QUERY_VECTORS[0],
        k=5,
        mode="svm",
        positives=[IDS[PER_TENANT]],
        negatives=[IDS[1]],
        filter=tenant_a,
    )
    assert len(hits) == 5 and all(TENANT[hit.id] == "a" for hit in hits)
