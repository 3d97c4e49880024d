"""LangChain's standard retriever tests, run on ExemplarSVMRetriever with the real local model."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import RetrieversIntegrationTests

from exemplar_svm.langchain import ExemplarSVMRetriever
from tests.test_langchain import IDS, METADATAS, TEXTS, LocalEmbeddings


class _BuiltOnce(RetrieversIntegrationTests):
    """The retriever is built by its own constructor from parts made once per class, by
    ``_corpus``."""

    _params: dict[str, Any] | None = None

    @property
    def retriever_constructor(self) -> type[ExemplarSVMRetriever]:
        return ExemplarSVMRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        assert self._params is not None
        return dict(self._params)

    @property
    def retriever_query_example(self) -> str:
        return "Which animals make good pets?"


class TestExemplarSVMRetrieverStandard(_BuiltOnce):
    """Over an index embedded once per class."""

    @pytest.fixture(autouse=True)
    def _corpus(self, local_embedder: Any) -> None:
        cls = type(self)
        if cls._params is None:
            built = ExemplarSVMRetriever.from_texts(
                TEXTS, LocalEmbeddings(local_embedder), metadatas=METADATAS, ids=IDS
            )
            cls._params = {
                "embedding": built.embedding,
                "index": built.index,
                "documents": built.documents,
            }


class TestExemplarSVMRetrieverOverAVectorStoreStandard(_BuiltOnce):
    """The store-backed retriever (a StoreIndex over LangChain's InMemoryVectorStore), from the
    parts :meth:`ExemplarSVMRetriever.from_vectorstore` makes."""

    @pytest.fixture(autouse=True)
    def _corpus(self, local_embedder: Any) -> None:
        from langchain_core.vectorstores import InMemoryVectorStore

        cls = type(self)
        if cls._params is None:
            vectorstore = InMemoryVectorStore(LocalEmbeddings(local_embedder))
            vectorstore.add_texts(TEXTS, metadatas=METADATAS, ids=IDS)
            built = ExemplarSVMRetriever.from_vectorstore(vectorstore)
            cls._params = {
                "embedding": built.embedding,
                "index": built.index,
                "vectorstore": built.vectorstore,
            }
