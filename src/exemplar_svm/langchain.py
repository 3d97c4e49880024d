"""LangChain adapter: :class:`ExemplarSVMRetriever`, a retriever over an :class:`ExemplarIndex`.

The retriever only translates between LangChain and the shared core: it embeds texts with the
embedding model it was given, hands vectors and ids to :meth:`ExemplarIndex.search`, and turns
the hits back into ``Document`` objects. Every ranking decision is the core's.

Needs the ``langchain`` extra: ``pip install 'exemplar-svm[langchain]'``.
"""

# ruff: noqa: E402 - langchain_core is imported after require() names the extra it comes from.

from __future__ import annotations

from exemplar_svm._optional import require

require("langchain_core", extra="langchain")

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from numpy.typing import ArrayLike, NDArray
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Self

from exemplar_svm.embedders import Embedder, as_embedder
from exemplar_svm.index import (
    DEFAULT_C,
    DEFAULT_MODE,
    DEFAULT_NEGATIVE_WEIGHT,
    SEARCH_OPTIONS,
    ExemplarIndex,
    Hit,
    Mode,
    check_search_options,
)

__all__ = ["ExemplarSVMRetriever"]

#: One extra example for a search: a document id, a text, a ``Document`` or a vector.
Example = Union[str, Document, ArrayLike]  # noqa: UP007
#: ``positives`` / ``negatives`` of a call: one example, a sequence of them, or ``None``.
Examples = Union[Example, Sequence[Example], None]  # noqa: UP007

# Constructor arguments that the ``from_*`` class methods fill in themselves.
_BUILT = frozenset({"index", "documents", "embedding"})


