"""The LangChain retriever: :class:`ExemplarSVMRetriever`, over an :class:`ExemplarIndex` or,
through a :class:`~exemplar_svm.StoreIndex`, over a LangChain ``VectorStore``.

It only translates between LangChain and the shared core: it embeds texts with the embedding
model it was given, hands vectors and ids to :meth:`ExemplarIndex.search` (or
:meth:`StoreIndex.search`), and turns the hits back into ``Document`` objects. The vector
stores' specifics are in :mod:`exemplar_svm.langchain._stores`.
"""

# ruff: noqa: E402 - langchain_core is imported after require() names the extra it comes from.

from __future__ import annotations

from exemplar_svm._optional import require

require("langchain_core", extra="langchain")

import asyncio
import uuid
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any, Union

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from numpy.typing import ArrayLike, NDArray
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from exemplar_svm._checks import as_id_list, check_k
from exemplar_svm._locks import WriteLock
from exemplar_svm.calibration import Calibration, embed_queries
from exemplar_svm.embedders import Embedder, as_embedder
from exemplar_svm.index import (
    SEARCH_OPTIONS,
    ExemplarIndex,
    Hit,
    Mode,
    check_search_options,
)
from exemplar_svm.langchain._stores import (
    documents_by_id,
    metadata_predicate,
    store_filter,
    store_from_vectorstore,
)
from exemplar_svm.store_index import (
    DEFAULT_BACKGROUND,
    DEFAULT_CANDIDATES,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_SKIP_WHEN,
    DEFAULT_STORE_TIMEOUT,
    SkipWhen,
    StoreIndex,
)
from exemplar_svm.stores import VectorStore, ask

__all__ = ["ExemplarSVMRetriever"]

#: One extra example for a search: a document id, a text, a ``Document`` or a vector.
Example = Union[str, Document, ArrayLike]  # noqa: UP007
#: ``positives`` / ``negatives`` of a call: one example, a sequence of them, or ``None``.
Examples = Union[Example, Sequence[Example], None]  # noqa: UP007

# Constructor arguments that the ``from_*`` class methods fill in themselves.
_BUILT = frozenset({"index", "documents", "embedding", "vectorstore"})


class _Required:
    """The default of ``embedding`` in ``from_texts`` / ``from_documents``, which need it (or
    ``embeddings=``); ``None`` there is a model too, the local default."""

    def __repr__(self) -> str:
        return "<required>"


_UNSET: Any = _Required()
_NO_THRESHOLD = (
    "relevancy_threshold needs the in-memory ExemplarIndex (from_texts, from_documents, "
    "from_embeddings or from_index): over a vector store the lowest score of the whole "
    "collection, which the threshold is normalised by, is not known"
)


