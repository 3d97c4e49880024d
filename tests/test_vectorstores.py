"""The framework adapters over real vector databases: Chroma (a server on loopback), Milvus Lite
and FAISS, through LangChain and LlamaIndex, plus LangChain's InMemoryVectorStore.

With a background and candidate pool at least as large as the store, the StoreIndex is exact, so
every store must return what the in-memory retriever returns on the same vectors. Embeddings
come from the real local all-MiniLM-L6-v2 (unit-normalised, so L2 and inner-product stores rank
exactly); the refusal tests scale them to break that on purpose.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_core.vectorstores import VectorStore as LangChainVectorStore
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.schema import MetadataMode, TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

import exemplar_svm.langchain as lc
import exemplar_svm.llama_index as li
from exemplar_svm import ExemplarIndex
from exemplar_svm.store_index import StoreIndex
from tests.test_langchain import IDS, METADATAS, TEXTS, LocalEmbeddings, Recorder
from tests.test_llama_index import ExternalStore, LocalEmbedding, make_nodes

pytestmark = [
    pytest.mark.slow,
    # langchain-milvus 0.3.3 still uses pymilvus's ORM API, deprecated in pymilvus 2.6.
    pytest.mark.filterwarnings("ignore:.*ORM-style PyMilvus API"),
]

EXACT = {"background": 1000, "candidates": 1000}  # at least the corpus: the exact SVM
QUERIES = ["space exploration and planets", "looking after animals at home", "soccer rules"]
DIM = 384


def ids_of(docs: list[Any]) -> list[str]:
    return [doc.id if isinstance(doc, Document) else doc.node.node_id for doc in docs]


# -- engines (chroma_client and milvus_uri are session fixtures in tests/conftest.py) ----------


def _name() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def vectors(local_embedder: Any) -> np.ndarray:
    return np.asarray(local_embedder.embed_documents(TEXTS), dtype=np.float32)


class Scaled(Embeddings):
    """Another model's vectors times a constant: same directions, not unit-normalised."""

    def __init__(self, inner: Embeddings, factor: float) -> None:
        self.inner, self.factor = inner, factor

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[self.factor * x for x in row] for row in self.inner.embed_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        return [self.factor * x for x in self.inner.embed_query(text)]


# -- LangChain stores --------------------------------------------------------------------------


def langchain_store(kind: str, embeddings: Embeddings, request: pytest.FixtureRequest) -> Any:
    """A LangChain vector store of ``kind`` holding TEXTS under IDS, embedded by ``embeddings``."""
    if kind == "inmemory":
        store = InMemoryVectorStore(embeddings)
    elif kind == "chroma":
        pytest.importorskip("chromadb")
        chroma = pytest.importorskip("langchain_chroma")
        store = chroma.Chroma(
            collection_name=_name(),
            embedding_function=embeddings,
            client=request.getfixturevalue("chroma_client"),
            collection_metadata={"hnsw:space": "cosine"},
        )
    elif kind == "milvus":
        milvus = pytest.importorskip("langchain_milvus")
        store = milvus.Milvus(
            embeddings,
            collection_name=_name(),
            connection_args={"uri": request.getfixturevalue("milvus_uri")},
            index_params={"index_type": "FLAT", "metric_type": "L2"},
        )
        # langchain-milvus 0.3.3 reaches its collection through pymilvus's ORM under the
        # MilvusClient's alias, which pymilvus 2.6 no longer registers (langchain-milvus issue
        # #130, fix in PR #132): register it, as that fix does.
        from pymilvus import connections

        connections.connect(alias=store.alias, uri=request.getfixturevalue("milvus_uri"))
    elif kind == "faiss":
        faiss_module = pytest.importorskip("langchain_community.vectorstores.faiss")
        pytest.importorskip("faiss")
        # FAISS's default: an exact L2 index (the vectors are unit-normalised).
        return faiss_module.FAISS.from_texts(TEXTS, embeddings, metadatas=METADATAS, ids=IDS)
    else:
        raise AssertionError(kind)
    store.add_texts(TEXTS, metadatas=METADATAS, ids=IDS)
    return store


LANGCHAIN_STORES = ["inmemory", "chroma", "milvus", "faiss"]


@pytest.fixture
def embeddings(local_embedder: Any) -> LocalEmbeddings:
    return LocalEmbeddings(local_embedder)


@pytest.fixture
def in_memory(embeddings: LocalEmbeddings, vectors: np.ndarray) -> lc.ExemplarSVMRetriever:
    return lc.ExemplarSVMRetriever.from_embeddings(
        zip(TEXTS, vectors, strict=True), embeddings, metadatas=METADATAS, ids=IDS, k=10
    )


