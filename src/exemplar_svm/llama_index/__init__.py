"""LlamaIndex adapter: :class:`ExemplarSVMRetriever`, a ``BaseRetriever`` over an ExemplarIndex.

The retriever only translates between LlamaIndex and :class:`~exemplar_svm.ExemplarIndex`:
nodes become rows (ids are node ids), a ``QueryBundle`` becomes query vectors, hits become
``NodeWithScore``. All ranking is the core's. A ``VectorStoreIndex`` over an external vector
store (Chroma, Milvus, FAISS, Qdrant) is searched in place through a
:class:`~exemplar_svm.StoreIndex` (see :func:`store_from_vector_store_index`), with
``MetadataFilters`` translated for it by :func:`store_filter`.

The retriever lives in ``exemplar_svm.llama_index._retriever``, the vector stores' specifics in
``exemplar_svm.llama_index._stores``; import them from here.

Needs the ``llama-index`` extra: ``pip install 'exemplar-svm[llama-index]'``.
"""

from __future__ import annotations

from exemplar_svm._optional import require

require("llama_index.core", extra="llama-index")

from exemplar_svm.llama_index._retriever import (  # noqa: E402
    FORMAT,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    INDEX_DIRNAME,
    PERSIST_FILENAME,
    SIMILARITY_KEY,
    EmbedModel,
    Example,
    Examples,
    ExemplarQueryBundle,
    ExemplarSVMRetriever,
)
from exemplar_svm.llama_index._stores import (  # noqa: E402
    SUPPORTED_VECTOR_STORES,
    store_filter,
    store_from_vector_store_index,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "INDEX_DIRNAME",
    "PERSIST_FILENAME",
    "SIMILARITY_KEY",
    "SUPPORTED_VECTOR_STORES",
    "EmbedModel",
    "Example",
    "Examples",
    "ExemplarQueryBundle",
    "ExemplarSVMRetriever",
    "store_filter",
    "store_from_vector_store_index",
]