class ExemplarSVMRetriever(BaseRetriever):
    """LangChain retriever that ranks documents with a per-query exemplar SVM.

    Build it with :meth:`from_texts` or :meth:`from_documents` (documents are embedded in
    batches with ``embed_documents``), :meth:`from_embeddings` (vectors you already have) or
    :meth:`from_index` (an existing, e.g. loaded, :class:`~exemplar_svm.ExemplarIndex`). Grow it
    with :meth:`add_documents` / :meth:`add_texts`; documents already indexed are never embedded
    again.

    Over a vector database, build it with :meth:`from_vectorstore`: the documents stay in the
    LangChain ``VectorStore`` (nothing is copied out or embedded again), a
    :class:`~exemplar_svm.StoreIndex` trains the SVM on a cached background sample plus the
    documents near the query and ranks the whole store by the store's own search, and the
    returned documents come from the store's ``get_by_ids``.

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
      ``"hybrid"``, the whitened mean difference's score for ``"lda"``); see
      :class:`exemplar_svm.Hit`;
    - ``"similarity"`` (float): the cosine similarity between the document and the query,
      whatever the mode.

    Existing metadata entries with those names are overwritten in the returned copies only.
    With a ``relevancy_threshold`` (the field, or ``invoke(query, relevancy_threshold=...)``),
    each document also carries ``"relevancy"`` (float): its min-max normalised score, the
    value the threshold is compared with (see the field).

    Coming from langchain-community's ``SVMRetriever``: ``from_texts(texts, embeddings, k=...)``
    and ``relevancy_threshold`` work as they did there (``embeddings=`` is accepted as another
    name of ``embedding``); pass ``mode="svm", C=0.1, search_kwargs={"feedback": 0}`` for its
    exact ranking (see the migration guide, ``docs/migrating.md``).

    Parameters
    ----------
    embedding : Embeddings, Embedder or str
        Embeds queries, example texts and new documents: any LangChain ``Embeddings``, an
        exemplar_svm :class:`~exemplar_svm.Embedder` (e.g.
        :class:`~exemplar_svm.SentenceTransformerEmbedder`) or a sentence-transformers model
        name; anything :func:`exemplar_svm.as_embedder` accepts. It must be the model that
        embedded the corpus.
    index : ExemplarIndex or StoreIndex
        One vector per document, in memory; or a :class:`~exemplar_svm.StoreIndex` over the
        vector database behind ``vectorstore``.
    documents : dict of str to Document
        The documents by id, with exactly the ids of an ``ExemplarIndex``; empty for a
        ``StoreIndex``.
    vectorstore : VectorStore, optional
        With a ``StoreIndex`` only: the LangChain vector store the documents are read from.
    k : int, default=4
        How many documents a call returns.
    mode : {"auto", "prf", "svm", "knn", "hybrid", "lda"}, optional
        How the core ranks; see :meth:`exemplar_svm.ExemplarIndex.search`.
    C : float, optional
        The SVM's loss weight.
    negative_weight : float, optional
        How many anonymous corpus documents one named negative counts for.
    relevancy_threshold : float, optional
        Keep, of the ``k`` best documents, only those whose min-max normalised score is at
        least this, in [0, 1]; see the field.

    Notes
    -----
    ``mode``, ``C``, ``negative_weight`` and the options of ``search_kwargs`` left at ``None``
    take the index's settings (those :meth:`calibrate` chose for this corpus, saved with the
    index), else the library's defaults.

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

    index: ExemplarIndex | StoreIndex
    """The shared core, searched for every call: an in-memory ``ExemplarIndex`` (one vector per
    document), or a ``StoreIndex`` over the vector database behind ``vectorstore``."""

    documents: dict[str, Document] = Field(default_factory=dict, repr=False)
    """The corpus documents by id: exactly the ids of an ``ExemplarIndex``; empty for a
    ``StoreIndex``, whose documents stay in ``vectorstore``."""

    vectorstore: Any = Field(default=None, repr=False)
    """With a ``StoreIndex`` only: the LangChain ``VectorStore`` that holds the documents; the
    returned documents come from its ``get_by_ids`` and new ones go to its ``add_documents``."""

    k: int = Field(default=4, ge=1)
    """How many documents to return; ``invoke(query, k=...)`` overrides it for one call. A
    whole number (``True`` is refused, not taken as 1)."""

    mode: Mode | None = None
    """How to rank: ``"auto"``, ``"prf"``, ``"svm"`` (the exemplar SVM), ``"knn"`` (cosine
    similarity), ``"hybrid"`` or ``"lda"`` (see :meth:`exemplar_svm.ExemplarIndex.search`).
    ``None``: the index's calibrated setting (see :meth:`calibrate`), else the library's
    default (``"auto"``)."""

    C: float | None = Field(default=None, gt=0)
    """The SVM's loss weight, in (0, 1e6]: larger fits the examples more tightly. ``None``: the
    index's calibrated setting, else the library's default."""

    negative_weight: float | None = Field(default=None, gt=0)
    """How many anonymous corpus documents one named negative counts for in the SVM's loss, in
    (0, 1e6]. ``None``: the index's calibrated setting, else the library's default."""

    relevancy_threshold: float | None = None
    """Of the ``k`` best documents, return only those whose *relevancy* is at least this; in
    [0, 1]. ``None`` (the default): no threshold. ``invoke(query, relevancy_threshold=...)``
    overrides it for one call.

    The relevancy of a document is its score (the mode's, ``metadata["score"]``) min-max
    normalised over every document the call ranks (the whole corpus, less the documents named
    as examples): ``(score - lowest) / (highest - lowest)``, so 1 is the call's best document
    and 0 its worst (all 1 if every score is equal). It is relative to the corpus, not a
    calibrated probability: 0.5 means half-way between the worst and the best document, for
    this query, in this mode. Returned documents carry it as ``metadata["relevancy"]``.

    langchain-community's ``SVMRetriever`` normalised its SVM's decision values the same way
    but over the query's own value too, which is normally the highest: there the best document
    is below 1, so with its ranking (``mode="svm", C=0.1, search_kwargs={"feedback": 0}``) a
    threshold keeps at least the documents it kept there, and often more. Finding the lowest
    score takes a ranking of the whole corpus (one extra sort), so this needs the in-memory
    ``ExemplarIndex``: it is refused over a vector store (:meth:`from_vectorstore`)."""

    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """The core's other ranking options, as :meth:`exemplar_svm.ExemplarIndex.search` takes
    them: ``prior``, ``prior_direction``, ``feedback``, ``feedback_weight``,
    ``hard_negatives``, ``hard_negative_weight``, ``hybrid_weight``, ``rocchio``. Unknown names
    and bad values are refused when the retriever is built.

    ``"filter"`` restricts every call's results to the documents it matches (``invoke(query,
    filter=...)`` overrides it for one call). In memory: a callable on a document's metadata
    or a dict of equalities (``{"tenant": "a"}``). Over a vector store, the store's own
    syntax, applied by the store to every query of the search: a ``where`` dict for
    ``Chroma``, a boolean expression (or a dict of equalities) for ``Milvus``, a ``Filter``
    (or a dict of equalities on the metadata) for ``QdrantVectorStore``, a dict or a callable
    on metadata for ``FAISS`` and a callable on the ``Document`` (or a dict of equalities) for
    ``InMemoryVectorStore``. A filter a store cannot apply raises an error; no result ever
    comes from outside the filter."""

    _embedder: Embedder | None = PrivateAttr(default=None)
    _embedder_of: Any = PrivateAttr(default=None)
    # Serialises add_documents; a copy of the retriever gets its own (see WriteLock).
    _write_lock: WriteLock = PrivateAttr(default_factory=WriteLock)

    @field_validator("search_kwargs")
    @classmethod
    def _check_search_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        # "filter" is LangChain's name for a metadata filter, not a ranking option of the core.
        options = {name: item for name, item in value.items() if name != "filter"}
        checked = check_search_options(options, own=("mode", "C", "negative_weight"))
        if value.get("filter") is not None:
            checked["filter"] = value["filter"]
        return checked

    # Checked before pydantic converts them: it would take True as 1 and "0.5" as a number,
    # and C=inf would fail only at the first query.
    @field_validator("k", mode="before")
    @classmethod
    def _check_k(cls, value: Any) -> int:
        return check_k(value)

    @field_validator("relevancy_threshold", mode="before")
    @classmethod
    def _check_threshold(cls, value: Any) -> float | None:
        return _check_threshold(value)

    @field_validator("C", "negative_weight", mode="before")
    @classmethod
    def _check_option(cls, value: Any, info: ValidationInfo) -> float | None:
        name = str(info.field_name)
        return None if value is None else float(check_search_options({name: value})[name])

    @model_validator(mode="after")
    def _check_corpus(self) -> Self:
        if isinstance(self.index, StoreIndex):
            if self.vectorstore is None:
                raise ValueError(
                    "a StoreIndex needs the LangChain vectorstore its documents are read from: "
                    "use ExemplarSVMRetriever.from_vectorstore(vectorstore, ...)"
                )
            if self.documents:
                raise ValueError(
                    "documents must be empty with a StoreIndex: they are read from vectorstore"
                )
            if self.relevancy_threshold is not None:
                raise ValueError(_NO_THRESHOLD)
            self._get_embedder()
            return self
        if self.vectorstore is not None:
            raise ValueError(
                "vectorstore goes with a StoreIndex only; use "
                "ExemplarSVMRetriever.from_vectorstore(vectorstore, ...)"
            )
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
        embedding: Any = _UNSET,
        metadatas: Iterable[dict[str, Any]] | None = None,
        ids: Iterable[str | None] | None = None,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Embed ``texts`` in batches with ``embedding`` and index them.

        ``from_texts(texts, embeddings, k=...)`` is also langchain-community's
        ``SVMRetriever.from_texts`` call: ``embeddings=`` is accepted as another name of
        ``embedding``, and ``relevancy_threshold`` is a field here too.

        Parameters
        ----------
        texts : iterable of str
        embedding : Embeddings, Embedder or str
            See the class; documents go to its ``embed_documents`` (``SVMRetriever`` embedded
            each with ``embed_query``; see the migration guide where the two differ).
        metadatas : iterable of dict, optional
            One metadata dict per text.
        ids : iterable of str or None, optional
            One id per text; a missing id (``None``) becomes a fresh UUID4.
        **kwargs
            Fields of the retriever: ``k``, ``mode``, ``C``, ``negative_weight``,
            ``relevancy_threshold``, ...
        """
        embedding = _embedding_argument(embedding, kwargs, "from_texts")
        return cls.from_documents(_to_documents(texts, metadatas), embedding, ids=ids, **kwargs)

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        embedding: Any = _UNSET,
        *,
        ids: Iterable[str | None] | None = None,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Embed the documents' ``page_content`` in batches with ``embedding`` and index them.

        A document keeps its ``id``; one without gets the matching entry of ``ids`` or else a
        fresh UUID4. Duplicate ids raise ``ValueError``. The documents are copied, never changed.
        Other arguments as in :meth:`from_texts` (``embeddings=`` too).
        """
        embedding = _embedding_argument(embedding, kwargs, "from_documents")
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
    def from_vectorstore(
        cls,
        vectorstore: Any,
        embedding: Any = None,
        *,
        store: VectorStore | None = None,
        background: int = DEFAULT_BACKGROUND,
        candidates: int = DEFAULT_CANDIDATES,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
        seed: int = 0,
        skip_when: SkipWhen = DEFAULT_SKIP_WHEN,
        timeout: float | None = DEFAULT_STORE_TIMEOUT,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Search a LangChain ``VectorStore`` in place: nothing is copied out or re-embedded.

        The SVM is trained per query by a :class:`~exemplar_svm.StoreIndex` on a cached random
        sample of the store (``background`` documents, drawn at the first call) plus the
        documents nearest the query and the SVM's margin, fetched with their stored vectors;
        the store's own similarity search with the SVM's weight vector ranks the collection.
        The returned documents are read with the store's ``get_by_ids``. With ``background``
        and ``candidates`` at least the store's size, the ranking equals the in-memory one.

        Parameters
        ----------
        vectorstore : VectorStore
            The LangChain vector store. Translated automatically (see
            :func:`store_from_vectorstore`): ``langchain_chroma.Chroma``,
            ``langchain_milvus.Milvus``, ``langchain_community`` ``FAISS``,
            ``langchain_qdrant.QdrantVectorStore``, ``langchain_postgres.PGVector`` and
            ``langchain_core`` ``InMemoryVectorStore``. For any other store, pass ``store``.
        embedding : Embeddings, Embedder or str, optional
            Embeds queries and example texts; must be the model that embedded the store.
            Defaults to ``vectorstore.embeddings``.
        store : exemplar_svm.stores.VectorStore, optional
            The core's view of the same collection (ids, vectors, metric), for a vector store
            that is not translated automatically: implement the protocol
            :class:`exemplar_svm.stores.VectorStore` (str ids equal to the LangChain document
            ids) and pass it here.
        background, candidates, max_candidates, seed, skip_when, timeout
            Of the :class:`~exemplar_svm.StoreIndex`; ``timeout`` (seconds per request,
            ``None``: no limit) also bounds the ``get_by_ids`` calls that read the documents.
            A store that fails or does not answer in time raises
            :class:`exemplar_svm.stores.StoreError`.
        **kwargs
            Fields of the retriever: ``k``, ``mode``, ``C``, ``negative_weight``,
            ``search_kwargs``.

        Raises
        ------
        ValueError
            For a vector store that is not translated automatically and no ``store``; for a
            store whose metric would not rank by the SVM, e.g. L2 over vectors that are
            not unit-normalised (at the first call, when the store's vectors are first read).
        """
        _check_kwargs(cls, kwargs)
        core = store_from_vectorstore(vectorstore) if store is None else store
        if embedding is None:
            embedding = getattr(vectorstore, "embeddings", None)
            if embedding is None:
                raise ValueError(
                    f"the {type(vectorstore).__name__} has no embedding model "
                    "(vectorstore.embeddings is None): pass embedding=, the model that "
                    "embedded the store"
                )
        index = StoreIndex(
            core,
            background=background,
            candidates=candidates,
            max_candidates=max_candidates,
            seed=seed,
            skip_when=skip_when,
            timeout=timeout,
        )
        return cls(embedding=_resolved(embedding), index=index, vectorstore=vectorstore, **kwargs)

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

        Safe to call from several threads at once and while others search: the adds are applied
        one after the other (none is lost), and a search returns a new document fully or not at
        all. Of two concurrent adds of one id, one succeeds and the other raises.

        Over a vector store (:meth:`from_vectorstore`) the documents go to the store's own
        ``add_documents``, which embeds them with the store's model and follows the store's
        rules for ids; they are searchable at once. The cached background sample is not drawn
        again: call ``retriever.index.refresh_background()`` after large changes.
        """
        if isinstance(self.index, StoreIndex):
            docs = list(documents)
            if not docs:
                return []
            extra = {} if ids is None else {"ids": list(ids)}
            return list(self.vectorstore.add_documents(docs, **extra))
        index = self.index
        # Checked against the index, whose ids are exactly the searchable documents, before
        # anything is embedded; checked again below, as another thread may add them meanwhile.
        docs = _with_ids(documents, ids, index)
        if not docs:
            return []
        vectors = self._get_embedder().embed_documents([doc.page_content for doc in docs])
        new_ids = [str(doc.id) for doc in docs]
        with self._write_lock:
            taken = next((item for item in new_ids if item in index), None)
            if taken is not None:
                raise ValueError(f"duplicate id {taken!r}: every document needs its own id")
            old = self.documents
            # A new map, published before the index: a search ranks on an index snapshot and
            # then reads the map, so every document it can rank is in the map it reads.
            self.documents = {**old, **dict(zip(new_ids, docs, strict=True))}
            try:
                index.add(vectors, new_ids)
            except BaseException:
                self.documents = old
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

    # -- calibration -------------------------------------------------------------------------

    def calibrate(
        self,
        queries: list[str] | None = None,
        relevant: list[list[str]] | None = None,
        **options: Any,
    ) -> Calibration:
        """Choose the ranking settings for this corpus; see :meth:`ExemplarIndex.calibrate`.

        With ``queries`` (texts, embedded with the retriever's model as queries) and
        ``relevant`` (per query, the ids of its relevant documents, or ``{id: gain}``), the
        labelled queries decide. Without them, synthetic queries built from the documents'
        ``page_content`` (a ``metadata["title"]`` string, else the first sentence) do. The
        choice becomes the index's settings, used wherever ``mode``, ``C``,
        ``negative_weight`` and ``search_kwargs`` leave an option at ``None``; it is saved
        with the index (``retriever.index.save(path)``).

        Parameters
        ----------
        queries : list of str, optional
            Labelled query texts.
        relevant : list of list of str, optional
            Their relevant document ids, one list per query.
        **options
            Of :meth:`ExemplarIndex.calibrate`: ``candidates``, ``metric``, ``max_queries``,
            ``seed``, ``titles``, ``exclude``.

        Raises
        ------
        ValueError
            Over a vector store (:meth:`from_vectorstore`): calibration needs the in-memory
            :class:`~exemplar_svm.ExemplarIndex`.
        """
        if isinstance(self.index, StoreIndex):
            raise ValueError(
                "calibrate needs the in-memory ExemplarIndex (from_texts, from_documents, "
                "from_embeddings or from_index); over a vector store, calibrate an "
                "ExemplarIndex of the same documents and pass its settings as search_kwargs"
            )
        if queries is None and relevant is None:
            documents = [self.documents[item] for item in self.index.ids]
            options.setdefault("titles", [_title(doc.metadata) for doc in documents])
            return self.index.calibrate(
                texts=[doc.page_content for doc in documents],
                embedder=self._get_embedder(),
                **options,
            )
        if queries is None or relevant is None:
            raise ValueError("pass both queries and relevant (or neither, for synthetic queries)")
        if isinstance(queries, str):
            raise TypeError("queries must be a list of query texts, not one string")
        embedder = self._get_embedder()
        vectors = embed_queries(embedder, list(queries)) if queries else np.empty((0, 1))
        return self.index.calibrate(vectors, relevant, **options)

    # -- retrieval ---------------------------------------------------------------------------

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        positives: Examples = None,
        negatives: Examples = None,
        filter: Any = None,
        **options: Any,
    ) -> list[Document]:
        threshold = self._threshold(options)
        embedder = self._get_embedder()
        query_vector = embedder.embed_query(query)
        pos, neg = self._split_examples(positives, negatives)
        texts = pos[1] + neg[1]
        text_vectors = embedder.embed_documents(texts) if texts else None
        arguments = self._options(pos, neg, text_vectors, k, options)
        return self._search(query_vector, arguments, threshold, filter)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        positives: Examples = None,
        negatives: Examples = None,
        filter: Any = None,
        **options: Any,
    ) -> list[Document]:
        threshold = self._threshold(options)
        embedder = self._get_embedder()
        query_vector = await embedder.aembed_query(query)
        if isinstance(self.index, StoreIndex):  # looking up example ids is a store round trip
            pos, neg = await asyncio.to_thread(self._split_examples, positives, negatives)
        else:
            pos, neg = self._split_examples(positives, negatives)
        texts = pos[1] + neg[1]
        text_vectors = await embedder.aembed_documents(texts) if texts else None
        arguments = self._options(pos, neg, text_vectors, k, options)
        # Training and (for a vector store) its queries and document reads run off the loop.
        return await asyncio.to_thread(self._search, query_vector, arguments, threshold, filter)

    # -- helpers -----------------------------------------------------------------------------

    def _get_embedder(self) -> Embedder:
        """The :class:`Embedder` for ``embedding``, rebuilt only if the field was reassigned."""
        if self._embedder is None or self._embedder_of is not self.embedding:
            self._embedder = as_embedder(self.embedding)
            self._embedder_of = self.embedding
        return self._embedder

    def _threshold(self, options: dict[str, Any]) -> float | None:
        """The call's relevancy threshold (taken out of ``options``), checked before any
        embedding."""
        threshold = self.relevancy_threshold
        if "relevancy_threshold" in options:
            threshold = _check_threshold(options.pop("relevancy_threshold"))
        if threshold is not None and isinstance(self.index, StoreIndex):
            raise ValueError(_NO_THRESHOLD)
        return threshold

    def _search(
        self,
        query_vector: NDArray[np.float32],
        arguments: dict[str, Any],
        threshold: float | None = None,
        filter: Any = None,
    ) -> list[Document]:
        chosen = arguments.pop("filter", None) if filter is None else filter
        arguments.pop("filter", None)
        if isinstance(self.index, StoreIndex):  # (_threshold refuses a threshold here)
            native = None if chosen is None else store_filter(self.vectorstore, chosen)
            extra = {} if native is None else {"filter": native}
            return self._to_documents(self.index.search(query_vector, **arguments, **extra))
        index: ExemplarIndex | None = self.index
        if chosen is not None:
            index = self._filtered_index(chosen)
            if index is None:
                return []
            for name in ("positives", "negatives"):
                if arguments[name] is not None:  # ids filtered out stand as their vectors
                    arguments[name] = [
                        self.index.vector(item)
                        if isinstance(item, str) and item not in index
                        else item
                        for item in arguments[name]
                    ]
        assert index is not None
        if threshold is None:
            return self._to_documents(index.search(query_vector, **arguments))
        # The lowest score needs every document ranked: the whole corpus, then the best k.
        k = arguments["k"]
        ranked = index.search(query_vector, **{**arguments, "k": max(k, len(index))})
        if not ranked:
            return []
        highest, lowest = ranked[0].score, ranked[-1].score
        span = highest - lowest
        kept = []
        for hit in ranked[:k]:
            relevancy = (hit.score - lowest) / span if span > 0 else 1.0
            if relevancy >= threshold:
                kept.append((hit, relevancy))
        docs = self._to_documents([hit for hit, _ in kept])
        for doc, (_, relevancy) in zip(docs, kept, strict=True):
            doc.metadata["relevancy"] = relevancy
        return docs

    def _filtered_index(self, filter: Any) -> ExemplarIndex | None:
        """The in-memory index restricted to the documents ``filter`` matches (None: none)."""
        index = self.index
        assert isinstance(index, ExemplarIndex)
        matches = metadata_predicate(filter)
        ids = index.ids
        rows = [row for row, item in enumerate(ids) if matches(self.documents[item].metadata)]
        if not rows:
            return None
        if len(rows) == len(ids):
            return index
        subset = ExemplarIndex(index.vectors[rows], [ids[row] for row in rows])
        subset.settings = index.settings  # the calibrated settings rank the subset too
        return subset

    def _split_examples(
        self, positives: Examples, negatives: Examples
    ) -> tuple[tuple[list[Any], list[str]], tuple[list[Any], list[str]]]:
        """Positives and negatives as (corpus ids and vectors, texts still to embed) each."""
        pos, neg = _items(positives), _items(negatives)
        names = [item for item in pos + neg if isinstance(item, str)]
        names += [item.id for item in pos + neg if isinstance(item, Document) and item.id]
        known = self._known_ids(names)
        return _split(pos, known), _split(neg, known)

    def _known_ids(self, names: list[str]) -> set[str]:
        """Which of ``names`` are ids of corpus documents (for a store: one lookup)."""
        if not names:
            return set()
        if isinstance(self.index, StoreIndex):
            return set(self._stored(list(dict.fromkeys(names)), "the named examples"))
        return {name for name in names if name in self.index}

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

    def _stored(self, ids: list[str], what: str) -> dict[str, Document]:
        """The vector store's documents of ``ids`` (a StoreIndex's timeout applies)."""
        assert isinstance(self.index, StoreIndex)
        return ask(
            self.vectorstore, what, self.index.timeout, documents_by_id, self.vectorstore, ids
        )

    def _to_documents(self, hits: list[Hit]) -> list[Document]:
        if isinstance(self.index, StoreIndex):
            stored = self._stored([hit.id for hit in hits], "the documents of the hits")
            missing = next((hit.id for hit in hits if hit.id not in stored), None)
            if missing is not None:
                raise LookupError(
                    f"the {type(self.vectorstore).__name__} returned no document for id "
                    f"{missing!r}, which its vectors have: was it deleted meanwhile, or does "
                    "its get_by_ids not set Document.id?"
                )
        else:
            stored = self.documents
        out = []
        for hit in hits:
            doc = stored[hit.id]
            metadata = {**doc.metadata, "score": hit.score, "similarity": hit.similarity}
            out.append(doc.model_copy(update={"id": hit.id, "metadata": metadata}))
        return out


def _check_threshold(value: Any) -> float | None:
    """A relevancy threshold: None, or a real number in [0, 1] (``True`` is not one)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"relevancy_threshold must be a number in [0, 1] or None, got {value!r}")
    threshold = float(value)
    if not 0.0 <= threshold <= 1.0:  # also refuses nan
        raise ValueError(
            f"relevancy_threshold must be in [0, 1], got {value!r}: it is compared with the "
            "min-max normalised score, 0 for the worst document and 1 for the best"
        )
    return threshold