class ExemplarSVMRetriever(BaseRetriever):
    """LangChain retriever that ranks documents with a per-query exemplar SVM.

    Build it with :meth:`from_texts` or :meth:`from_documents` (documents are embedded in
    batches with ``embed_documents``), :meth:`from_embeddings` (vectors you already have) or
    :meth:`from_index` (an existing, e.g. loaded, :class:`~exemplar_svm.ExemplarIndex`). Grow it
    with :meth:`add_documents` / :meth:`add_texts`; documents already indexed are never embedded
    again.

    Call it like any retriever: ``invoke(query)``, ``ainvoke(query)``, ``batch``, or as a step of
    an LCEL chain. ``invoke`` and ``ainvoke`` also take, per call:

    - ``k``: how many documents to return (the ``k`` field by default);
    - ``positives`` / ``negatives``: extra examples of what is (not) wanted. Each is a document
      id, a text, a ``Document`` or a vector, or a list mixing them. A string that is the id of
      a document in the retriever means that document; any other string is a text, embedded
      with the model's ``embed_documents`` (one batch per call, positives and negatives
      together), as the examples stand for documents. A ``Document`` whose ``id`` is in the
      retriever means that document, otherwise its ``page_content`` is embedded. Corpus
      documents named here are left out of the results;
    - ``mode``, ``C``, ``negative_weight`` and any of the core's other ranking options
      (``prior``, ``feedback``, ``hybrid_weight``, ...; see ``search_kwargs``): override the
      retriever's settings for this call.

    ``ainvoke`` is natively async: the query (and any example texts) are embedded with
    ``aembed_query`` (``aembed_documents``) and the search runs in a worker thread, so the event
    loop stays free and concurrent calls make progress together.

    Every returned ``Document`` is a copy of the stored one with its ``id``, ``page_content``
    and ``metadata``, plus two entries added to (a shallow copy of) ``metadata``:

    - ``"score"`` (float): the ranking score of the mode, higher is better (the SVM's decision
      value for ``"svm"``, the cosine similarity for ``"knn"``, the mean z-score for
      ``"hybrid"``); see :class:`exemplar_svm.Hit`;
    - ``"similarity"`` (float): the cosine similarity between the document and the query,
      whatever the mode.

    Existing metadata entries with those names are overwritten in the returned copies only.

    Parameters
    ----------
    embedding : Embeddings, Embedder or str
        Embeds queries, example texts and new documents: any LangChain ``Embeddings``, an
        exemplar_svm :class:`~exemplar_svm.Embedder` (e.g.
        :class:`~exemplar_svm.SentenceTransformerEmbedder`) or a sentence-transformers model
        name; anything :func:`exemplar_svm.as_embedder` accepts. It must be the model that
        embedded the corpus.
    index : ExemplarIndex
        One vector per document.
    documents : dict of str to Document
        The documents by id, with exactly the ids of ``index``.
    k : int, default=4
        How many documents a call returns.
    mode : {"svm", "knn", "hybrid"}
        How the core ranks; see :meth:`exemplar_svm.ExemplarIndex.search`.
    C : float
        The SVM's loss weight.
    negative_weight : float
        How many anonymous corpus documents one named negative counts for.

    Unknown arguments raise an error.

    Examples
    --------
    >>> from exemplar_svm import SentenceTransformerEmbedder
    >>> from exemplar_svm.langchain import ExemplarSVMRetriever
    >>> retriever = ExemplarSVMRetriever.from_texts(
    ...     ["Cats purr when they are content.", "Dogs bark at strangers.", "Tea is a drink."],
    ...     SentenceTransformerEmbedder(),
    ...     ids=["cats", "dogs", "tea"],
    ...     k=2,
    ... )
    >>> [doc.id for doc in retriever.invoke("Which pet purrs?")]
    ['cats', 'dogs']
    >>> doc = retriever.invoke("Which pet purrs?", k=1, negatives=["cats"])[0]
    >>> doc.id, sorted(doc.metadata)
    ('dogs', ['score', 'similarity'])
    """

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    embedding: Any
    """Embeds queries, example texts and new documents: a LangChain ``Embeddings``, an
    exemplar_svm ``Embedder`` or a sentence-transformers model name (see
    :func:`exemplar_svm.as_embedder`). Must be the model that embedded the corpus."""

    index: ExemplarIndex
    """The shared core: one vector per document, searched for every call."""

    documents: dict[str, Document] = Field(repr=False)
    """The corpus documents by id; exactly the ids of ``index``."""

    k: int = Field(default=4, ge=1)
    """How many documents to return; ``invoke(query, k=...)`` overrides it for one call."""

    mode: Mode = DEFAULT_MODE
    """How to rank: ``"svm"`` (the exemplar SVM), ``"knn"`` (cosine similarity) or
    ``"hybrid"`` (both, z-scored and averaged)."""

    C: float = Field(default=DEFAULT_C, gt=0)
    """The SVM's loss weight: larger fits the examples more tightly."""

    negative_weight: float = Field(default=DEFAULT_NEGATIVE_WEIGHT, gt=0)
    """How many anonymous corpus documents one named negative counts for in the SVM's loss."""

    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """The core's other ranking options, as :meth:`exemplar_svm.ExemplarIndex.search` takes
    them: ``prior``, ``prior_direction``, ``feedback``, ``feedback_weight``,
    ``hard_negatives``, ``hard_negative_weight``, ``hybrid_weight``, ``rocchio``. Unknown names
    and bad values are refused when the retriever is built."""

    _embedder: Embedder | None = PrivateAttr(default=None)
    _embedder_of: Any = PrivateAttr(default=None)

    @field_validator("search_kwargs")
    @classmethod
    def _check_search_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_search_options(value, own=("mode", "C", "negative_weight"))

    @model_validator(mode="after")
    def _check_corpus(self) -> Self:
        missing = [item for item in self.index.ids if item not in self.documents]
        unknown = [item for item in self.documents if item not in self.index]
        if missing or unknown:
            raise ValueError(
                "documents and index must hold the same ids: "
                f"{len(missing)} index ids have no document (e.g. {missing[:3]}), "
                f"{len(unknown)} documents are not in the index (e.g. {unknown[:3]})"
            )
        for key, doc in self.documents.items():
            if doc.id is None:
                self.documents[key] = doc.model_copy(update={"id": key})
            elif doc.id != key:
                raise ValueError(f"the document stored under id {key!r} has id {doc.id!r}")
        self._get_embedder()  # fail now on an embedding model that cannot be used
        return self

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        embedding: Any,
        metadatas: Iterable[dict[str, Any]] | None = None,
        ids: Iterable[str | None] | None = None,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Embed ``texts`` in batches with ``embedding`` and index them.

        Parameters
        ----------
        texts : iterable of str
        embedding : Embeddings, Embedder or str
            See the class; documents go to its ``embed_documents``.
        metadatas : iterable of dict, optional
            One metadata dict per text.
        ids : iterable of str or None, optional
            One id per text; a missing id (``None``) becomes a fresh UUID4.
        **kwargs
            Fields of the retriever: ``k``, ``mode``, ``C``, ``negative_weight``, ...
        """
        return cls.from_documents(_to_documents(texts, metadatas), embedding, ids=ids, **kwargs)

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        embedding: Any,
        *,
        ids: Iterable[str | None] | None = None,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Embed the documents' ``page_content`` in batches with ``embedding`` and index them.

        A document keeps its ``id``; one without gets the matching entry of ``ids`` or else a
        fresh UUID4. Duplicate ids raise ``ValueError``. The documents are copied, never changed.
        Other arguments as in :meth:`from_texts`.
        """
        _check_kwargs(cls, kwargs)
        docs = _with_ids(documents, ids, {})
        if not docs:
            raise ValueError("no documents to index; pass at least one")
        embedding = _resolved(embedding)
        vectors = as_embedder(embedding).embed_documents([doc.page_content for doc in docs])
        return cls._build(docs, vectors, embedding, kwargs)

    @classmethod
    def from_embeddings(
        cls,
        text_embeddings: Iterable[tuple[str, ArrayLike]],
        embedding: Any,
        metadatas: Iterable[dict[str, Any]] | None = None,
        ids: Iterable[str | None] | None = None,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Index texts whose vectors you already have; nothing is embedded now.

        Parameters
        ----------
        text_embeddings : iterable of (str, vector)
            Pairs of a text and its embedding, as in LangChain's ``FAISS.from_embeddings``.
        embedding : Embeddings, Embedder or str
            The model that made the vectors; it embeds queries and later documents.
        metadatas, ids, **kwargs
            As in :meth:`from_texts`.
        """
        _check_kwargs(cls, kwargs)
        pairs = list(text_embeddings)
        docs = _with_ids(_to_documents([text for text, _ in pairs], metadatas), ids, {})
        if not docs:
            raise ValueError("no texts to index; pass at least one (text, vector) pair")
        vectors: list[Any] = [vector for _, vector in pairs]
        return cls._build(docs, vectors, _resolved(embedding), kwargs)

    @classmethod
    def from_index(
        cls,
        index: ExemplarIndex,
        documents: Sequence[Document] | Mapping[str, Document],
        embedding: Any,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Wrap an existing index, e.g. one from :meth:`ExemplarIndex.load`.

        Parameters
        ----------
        index : ExemplarIndex
            Used as is (not copied): documents added later go into it.
        documents : sequence of Document or mapping of id to Document
            A sequence is in the order of ``index.ids`` (a document with an ``id`` must have
            the id of its row); a mapping is keyed by index id.
        embedding : Embeddings, Embedder or str
            The model that made the vectors.
        **kwargs
            As in :meth:`from_texts`.
        """
        _check_kwargs(cls, kwargs)
        if isinstance(documents, Mapping):
            pairs = list(documents.items())
        else:
            docs = list(documents)
            if len(docs) != len(index):
                raise ValueError(f"got {len(docs)} documents for an index of {len(index)}")
            pairs = list(zip(index.ids, docs, strict=True))
        store = {key: doc.model_copy(update={"metadata": dict(doc.metadata)}) for key, doc in pairs}
        return cls(embedding=_resolved(embedding), index=index, documents=store, **kwargs)

    @classmethod
    def _build(
        cls, docs: list[Document], vectors: ArrayLike, embedding: Any, kwargs: dict[str, Any]
    ) -> ExemplarSVMRetriever:
        ids = [str(doc.id) for doc in docs]
        index = ExemplarIndex(vectors, ids=ids)
        return cls(
            embedding=embedding, index=index, documents=dict(zip(ids, docs, strict=True)), **kwargs
        )

    # -- growing -----------------------------------------------------------------------------

    def add_documents(
        self, documents: Iterable[Document], *, ids: Iterable[str | None] | None = None
    ) -> list[str]:
        """Embed and add documents; returns their ids.

        Only the new documents are embedded (in batches). Ids follow :meth:`from_documents`;
        an id already in the retriever raises ``ValueError`` and nothing is added.
        """
        docs = _with_ids(documents, ids, self.documents)
        if not docs:
            return []
        vectors = self._get_embedder().embed_documents([doc.page_content for doc in docs])
        new_ids = [str(doc.id) for doc in docs]
        # Stored before they become searchable, so a concurrent search finds every hit's document.
        self.documents.update(zip(new_ids, docs, strict=True))
        try:
            self.index.add(vectors, new_ids)
        except BaseException:
            for item in new_ids:
                del self.documents[item]
            raise
        return new_ids

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Iterable[dict[str, Any]] | None = None,
        *,
        ids: Iterable[str | None] | None = None,
    ) -> list[str]:
        """Embed and add texts, with optional metadata and ids; returns their ids."""
        return self.add_documents(_to_documents(texts, metadatas), ids=ids)

    # -- retrieval ---------------------------------------------------------------------------

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        positives: Examples = None,
        negatives: Examples = None,
        **options: Any,
    ) -> list[Document]:
        embedder = self._get_embedder()
        query_vector = embedder.embed_query(query)
        pos, neg = self._split(positives), self._split(negatives)
        texts = pos[1] + neg[1]
        text_vectors = embedder.embed_documents(texts) if texts else None
        hits = self.index.search(
            query_vector,
            **self._options(pos, neg, text_vectors, k, options),
        )
        return self._to_documents(hits)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        positives: Examples = None,
        negatives: Examples = None,
        **options: Any,
    ) -> list[Document]:
        embedder = self._get_embedder()
        query_vector = await embedder.aembed_query(query)
        pos, neg = self._split(positives), self._split(negatives)
        texts = pos[1] + neg[1]
        text_vectors = await embedder.aembed_documents(texts) if texts else None
        arguments = self._options(pos, neg, text_vectors, k, options)
        hits = await asyncio.to_thread(self.index.search, query_vector, **arguments)
        return self._to_documents(hits)

    # -- helpers -----------------------------------------------------------------------------

    def _get_embedder(self) -> Embedder:
        """The :class:`Embedder` for ``embedding``, rebuilt only if the field was reassigned."""
        if self._embedder is None or self._embedder_of is not self.embedding:
            self._embedder = as_embedder(self.embedding)
            self._embedder_of = self.embedding
        return self._embedder

    def _split(self, examples: Examples) -> tuple[list[Any], list[str]]:
        """Examples as (corpus ids and vectors for the core, texts still to embed)."""
        if examples is None:
            return [], []
        if isinstance(examples, (str, Document)) or _is_vector(examples):
            items: list[Any] = [examples]
        else:
            items = list(examples)  # type: ignore[arg-type]
        known: list[Any] = []
        texts: list[str] = []
        for item in items:
            if isinstance(item, Document):
                if item.id is not None and item.id in self.index:
                    known.append(item.id)
                else:
                    texts.append(item.page_content)
            elif isinstance(item, str):
                if item in self.index:
                    known.append(item)
                else:
                    texts.append(item)
            else:
                known.append(item)
        return known, texts

    def _options(
        self,
        pos: tuple[list[Any], list[str]],
        neg: tuple[list[Any], list[str]],
        text_vectors: NDArray[np.float32] | None,
        k: int | None,
        overrides: dict[str, Any],
    ) -> dict[str, Any]:
        """Keyword arguments of :meth:`ExemplarIndex.search` for one call."""
        unknown = sorted(set(overrides) - set(SEARCH_OPTIONS))
        if unknown:
            raise TypeError(
                f"unexpected argument(s) {', '.join(map(repr, unknown))} for invoke; expected "
                f"k, positives, negatives or a search option: {', '.join(SEARCH_OPTIONS)}"
            )
        split = len(pos[1])
        pos_vectors = None if text_vectors is None else text_vectors[:split]
        neg_vectors = None if text_vectors is None else text_vectors[split:]
        options = {"mode": self.mode, "C": self.C, "negative_weight": self.negative_weight}
        options |= self.search_kwargs
        options |= {name: value for name, value in overrides.items() if value is not None}
        return {
            "k": self.k if k is None else k,
            **options,
            "positives": self._examples(pos[0], pos_vectors, "positives"),
            "negatives": self._examples(neg[0], neg_vectors, "negatives"),
        }

    def _examples(
        self, known: list[Any], text_vectors: NDArray[np.float32] | None, name: str
    ) -> list[Any] | None:
        """Ids, vectors and the embedded texts, as :meth:`ExemplarIndex.search` takes them."""
        items = list(known)
        if text_vectors is not None and len(text_vectors):
            items.append(text_vectors)
        return items or None

    def _to_documents(self, hits: list[Hit]) -> list[Document]:
        out = []
        for hit in hits:
            doc = self.documents[hit.id]
            metadata = {**doc.metadata, "score": hit.score, "similarity": hit.similarity}
            out.append(doc.model_copy(update={"metadata": metadata}))
        return out


