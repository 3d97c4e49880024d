"""LangChain adapter: :class:`ExemplarSVMRetriever`, a retriever over an :class:`ExemplarIndex`
or, through a :class:`~exemplar_svm.StoreIndex`, over a LangChain ``VectorStore``.

The retriever only translates between LangChain and the shared core: it embeds texts with the
embedding model it was given, hands vectors and ids to :meth:`ExemplarIndex.search` (or
:meth:`StoreIndex.search`), and turns the hits back into ``Document`` objects. Every ranking
decision is the core's. :func:`store_from_vectorstore` translates a LangChain vector store into
the core's :class:`exemplar_svm.stores.VectorStore` and :func:`store_filter` a filter into its
store's syntax.

The retriever lives in ``exemplar_svm.langchain._retriever``, the vector stores' specifics in
``exemplar_svm.langchain._stores``; import them from here.

Needs the ``langchain`` extra: ``pip install 'exemplar-svm[langchain]'``.
"""

from __future__ import annotations

from exemplar_svm._optional import require

require("langchain_core", extra="langchain")

from exemplar_svm.langchain._retriever import ExemplarSVMRetriever  # noqa: E402
from exemplar_svm.langchain._stores import (  # noqa: E402
    SUPPORTED_VECTORSTORES,
    metadata_predicate,
    store_filter,
    store_from_vectorstore,
)

__all__ = [
    "SUPPORTED_VECTORSTORES",
    "ExemplarSVMRetriever",
    "metadata_predicate",
    "store_filter",
    "store_from_vectorstore",
]