def _embedding_argument(embedding: Any, kwargs: dict[str, Any], method: str) -> Any:
    """``embedding``, or ``embeddings=`` (langchain-community's ``SVMRetriever`` name), taken
    out of ``kwargs``; exactly one of them."""
    if "embeddings" in kwargs:
        alias = kwargs.pop("embeddings")
        if embedding is not _UNSET:
            raise TypeError(f"{method} got both embedding and embeddings: pass one")
        return alias
    if embedding is _UNSET:
        raise TypeError(f"{method} needs the embedding model: pass embedding")
    return embedding


def _title(metadata: Mapping[str, Any]) -> str | None:
    title = metadata.get("title")
    return title if isinstance(title, str) and title.strip() else None


def _items(examples: Examples) -> list[Any]:
    """One example or a sequence of them, as a list."""
    if examples is None:
        return []
    if isinstance(examples, (str, Document)) or _is_vector(examples):
        return [examples]
    return list(examples)  # type: ignore[arg-type]


def _split(items: list[Any], known: set[str]) -> tuple[list[Any], list[str]]:
    """Examples as (corpus ids and vectors for the core, texts still to embed)."""
    ids_and_vectors: list[Any] = []
    texts: list[str] = []
    for item in items:
        if isinstance(item, Document):
            if item.id is not None and item.id in known:
                ids_and_vectors.append(item.id)
            else:
                texts.append(item.page_content)
        elif isinstance(item, str):
            if item in known:
                ids_and_vectors.append(item)
            else:
                texts.append(item)
        else:
            ids_and_vectors.append(item)
    return ids_and_vectors, texts