def _resolved(embedding: Any) -> Any:
    """Load a model named by string once, so the retriever does not load it again."""
    if embedding is None or isinstance(embedding, str):
        return as_embedder(embedding)
    return embedding


def _check_kwargs(cls: type[ExemplarSVMRetriever], kwargs: dict[str, Any]) -> None:
    """Refuse unknown or clashing arguments before anything is embedded."""
    allowed = set(cls.model_fields) - _BUILT
    wrong = sorted(set(kwargs) - allowed)
    if wrong:
        raise TypeError(
            f"unexpected argument(s) {', '.join(map(repr, wrong))} for {cls.__name__}; "
            f"expected some of {', '.join(sorted(allowed))}"
        )


def _to_documents(
    texts: Iterable[str], metadatas: Iterable[dict[str, Any]] | None
) -> list[Document]:
    text_list = list(texts)
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    meta_list = [{} for _ in text_list] if metadatas is None else list(metadatas)
    if len(meta_list) != len(text_list):
        raise ValueError(f"got {len(meta_list)} metadatas for {len(text_list)} texts")
    for position, text in enumerate(text_list):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is a {type(text).__name__}, not a string")
    return [
        Document(page_content=text, metadata=dict(metadata or {}))
        for text, metadata in zip(text_list, meta_list, strict=True)
    ]