@pytest.mark.parametrize("kind", LANGCHAIN_STORES)
def test_langchain_store_ranks_like_the_in_memory_retriever(
    kind: str,
    embeddings: LocalEmbeddings,
    in_memory: lc.ExemplarSVMRetriever,
    request: pytest.FixtureRequest,
) -> None:
    vectorstore = langchain_store(kind, embeddings, request)
    embeddings.document_batches.clear()
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(vectorstore, k=10, **EXACT)
    assert retriever.embedding is embeddings  # the store's own model by default
    assert isinstance(retriever.index, StoreIndex)
    for query in QUERIES:
        docs = retriever.invoke(query)
        expected = in_memory.invoke(query)
        assert ids_of(docs) == ids_of(expected)
        for doc, want in zip(docs, expected, strict=True):
            assert doc.page_content == want.page_content
            assert doc.metadata["topic"] == want.metadata["topic"]
            assert doc.metadata["score"] == pytest.approx(want.metadata["score"], rel=1e-3)
            assert doc.metadata["similarity"] == pytest.approx(
                want.metadata["similarity"], abs=1e-4
            )
    assert embeddings.document_batches == []  # nothing re-embedded
    # Examples by id leave those documents out, as in memory; k per call.
    options = {"positives": ["pets-1"], "negatives": ["pets-0", "space-0"], "k": 3}
    docs = retriever.invoke("animals", **options)
    assert ids_of(docs) == ids_of(in_memory.invoke("animals", **options))
    assert len(docs) == 3 and not {"pets-1", "pets-0", "space-0"} & set(ids_of(docs))


@pytest.mark.parametrize("mode", ["knn", "hybrid"])
def test_other_modes_over_a_store(
    mode: str, embeddings: LocalEmbeddings, in_memory: lc.ExemplarSVMRetriever
) -> None:
    vectorstore = InMemoryVectorStore(embeddings)
    vectorstore.add_texts(TEXTS, metadatas=METADATAS, ids=IDS)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(vectorstore, k=5, mode=mode, **EXACT)
    docs = retriever.invoke(QUERIES[0])
    expected = in_memory.invoke(QUERIES[0], k=5, mode=mode)
    assert ids_of(docs) == ids_of(expected)
    assert [d.metadata["score"] for d in docs] == pytest.approx(
        [d.metadata["score"] for d in expected], rel=1e-3, abs=1e-5
    )


async def test_langchain_async_and_callbacks_over_chroma(
    embeddings: LocalEmbeddings,
    in_memory: lc.ExemplarSVMRetriever,
    request: pytest.FixtureRequest,
) -> None:
    vectorstore = langchain_store("chroma", embeddings, request)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(
        vectorstore, k=4, skip_when="proven", **EXACT
    )
    assert isinstance(retriever.index, StoreIndex) and retriever.index.skip_when == "proven"
    recorder = Recorder()
    results = await asyncio.gather(
        *(retriever.ainvoke(q, config={"callbacks": [recorder]}) for q in QUERIES)
    )
    assert embeddings.async_queries and not embeddings.queries  # embedded natively async
    for query, docs in zip(QUERIES, results, strict=True):
        assert ids_of(docs) == ids_of(in_memory.invoke(query, k=4))
    assert sorted(e[1] for e in recorder.events if e[0] == "start") == sorted(QUERIES)
    ends = [e[1] for e in recorder.events if e[0] == "end"]
    assert sorted(ends) == sorted(ids_of(docs) for docs in results)
    # Texts as examples are embedded (once per call, as in memory); documents with ids are not.
    doc = Document(page_content="ignored", id="football-2")
    docs = await retriever.ainvoke("sport", positives=["A penalty kick in football", doc])
    assert embeddings.async_document_batches[-1] == ["A penalty kick in football"]
    assert "football-2" not in ids_of(docs)


def test_add_documents_go_to_the_vector_store(embeddings: LocalEmbeddings) -> None:
    vectorstore = InMemoryVectorStore(embeddings)
    vectorstore.add_texts(TEXTS, metadatas=METADATAS, ids=IDS)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(vectorstore, k=1, **EXACT)
    added = retriever.add_texts(["Penguins huddle together in the Antarctic winter."], ids=["p"])
    assert added == ["p"] and "p" in vectorstore.store
    assert ids_of(retriever.invoke("penguins in Antarctica")) == ["p"]
    assert retriever.add_documents([]) == []


