"""Parity with the retrievers docs/migrating.md replaces, on cranfield's precomputed embeddings.

- langchain-community 0.4.2's ``SVMRetriever`` (a dev dependency): the same top-k as
  ``ExemplarSVMRetriever.from_texts(texts, embeddings, k=...)`` with the textbook settings, and
  its ``relevancy_threshold`` keeps no document that ours would drop.
- llama-index-core's ``vector_store_query_mode="svm"`` over a ``VectorStoreIndex`` (and its
  ``"logistic_regression"`` and ``"linear_regression"`` modes, which run the same SVM): the same
  top-k and scores as ``ExemplarSVMRetriever.from_defaults(index=...)`` with those settings.

Both embed through a fake model that returns the shared dataset's precomputed vectors for the
texts it knows, so nothing is embedded and the two sides see exactly the same vectors.
Cranfield's documents 471 and 995 are empty, with equal vectors: they tie, and either may come
first, so rankings are compared by document text, which is the same for both.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import EMBEDDINGS, corpus_embeddings, dataset_path, query_embeddings

# About 6 s on two idle cores, 35 s on a busy machine: on their side scikit-learn's LinearSVC
# fits the 1,400 documents again for every query.
pytestmark = pytest.mark.slow

#: The settings that reproduce the textbook exemplar SVM both frameworks ran: Karpathy's
#: LinearSVC(C=0.1, class_weight="balanced"), the query as the only positive.
TEXTBOOK: dict[str, Any] = {"mode": "svm", "C": 0.1, "search_kwargs": {"feedback": 0}}
K = 10
QUERIES = 25


class Cranfield:
    """Cranfield's texts with their precomputed all-MiniLM-L6-v2 vectors."""

    def __init__(self) -> None:
        folder = dataset_path("cranfield")
        assert (folder / EMBEDDINGS / "queries.npy").is_file()
        with open(folder / "corpus.jsonl", encoding="utf-8") as file:
            rows = [json.loads(line) for line in file]
        with open(folder / "queries.jsonl", encoding="utf-8") as file:
            queries = [json.loads(line) for line in file]
        self.ids = [row["_id"] for row in rows]
        self.texts = [row["text"] for row in rows]
        self.vectors = corpus_embeddings("cranfield")
        self.queries = [query["text"] for query in queries][:QUERIES]
        query_vectors = query_embeddings("cranfield")
        self.table: dict[str, np.ndarray] = {}
        for text, vector in zip(self.texts, self.vectors, strict=True):
            if text in self.table:  # only the two empty documents, whose vectors are equal
                assert np.array_equal(self.table[text], vector)
            self.table[text] = vector
        for text, vector in zip(self.queries, query_vectors, strict=False):
            assert text not in self.table
            self.table[text] = vector

    def vector(self, text: str) -> list[float]:
        if text not in self.table:
            raise KeyError(f"no precomputed embedding for {text[:60]!r}")
        return [float(x) for x in self.table[text]]


@pytest.fixture(scope="module")
def cranfield() -> Cranfield:
    return Cranfield()


# -- LangChain: langchain-community's SVMRetriever -------------------------------------------