def _with_ids(
    documents: Iterable[Document],
    ids: Iterable[str | None] | None,
    taken: Mapping[str, Document],
) -> list[Document]:
    """Copies of the documents, each with a unique id not in ``taken``."""
    docs = list(documents)
    for position, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(f"documents[{position}] is a {type(doc).__name__}, not a Document")
    id_list = [None] * len(docs) if ids is None else list(ids)
    if len(id_list) != len(docs):
        raise ValueError(f"got {len(id_list)} ids for {len(docs)} documents")
    out: list[Document] = []
    seen: set[str] = set()
    for position, (doc, given) in enumerate(zip(docs, id_list, strict=True)):
        item = given if given is not None else doc.id
        if item is None:
            item = str(uuid.uuid4())
        if not isinstance(item, str) or not item:
            raise ValueError(f"ids[{position}] is {item!r}; ids must be non-empty strings")
        if item in seen or item in taken:
            raise ValueError(f"duplicate id {item!r}: every document needs its own id")
        seen.add(item)
        out.append(doc.model_copy(update={"id": item, "metadata": dict(doc.metadata)}))
    return out


def _is_vector(value: object) -> bool:
    """True for one vector or a matrix of numbers (not a list of examples)."""
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, (str, bytes, Document)) or not isinstance(value, Sequence):
        return False
    return len(value) > 0 and all(
        isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in value
    )