def test_a_custom_store_is_plugged_in_with_store(
    embeddings: LocalEmbeddings, vectors: np.ndarray, in_memory: lc.ExemplarSVMRetriever
) -> None:
    class Shelf(LangChainVectorStore):
        """A LangChain store exemplar_svm does not know: it only keeps documents."""

        def __init__(self) -> None:
            pairs = zip(IDS, TEXTS, strict=True)
            self.docs = {item: Document(page_content=text, id=item) for item, text in pairs}

        def get_by_ids(self, ids: Any, /) -> list[Document]:
            return [self.docs[item] for item in ids if item in self.docs]

        def add_texts(self, texts: Any, metadatas: Any = None, **kwargs: Any) -> list[str]:
            raise NotImplementedError

        def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
            raise NotImplementedError

        @classmethod
        def from_texts(cls, texts: Any, embedding: Any, metadatas: Any = None, **kw: Any) -> Any:
            raise NotImplementedError

    with pytest.raises(ValueError, match=r"Shelf.*langchain_chroma\.Chroma.*store=") as error:
        lc.ExemplarSVMRetriever.from_vectorstore(Shelf(), embeddings)
    assert "exemplar_svm.stores.VectorStore" in str(error.value)
    # The core's own in-memory index implements the store protocol.
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(
        Shelf(), embeddings, store=ExemplarIndex(vectors, IDS), k=10, **EXACT
    )
    assert ids_of(retriever.invoke(QUERIES[1])) == ids_of(in_memory.invoke(QUERIES[1]))


def test_a_store_without_an_embedding_model_needs_one(local_embedder: Any) -> None:
    faiss_module = pytest.importorskip("langchain_community.vectorstores.faiss")
    pairs = list(zip(TEXTS, local_embedder.embed_documents(TEXTS).tolist(), strict=True))
    store = faiss_module.FAISS.from_embeddings(pairs, lambda text: [0.0] * DIM, ids=IDS)
    with pytest.raises(ValueError, match="pass embedding="):
        lc.ExemplarSVMRetriever.from_vectorstore(store)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(store, local_embedder, k=2)
    assert ids_of(retriever.invoke("the Moon landing"))[0] == "space-0"


@pytest.mark.parametrize("kind", ["faiss", "milvus"])
def test_l2_over_unnormalised_vectors_is_refused(
    kind: str, embeddings: LocalEmbeddings, request: pytest.FixtureRequest
) -> None:
    vectorstore = langchain_store(kind, Scaled(embeddings, 3.0), request)
    retriever = lc.ExemplarSVMRetriever.from_vectorstore(vectorstore, k=3)
    with pytest.raises(ValueError, match=r"'l2'.*not unit-normalised.*cosine"):
        retriever.invoke("anything")


# -- LangChain standard tests: in tests/test_langchain_standard.py -------------------------------

# -- LlamaIndex stores -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nodes(local_embedder: Any) -> list[TextNode]:
    """The LlamaIndex test corpus, each node carrying its embedding (nothing re-embedded)."""
    plain = make_nodes()
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in plain]
    vectors = local_embedder.embed_documents(texts)
    return [
        node.model_copy(update={"embedding": vector.tolist()})
        for node, vector in zip(plain, vectors, strict=True)
    ]


def llama_index(kind: str, nodes: list[TextNode], request: pytest.FixtureRequest) -> Any:
    if kind == "chroma":
        pytest.importorskip("chromadb")
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
        vector_store = store_module.FaissVectorStore(faiss_index=faiss.IndexFlatL2(DIM))
    else:
        raise AssertionError(kind)
    storage = StorageContext.from_defaults(vector_store=vector_store)
    return VectorStoreIndex(
        nodes, storage_context=storage, embed_model=request.getfixturevalue("embed_model")
    )


@pytest.fixture
def embed_model(local_embedder: Any) -> LocalEmbedding:
    return LocalEmbedding(local_embedder)