@pytest.fixture(scope="module")
def langchain_retrievers(cranfield: Cranfield) -> tuple[Any, Any, Any]:
    """(precomputed Embeddings, langchain-community's SVMRetriever, ours), both k=10."""
    pytest.importorskip("langchain_core")
    svm = pytest.importorskip("langchain_community.retrievers.svm")
    from langchain_core.embeddings import Embeddings

    from exemplar_svm.langchain import ExemplarSVMRetriever

    class Precomputed(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [cranfield.vector(text) for text in texts]

        def embed_query(self, text: str) -> list[float]:
            return cranfield.vector(text)

    embeddings = Precomputed()
    metadatas = [{"id": item} for item in cranfield.ids]
    theirs = svm.SVMRetriever.from_texts(cranfield.texts, embeddings, metadatas=metadatas, k=K)
    # The same call, plus the settings of their ranking.
    ours = ExemplarSVMRetriever.from_texts(
        cranfield.texts, embeddings, metadatas=metadatas, k=K, **TEXTBOOK
    )
    return embeddings, theirs, ours


def texts_of(docs: list[Any]) -> list[str]:
    return [doc.page_content for doc in docs]


def test_langchain_from_texts_ranks_like_svm_retriever(
    cranfield: Cranfield, langchain_retrievers: tuple[Any, Any, Any]
) -> None:
    _, theirs, ours = langchain_retrievers
    for query in cranfield.queries:
        expected = theirs.invoke(query)
        got = ours.invoke(query)
        assert texts_of(got) == texts_of(expected), query
        assert len(got) == K


def test_langchain_embeddings_keyword_is_svm_retrievers_name(
    cranfield: Cranfield, langchain_retrievers: tuple[Any, Any, Any]
) -> None:
    from exemplar_svm.langchain import ExemplarSVMRetriever

    embeddings, theirs, _ = langchain_retrievers
    texts = cranfield.texts[:50]
    named = ExemplarSVMRetriever.from_texts(texts=texts, embeddings=embeddings, k=3, **TEXTBOOK)
    svm = type(theirs).from_texts(texts=texts, embeddings=embeddings, k=3)
    query = cranfield.queries[0]
    assert texts_of(named.invoke(query)) == texts_of(svm.invoke(query))


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_langchain_relevancy_threshold_keeps_what_svm_retriever_kept(
    cranfield: Cranfield, langchain_retrievers: tuple[Any, Any, Any], threshold: float
) -> None:
    """Ours normalises without the query's own (highest) decision value: at least as many."""
    _, theirs, ours = langchain_retrievers
    theirs = theirs.model_copy(update={"relevancy_threshold": threshold})
    fewer = 0
    for query in cranfield.queries[:10]:
        kept = texts_of(theirs.invoke(query))
        docs = ours.invoke(query, relevancy_threshold=threshold)
        # In rank order, a prefix of the top k, each at or above the threshold.
        assert texts_of(docs) == texts_of(ours.invoke(query))[: len(docs)]
        assert all(doc.metadata["relevancy"] >= threshold for doc in docs)
        assert docs[0].metadata["relevancy"] == 1.0
        assert kept == texts_of(docs)[: len(kept)]
        fewer += len(kept) < len(docs)
    if threshold >= 0.5:  # theirs tops out near 0.5: the scales really differ
        assert fewer > 0


# -- LlamaIndex: vector_store_query_mode="svm" -----------------------------------------------


@pytest.fixture(scope="module")
def llama_index(cranfield: Cranfield) -> Any:
    """A VectorStoreIndex (the default SimpleVectorStore) over cranfield's vectors."""
    pytest.importorskip("llama_index.core")
    from llama_index.core import VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import TextNode

    class Precomputed(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return cranfield.vector(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return cranfield.vector(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return cranfield.vector(text)

    rows = zip(cranfield.ids, cranfield.texts, cranfield.vectors, strict=True)
    nodes = [TextNode(id_=key, text=text, embedding=vector.tolist()) for key, text, vector in rows]
    return VectorStoreIndex(nodes, embed_model=Precomputed(model_name="precomputed"))


def test_llama_index_ranks_like_the_svm_query_mode(cranfield: Cranfield, llama_index: Any) -> None:
    from exemplar_svm.llama_index import ExemplarSVMRetriever

    theirs = llama_index.as_retriever(vector_store_query_mode="svm", similarity_top_k=K)
    ours = ExemplarSVMRetriever.from_defaults(index=llama_index, similarity_top_k=K, **TEXTBOOK)
    for query in cranfield.queries:
        expected = theirs.retrieve(query)
        got = ours.retrieve(query)
        assert [hit.node.get_content() for hit in got] == [
            hit.node.get_content() for hit in expected
        ], query
        # The score is the SVM's decision value on both sides: the same optimum.
        assert [hit.score for hit in got] == pytest.approx(
            [hit.score for hit in expected], abs=1e-4
        )


@pytest.mark.parametrize("mode", ["logistic_regression", "linear_regression"])
def test_llama_index_learner_modes_run_the_svm(
    cranfield: Cranfield, llama_index: Any, mode: str
) -> None:
    """What docs/migrating.md says: these modes rank exactly as "svm" (llama-index-core 0.14)."""
    svm = llama_index.as_retriever(vector_store_query_mode="svm", similarity_top_k=K)
    other = llama_index.as_retriever(vector_store_query_mode=mode, similarity_top_k=K)
    for query in cranfield.queries[:3]:
        expected = [(hit.node.node_id, hit.score) for hit in svm.retrieve(query)]
        assert [(hit.node.node_id, hit.score) for hit in other.retrieve(query)] == expected