def _resolved(embedding: Any) -> Any:
    """Load a model named by string once, so the retriever does not load it again."""
    if embedding is None or isinstance(embedding, str):
        return as_embedder(embedding)
    return embedding


def _check_kwargs(cls: type[ExemplarSVMRetriever], kwargs: dict[str, Any]) -> None:
    """Refuse unknown or clashing arguments, and bad ranking options, before anything is
    embedded."""
    allowed = set(cls.model_fields) - _BUILT
    wrong = sorted(set(kwargs) - allowed)
    if wrong:
        raise TypeError(
            f"unexpected argument(s) {', '.join(map(repr, wrong))} for {cls.__name__}; "
            f"expected some of {', '.join(sorted(allowed))}"
        )
    if kwargs.get("k") is not None:
        check_k(kwargs["k"])
    check_search_options({name: kwargs.get(name) for name in ("C", "negative_weight")})
    _check_threshold(kwargs.get("relevancy_threshold"))
    if isinstance(kwargs.get("search_kwargs"), Mapping):
        options = {key: value for key, value in kwargs["search_kwargs"].items() if key != "filter"}
        check_search_options(options, own=("mode", "C", "negative_weight"))


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
    taken: Container[str],
) -> list[Document]:
    """Copies of the documents, each with a unique id not in ``taken``."""
    docs = list(documents)
    for position, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(f"documents[{position}] is a {type(doc).__name__}, not a Document")
    id_list = [None] * len(docs) if ids is None else as_id_list(ids)
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
