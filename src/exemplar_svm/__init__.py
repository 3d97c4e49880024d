"""exemplar-svm: rank a corpus per query with an exemplar SVM, for LangChain and LlamaIndex."""

from exemplar_svm.embedders import (
    Embedder,
    EmbeddingError,
    LangChainEmbedder,
    LlamaIndexEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    as_embedder,
)
from exemplar_svm.index import MODES, ExemplarIndex, Hit, Mode
from exemplar_svm.store_index import StoreIndex
from exemplar_svm.svm import LinearModel, fit

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "Embedder",
    "EmbeddingError",
    "ExemplarIndex",
    "Hit",
    "LangChainEmbedder",
    "LinearModel",
    "LlamaIndexEmbedder",
    "Mode",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "StoreIndex",
    "__version__",
    "as_embedder",
    "fit",
]