@pytest.mark.parametrize("kind", ["chroma", "milvus", "faiss"])
def test_llama_index_store_ranks_like_the_in_memory_retriever(
    kind: str, nodes: list[TextNode], embed_model: LocalEmbedding, request: pytest.FixtureRequest
) -> None:
    index = llama_index(kind, nodes, request)
    assert embed_model.counts["text"] == 0
    retriever = li.ExemplarSVMRetriever.from_defaults(index=index, similarity_top_k=10, **EXACT)
    assert retriever.embed_model is embed_model
    assert isinstance(retriever.index, StoreIndex)
    in_memory = li.ExemplarSVMRetriever.from_defaults(
        nodes=nodes, embed_model=embed_model, similarity_top_k=10
    )
    for query in ["Which planet has two moons?", "feeding a kitten", "saving for retirement"]:
        results = retriever.retrieve(query)
        expected = in_memory.retrieve(query)
        assert ids_of(results) == ids_of(expected)
        for got, want in zip(results, expected, strict=True):
            assert got.score == pytest.approx(want.score, rel=1e-3)
            similarity = got.node.metadata[li.SIMILARITY_KEY]
            assert similarity == pytest.approx(want.node.metadata[li.SIMILARITY_KEY], abs=1e-4)
            assert got.node.get_content() == want.node.get_content()
            assert got.node.metadata["topic"] == want.node.metadata["topic"]
    assert embed_model.counts["text"] == 0
    # Examples by id, per query, are left out of the results.
    options = {"positives": ["cats-1"], "negatives": ["dogs-0"]}
    results = retriever.retrieve_with_examples("pets", **options)
    assert ids_of(results) == ids_of(in_memory.retrieve_with_examples("pets", **options))
    assert not {"cats-1", "dogs-0"} & set(ids_of(results))


async def test_llama_index_async_callbacks_and_limits(
    nodes: list[TextNode], embed_model: LocalEmbedding, request: pytest.FixtureRequest
) -> None:
    index = llama_index("faiss", nodes, request)
    debug = LlamaDebugHandler()
    retriever = li.ExemplarSVMRetriever.from_defaults(
        index=index, similarity_top_k=3, callback_manager=CallbackManager([debug]), **EXACT
    )
    results = await asyncio.gather(*(retriever.aretrieve(q) for q in ["cats", "stars"]))
    assert embed_model.counts["aquery"] == 2 and embed_model.counts["query"] == 0
    assert [len(r) for r in results] == [3, 3]
    assert ids_of(results[0]) == ids_of(retriever.retrieve("cats"))
    assert len(debug.get_event_pairs(CBEventType.RETRIEVE)) == 3
    # FAISS keeps no metadata: the filters are evaluated over the docstore's nodes.
    filtered = retriever.retrieve_with_examples(
        "stars", filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="cats")])
    )
    assert filtered and all(result.node.metadata["topic"] == "cats" for result in filtered)
    with pytest.raises(ValueError, match=r"persist.*vector store"):
        retriever.persist(request.getfixturevalue("tmp_path"))
    with pytest.raises(TypeError, match="background apply only"):
        li.ExemplarSVMRetriever.from_defaults(nodes=nodes, embed_model=embed_model, background=5)


@pytest.mark.parametrize("kind", ["chroma", "faiss"])
def test_llama_index_ranks_the_store_with_a_vector_store_query(
    kind: str, nodes: list[TextNode], embed_model: LocalEmbedding, request: pytest.FixtureRequest
) -> None:
    """With a small candidate pool the store's own query ranks the collection; its ids (FAISS:
    positions) come back as node ids, which the store's vectors are fetched by. Only the SVM
    modes rank by the store's query (the default for a query alone, PRF, asks for neighbours
    only), so the hybrid is asked for."""
    index = llama_index(kind, nodes, request)
    queries: list[Any] = []
    vector_store = index.vector_store
    original = type(vector_store).query

    def spy(self: Any, query: Any, **kwargs: Any) -> Any:
        queries.append(query)
        return original(self, query, **kwargs)

    request.getfixturevalue("monkeypatch").setattr(type(vector_store), "query", spy)
    retriever = li.ExemplarSVMRetriever.from_defaults(
        index=index,
        similarity_top_k=5,
        mode="hybrid",
        background=8,
        candidates=2,
        max_candidates=0,
        skip_when="proven",
    )
    assert retriever._index.skip_when == "proven"
    results = retriever.retrieve("How often should a cat see the vet?")
    assert len(results) == 5 and len(set(ids_of(results))) == 5
    assert queries and queries[-1].query_embedding is not None
    assert all(r.node.metadata[li.SIMILARITY_KEY] <= 1 for r in results)


def test_llama_index_unknown_store_names_the_supported_ones(
    nodes: list[TextNode], embed_model: LocalEmbedding
) -> None:
    storage = StorageContext.from_defaults(vector_store=ExternalStore())
    index = VectorStoreIndex(nodes[:3], storage_context=storage, embed_model=embed_model)
    with pytest.raises(ValueError, match=r"ExternalStore.*ChromaVectorStore.*store=.*nodes=") as e:
        li.ExemplarSVMRetriever.from_defaults(index=index)
    assert "exemplar_svm.stores.VectorStore" in str(e.value)


# The documentation's vector-database examples (docs/vector-databases.md, formerly in the README)
# run in tests/test_docs.py, with the checks this file made of them.
