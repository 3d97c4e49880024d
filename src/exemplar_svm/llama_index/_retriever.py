"""The LlamaIndex retriever: :class:`ExemplarSVMRetriever`, a ``BaseRetriever`` over an
ExemplarIndex or, through a :class:`~exemplar_svm.StoreIndex`, an external vector store.

It only translates between LlamaIndex and the core: nodes become rows (ids are node ids), a
``QueryBundle`` becomes query vectors, hits become ``NodeWithScore``. The vector stores'
specifics are in :mod:`exemplar_svm.llama_index._stores`.
"""

# ruff: noqa: E402 - the dependency check must run before llama_index is imported

from __future__ import annotations

from exemplar_svm._optional import require

require("llama_index.core", extra="llama-index")

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import llama_index.core.instrumentation as instrument
import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.constants import DATA_KEY, DEFAULT_SIMILARITY_TOP_K
from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.ingestion import run_transformations
from llama_index.core.schema import (
    BaseNode,
    IndexNode,
    MetadataMode,
    NodeWithScore,
    QueryBundle,
    QueryType,
    TransformComponent,
)
from llama_index.core.settings import Settings
from llama_index.core.storage.docstore.types import BaseDocumentStore
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc
from llama_index.core.vector_stores.simple import SimpleVectorStore
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.core.vector_stores.utils import build_metadata_filter_fn
from numpy.typing import ArrayLike, NDArray

from exemplar_svm import _index_files
from exemplar_svm._checks import check_k
from exemplar_svm._files import (
    content_file,
    decode_json,
    encode_json,
    file_entry,
    publish,
    read_checked,
    read_manifest,
    read_version,
    remove_files,
    tidy,
)
from exemplar_svm._locks import WriteLock
from exemplar_svm.calibration import Calibration, embed_queries
from exemplar_svm.embedders import Embedder, as_embedder
from exemplar_svm.index import (
    MODES,
    ExemplarIndex,
    Hit,
    Mode,
    check_search_options,
)
from exemplar_svm.llama_index._stores import (
    QueryStore,
    StoreFilter,
    is_external,
    store_filter,
    store_from_vector_store_index,
    stored_nodes,
)
from exemplar_svm.store_index import DEFAULT_STORE_TIMEOUT, SkipWhen, StoreIndex
from exemplar_svm.stores import VectorStore, ask

__all__ = [
    "PERSIST_FILENAME",
    "SIMILARITY_KEY",
    "ExemplarQueryBundle",
    "ExemplarSVMRetriever",
]

# Re-exported by llama_index.core.instrumentation without an explicit export marker.
dispatcher = instrument.get_dispatcher("exemplar_svm.llama_index")  # type: ignore[attr-defined]

#: Metadata key of the cosine similarity on every returned node (hidden from the LLM and the
#: embedding text).
SIMILARITY_KEY = "similarity"

#: The manifest of a persisted retriever: its parameters, and the files of its nodes and index
#: (see :meth:`ExemplarSVMRetriever.persist`).
PERSIST_FILENAME = "retriever.json"
# Format version 1 kept the nodes in the manifest and the index in this folder next to it.
INDEX_DIRNAME = "index"
FORMAT = "exemplar-svm-llama-index"
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)

#: One example: a node id, a node, a retrieved ``NodeWithScore``, or an embedding vector.
Example = Union[str, BaseNode, NodeWithScore, ArrayLike]  # noqa: UP007
#: Positives or negatives: one example or a sequence of them.
Examples = Union[Example, Sequence[Example], None]  # noqa: UP007
#: What ``embed_model`` accepts.
EmbedModel = Union[BaseEmbedding, Embedder, str, None]  # noqa: UP007

_Item = Union[str, NDArray[np.float32]]  # noqa: UP007


@dataclass
class ExemplarQueryBundle(QueryBundle):
    """A ``QueryBundle`` with per-query examples and filters for :class:`ExemplarSVMRetriever`.

    It goes anywhere a ``QueryBundle`` does (``retriever.retrieve(bundle)``,
    ``query_engine.query(bundle)``); other retrievers ignore the extra fields. The examples are
    added to the retriever's own; ``filters`` replaces the retriever's filters when given.
    """

    positives: Examples = None
    negatives: Examples = None
    filters: MetadataFilters | None = None


@dataclass(frozen=True)
class _Request:
    positives: list[_Item]
    negatives: list[_Item]
    filters: MetadataFilters | None


class ExemplarSVMRetriever(BaseRetriever):
    """Rank nodes per query with an exemplar SVM (or kNN, or both), as a LlamaIndex retriever.

    Build it with :meth:`from_defaults` (nodes, a docstore or a ``VectorStoreIndex``),
    :meth:`from_documents` or :meth:`from_persist_dir`; the constructor takes a ready
    :class:`~exemplar_svm.ExemplarIndex` whose ids are the node ids. Grow it with
    :meth:`insert_nodes` (thread-safe; only nodes without an embedding are embedded).

    Over a ``VectorStoreIndex`` whose vector store is external (Chroma, Milvus, FAISS, Qdrant, or
    any store given as ``store=``), :meth:`from_defaults` searches the store in place: a
    :class:`~exemplar_svm.StoreIndex` trains the SVM on a cached background sample plus the
    documents near the query, the collection is ranked by a ``VectorStoreQuery`` whose
    ``query_embedding`` is the SVM's weight vector, and the result nodes are read from the
    vector store (when it stores text) or the index's docstore. Nothing is copied or embedded
    again. ``filters`` (``MetadataFilters``) are translated for the store as its LlamaIndex
    integration translates them (see :func:`store_filter`) and applied to every store query of
    a search, so no result comes from outside them; the background sample stays the whole
    collection's. Such a retriever cannot be persisted (the data lives in the store: build it
    again with :meth:`from_defaults`).

    Every result is a copy of the stored node (the stored node is never changed) with
    ``score`` = the mode's ranking score (higher is better: the SVM's decision value for
    ``"svm"``, the cosine for ``"knn"``, a z-score mean for ``"hybrid"``, the whitened mean
    difference's score for ``"lda"``) and the cosine
    similarity to the query in ``metadata["similarity"]``. A ``SimilarityPostprocessor`` cutoff
    therefore applies to the mode's score.

    Parameters
    ----------
    index : ExemplarIndex or StoreIndex
        The node embeddings; its ids must be exactly the node ids. Or a ``StoreIndex`` over the
        vector store of ``vector_store_index``, whose ids are node ids.
    nodes : sequence of BaseNode
        The nodes, in any order (none with a ``StoreIndex``).
    embed_model : BaseEmbedding, Embedder, str or None
        Embeds queries; must be the model that embedded the nodes. A LlamaIndex
        ``BaseEmbedding``, an exemplar_svm ``Embedder`` or a sentence-transformers model name.
        ``None`` means ``Settings.embed_model`` if it has been set explicitly, else the local
        ``all-MiniLM-L6-v2`` (LlamaIndex's own default is OpenAI, which needs a key).
    similarity_top_k : int
        How many nodes to return.
    mode : {"auto", "prf", "svm", "knn", "hybrid", "lda"}, optional
    C, negative_weight : float, optional
        As for :meth:`exemplar_svm.ExemplarIndex.search`. ``None`` (and any option
        ``search_kwargs`` leaves out) takes the index's settings (those :meth:`calibrate`
        chose for this corpus, saved by :meth:`persist`), else the library's defaults.
    search_kwargs : mapping, optional
        The core's other ranking options (``prior``, ``prior_direction``, ``feedback``,
        ``feedback_weight``, ``hard_negatives``, ``hard_negative_weight``, ``hybrid_weight``,
        ``rocchio``), checked when the retriever is built and saved by :meth:`persist`.
        See :meth:`ExemplarIndex.search`.
    positives, negatives : node ids, nodes, NodeWithScore, vectors, or a list of them
        Examples used for every query (extra positives and counter-examples). Nodes named here
        are left out of the results. Per-query examples come from
        :meth:`retrieve_with_examples` or an :class:`ExemplarQueryBundle` and are added to these.
    filters : MetadataFilters, optional
        Only nodes whose metadata match are ranked, and the SVM is trained on those only
        (``build_metadata_filter_fn`` semantics: EQ, NE, GT, GTE, LT, LTE, IN, NIN, CONTAINS,
        TEXT_MATCH, ... with AND/OR/NOT). Filtering costs one pass over the metadata plus a
        copy of the matching rows per query.
    callback_manager : CallbackManager, optional
        ``Settings.callback_manager`` when ``None``.
    objects, object_map, verbose
        As for any ``BaseRetriever`` (recursive retrieval through ``IndexNode``).
    vector_store_index : VectorStoreIndex, optional
        With a ``StoreIndex`` only: the index whose vector store (or docstore) holds the nodes.
    """

    def __init__(
        self,
        index: ExemplarIndex | StoreIndex,
        nodes: Sequence[BaseNode] = (),
        embed_model: EmbedModel = None,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        mode: Mode | None = None,
        C: float | None = None,
        negative_weight: float | None = None,
        search_kwargs: Mapping[str, Any] | None = None,
        positives: Examples = None,
        negatives: Examples = None,
        filters: MetadataFilters | None = None,
        callback_manager: CallbackManager | None = None,
        objects: list[IndexNode] | None = None,
        object_map: dict[str, Any] | None = None,
        verbose: bool = False,
        vector_store_index: VectorStoreIndex | None = None,
    ) -> None:
        self._source: VectorStoreIndex | None = None
        if isinstance(index, StoreIndex):
            if not isinstance(vector_store_index, VectorStoreIndex):
                raise TypeError(
                    "a StoreIndex needs vector_store_index, the VectorStoreIndex that holds the "
                    "nodes; use ExemplarSVMRetriever.from_defaults(index=vector_store_index)"
                )
            if nodes:
                raise ValueError("pass no nodes with a StoreIndex: they stay in the store")
            self._nodes: dict[str, BaseNode] = {}
            self._source = vector_store_index
        elif isinstance(index, ExemplarIndex):
            if vector_store_index is not None:
                raise ValueError("vector_store_index goes with a StoreIndex only")
            self._nodes = _nodes_by_id(nodes, index)
        else:
            raise TypeError(
                f"index must be an exemplar_svm.ExemplarIndex, got {type(index).__name__}; "
                "use ExemplarSVMRetriever.from_defaults(index=...) for a VectorStoreIndex"
            )
        self._index = index
        self._write_lock = WriteLock()  # serialises insert_nodes and persist
        self._embed_model: Any = _default_embed_model(embed_model)
        self._embedder: Embedder = as_embedder(self._embed_model)
        self.similarity_top_k = check_k(similarity_top_k)
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode: Mode | None = mode
        own = check_search_options({"C": C, "negative_weight": negative_weight})
        self.C: float | None = own.get("C")
        self.negative_weight: float | None = own.get("negative_weight")
        self.search_kwargs = check_search_options(
            search_kwargs or {}, own=("mode", "C", "negative_weight")
        )
        self.positives: Examples = positives
        self.negatives: Examples = negatives
        self.filters = filters
        self._request(None)  # check the examples now rather than at the first query
        super().__init__(
            callback_manager=callback_manager or Settings.callback_manager,
            object_map=object_map,
            objects=objects,
            verbose=verbose,
        )

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_defaults(
        cls,
        index: VectorStoreIndex | None = None,
        nodes: Sequence[BaseNode] | None = None,
        docstore: BaseDocumentStore | None = None,
        embed_model: EmbedModel = None,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        mode: Mode | None = None,
        C: float | None = None,
        negative_weight: float | None = None,
        search_kwargs: Mapping[str, Any] | None = None,
        positives: Examples = None,
        negatives: Examples = None,
        filters: MetadataFilters | None = None,
        callback_manager: CallbackManager | None = None,
        objects: list[IndexNode] | None = None,
        object_map: dict[str, Any] | None = None,
        verbose: bool = False,
        store: VectorStore | None = None,
        background: int | None = None,
        candidates: int | None = None,
        max_candidates: int | None = None,
        seed: int | None = None,
        skip_when: SkipWhen | None = None,
        timeout: float | None = DEFAULT_STORE_TIMEOUT,
    ) -> ExemplarSVMRetriever:
        """Build a retriever from exactly one of ``index``, ``nodes`` or ``docstore``.

        - ``index``: a ``VectorStoreIndex``; nothing is re-embedded and ``embed_model``
          defaults to the index's own model. Over the default in-memory ``SimpleVectorStore``
          its stored embeddings are copied into an :class:`~exemplar_svm.ExemplarIndex`. Over
          an external vector store (``ChromaVectorStore``, ``MilvusVectorStore``,
          ``FaissVectorStore``, ``QdrantVectorStore``, ``PGVectorStore``; see
          :func:`store_from_vector_store_index`) the store is searched in place through a
          :class:`~exemplar_svm.StoreIndex`, with ``background``, ``candidates``,
          ``max_candidates``, ``seed`` and ``skip_when`` as its settings (StoreIndex's
          defaults when ``None``) and ``timeout`` (seconds per store request, reading the
          nodes included; ``None``: no limit; a store that fails or does not answer in time
          raises :class:`exemplar_svm.stores.StoreError`). For another vector store, implement
          :class:`exemplar_svm.stores.VectorStore` over it (node ids as ids) and pass it as
          ``store``.
        - ``nodes``: nodes that carry an ``embedding`` keep it; the others are embedded with
          ``embed_model`` from ``node.get_content(metadata_mode=MetadataMode.EMBED)``, as
          ``VectorStoreIndex`` does.
        - ``docstore``: every node in it, embedded as for ``nodes``.

        The other parameters are those of :class:`ExemplarSVMRetriever`.
        """
        sources = {"index": index, "nodes": nodes, "docstore": docstore}
        given = [name for name, value in sources.items() if value is not None]
        if len(given) != 1:
            raise ValueError(
                "pass exactly one of index, nodes or docstore"
                + (f" (got {', '.join(given)})" if given else "")
            )
        settings = {
            "background": background,
            "candidates": candidates,
            "max_candidates": max_candidates,
            "seed": seed,
            "skip_when": skip_when,
        }
        store_settings: dict[str, Any] = {
            name: value for name, value in settings.items() if value is not None
        }
        exemplar_index: ExemplarIndex | StoreIndex
        source = None
        if index is not None and (store is not None or is_external(index)):
            core = store_from_vector_store_index(index) if store is None else store
            exemplar_index = StoreIndex(QueryStore(core, index), timeout=timeout, **store_settings)
            node_list: list[BaseNode] = []
            source = index
            if embed_model is None:
                embed_model = index._embed_model
        elif store_settings or store is not None:
            raise TypeError(
                f"{', '.join(sorted(store_settings) or ['store'])} apply only to a "
                "VectorStoreIndex over an external vector store"
            )
        elif index is not None:
            exemplar_index, node_list = _from_vector_store_index(index)
            if embed_model is None:
                embed_model = index._embed_model
        else:
            if docstore is not None:
                node_list = list(docstore.docs.values())
            else:
                assert nodes is not None
                node_list = list(nodes)
            embed_model = _default_embed_model(embed_model)
            exemplar_index = _embed_nodes(node_list, as_embedder(embed_model))
        return cls(
            exemplar_index,
            node_list,
            embed_model,
            similarity_top_k=similarity_top_k,
            mode=mode,
            C=C,
            negative_weight=negative_weight,
            search_kwargs=search_kwargs,
            positives=positives,
            negatives=negatives,
            filters=filters,
            callback_manager=callback_manager,
            objects=objects,
            object_map=object_map,
            verbose=verbose,
            vector_store_index=source,
        )

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[BaseNode],
        embed_model: EmbedModel = None,
        *,
        transformations: Sequence[TransformComponent] | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> ExemplarSVMRetriever:
        """Split ``documents`` into nodes, embed them and build a retriever.

        ``transformations`` default to ``Settings.transformations`` (a ``SentenceSplitter``),
        as for ``VectorStoreIndex.from_documents``; nodes a transformation already embedded are
        not embedded again. ``kwargs`` go to :meth:`from_defaults`.
        """
        steps = list(Settings.transformations if transformations is None else transformations)
        nodes = run_transformations(list(documents), steps, show_progress=show_progress)
        return cls.from_defaults(nodes=list(nodes), embed_model=embed_model, **kwargs)

    # -- accessors -----------------------------------------------------------------------

    @property
    def index(self) -> ExemplarIndex | StoreIndex:
        """The shared core index (ids are node ids): an in-memory ``ExemplarIndex``, or a
        ``StoreIndex`` over an external vector store."""
        return self._index

    @property
    def nodes(self) -> list[BaseNode]:
        """The stored nodes, in index order (in memory only: a store keeps its nodes)."""
        return [self._nodes[item] for item in self._memory_index("nodes").ids]

    @property
    def embed_model(self) -> Any:
        """The query embedding model as given (or as resolved from ``None``)."""
        return self._embed_model

    # -- growing -------------------------------------------------------------------------

    def insert_nodes(self, nodes: Sequence[BaseNode]) -> list[str]:
        """Add nodes, as ``VectorStoreIndex.insert_nodes`` does; returns their ids.

        Nodes that carry an ``embedding`` keep it; the others are embedded with
        ``embed_model`` from ``node.get_content(metadata_mode=MetadataMode.EMBED)``, as in
        :meth:`from_defaults`. A node id already in the retriever (or twice among ``nodes``)
        raises ``ValueError`` and nothing is added.

        Safe to call from several threads at once and while others retrieve: the inserts are
        applied one after the other (none is lost), and a retrieval returns a new node fully or
        not at all. Of two concurrent inserts of one node id, one succeeds and the other raises.

        Raises
        ------
        ValueError
            Over an external vector store: insert into the ``VectorStoreIndex`` itself
            (``vector_store_index.insert_nodes(nodes)``), whose store the retriever searches.
        """
        if isinstance(self._index, StoreIndex):
            raise ValueError(
                "this retriever searches an external vector store in place: insert the nodes "
                "into the VectorStoreIndex itself (vector_store_index.insert_nodes(nodes))"
            )
        index = self._index
        node_list = list(nodes)
        # Checked before anything is embedded, and again below: another thread may insert
        # one of these ids meanwhile. The index's ids are exactly the retrievable nodes.
        _new_node_ids(node_list, index)
        if not node_list:
            return []
        vectors = _node_vectors(node_list, self._embedder)
        with self._write_lock:
            new_ids = _new_node_ids(node_list, index)
            old = self._nodes
            # A new map, published before the index: a retrieval ranks on an index snapshot
            # and then reads the map, so every node it can rank is in the map it reads.
            self._nodes = {**old, **dict(zip(new_ids, node_list, strict=True))}
            try:
                index.add(vectors, new_ids)
            except BaseException:
                self._nodes = old
                raise
        return new_ids

    # -- calibration ---------------------------------------------------------------------

    def calibrate(
        self,
        queries: list[str] | None = None,
        relevant: list[list[str]] | None = None,
        **options: Any,
    ) -> Calibration:
        """Choose the ranking settings for this corpus; see :meth:`ExemplarIndex.calibrate`.

        With ``queries`` (texts, embedded with ``embed_model`` as queries) and ``relevant``
        (per query, the ids of its relevant nodes, or ``{id: gain}``), the labelled queries
        decide. Without them, synthetic queries built from the nodes' text
        (``metadata["title"]`` or ``metadata["document_title"]`` when a string, else the first
        sentence) do. The choice becomes the index's settings, used wherever ``mode``, ``C``,
        ``negative_weight`` and ``search_kwargs`` leave an option at ``None``, and
        :meth:`persist` saves it.

        Parameters
        ----------
        queries : list of str, optional
            Labelled query texts.
        relevant : list of list of str, optional
            Their relevant node ids, one list per query.
        **options
            Of :meth:`ExemplarIndex.calibrate`: ``candidates``, ``metric``, ``max_queries``,
            ``seed``, ``titles``, ``exclude``.

        Raises
        ------
        ValueError
            Over an external vector store: calibration needs the in-memory
            :class:`~exemplar_svm.ExemplarIndex`.
        """
        if isinstance(self._index, StoreIndex):
            raise ValueError(
                "calibrate needs the in-memory ExemplarIndex (from_defaults with nodes, a "
                "docstore or a VectorStoreIndex over the default SimpleVectorStore); over an "
                "external vector store, calibrate an ExemplarIndex of the same nodes and pass "
                "its settings as search_kwargs"
            )
        index = self._index
        if queries is None and relevant is None:
            nodes = [self._nodes[item] for item in index.ids]
            options.setdefault("titles", [_node_title(node) for node in nodes])
            return index.calibrate(
                texts=[node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes],
                embedder=self._embedder,
                **options,
            )
        if queries is None or relevant is None:
            raise ValueError("pass both queries and relevant (or neither, for synthetic queries)")
        if isinstance(queries, str):
            raise TypeError("queries must be a list of query texts, not one string")
        vectors = (
            embed_queries(self._embedder, list(queries)) if queries else np.empty((0, index.dim))
        )
        return index.calibrate(vectors, relevant, **options)

    # -- retrieval -----------------------------------------------------------------------

    def retrieve_with_examples(
        self,
        query: QueryType,
        *,
        positives: Examples = None,
        negatives: Examples = None,
        filters: MetadataFilters | None = None,
    ) -> list[NodeWithScore]:
        """:meth:`retrieve` with extra examples (added to the retriever's) and/or filters.

        Examples are node ids, nodes, ``NodeWithScore`` (e.g. earlier results marked relevant
        or not) or embedding vectors. Callbacks and instrumentation fire as for ``retrieve``.
        """
        return self.retrieve(_bundle(query, positives, negatives, filters))

    async def aretrieve_with_examples(
        self,
        query: QueryType,
        *,
        positives: Examples = None,
        negatives: Examples = None,
        filters: MetadataFilters | None = None,
    ) -> list[NodeWithScore]:
        """Async :meth:`retrieve_with_examples`."""
        return await self.aretrieve(_bundle(query, positives, negatives, filters))

    @dispatcher.span
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        request = self._request(query_bundle)
        if query_bundle.embedding is not None:
            queries = _query_matrix([query_bundle.embedding])
        else:
            texts = _embedding_strs(query_bundle)
            queries = _query_matrix([self._embedder.embed_query(text) for text in texts])
        return self._rank(queries, request)

    @dispatcher.span
    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        request = self._request(query_bundle)
        if query_bundle.embedding is not None:
            queries = _query_matrix([query_bundle.embedding])
        else:
            texts = _embedding_strs(query_bundle)
            vectors = await asyncio.gather(*(self._embedder.aembed_query(t) for t in texts))
            queries = _query_matrix(list(vectors))
        # Filtering and training are CPU work: keep them off the event loop.
        return await asyncio.to_thread(self._rank, queries, request)

    def _request(self, query_bundle: QueryBundle | None) -> _Request:
        """The examples (as ids and vectors) and filters for one query."""
        positives = self._items(self.positives, "positives")
        negatives = self._items(self.negatives, "negatives")
        filters = self.filters
        if isinstance(query_bundle, ExemplarQueryBundle):
            positives += self._items(query_bundle.positives, "positives")
            negatives += self._items(query_bundle.negatives, "negatives")
            if query_bundle.filters is not None:
                filters = query_bundle.filters
        return _Request(positives, negatives, filters)

    def _items(self, examples: Examples, name: str) -> list[_Item]:
        items = _example_items(examples, name)
        if isinstance(self._index, StoreIndex):
            return items  # the store names an unknown id when the search fetches it
        index = self._index
        unknown = next((i for i in items if isinstance(i, str) and i not in index), None)
        if unknown is not None:
            raise ValueError(f"unknown node id {unknown!r} in {name}: no node has it")
        return items

    def _memory_index(self, what: str) -> ExemplarIndex:
        if isinstance(self._index, StoreIndex):
            raise ValueError(
                f"{what} is not available over a vector store: the nodes and their vectors stay "
                "in the store (build the retriever again with from_defaults(index=...))"
            )
        return self._index

    def _rank(self, queries: NDArray[np.float32], request: _Request) -> list[NodeWithScore]:
        if isinstance(self._index, StoreIndex):
            return self._rank_store(self._index, queries, request)
        index = self._filtered_index(request.filters)
        if index is None:
            return []
        hits = index.search(
            queries,
            self.similarity_top_k,
            mode=self.mode,
            positives=self._for_index(request.positives, index),
            negatives=self._for_index(request.negatives, index),
            C=self.C,
            negative_weight=self.negative_weight,
            **self.search_kwargs,
        )
        return [self._result(hit, self._nodes[hit.id]) for hit in hits]

    def _rank_store(
        self, index: StoreIndex, queries: NDArray[np.float32], request: _Request
    ) -> list[NodeWithScore]:
        native = None
        if request.filters is not None and request.filters.filters:
            assert self._source is not None
            native = StoreFilter(request.filters, store_filter(self._source, request.filters))
        hits = index.search(
            queries,
            self.similarity_top_k,
            mode=self.mode,
            positives=request.positives or None,
            negatives=request.negatives or None,
            C=self.C,
            negative_weight=self.negative_weight,
            filter=native,
            **self.search_kwargs,
        )
        assert self._source is not None
        timeout = self._index.timeout if isinstance(self._index, StoreIndex) else None
        nodes = ask(
            self._source.vector_store,
            "the nodes of the hits",
            timeout,
            stored_nodes,
            self._source,
            [hit.id for hit in hits],
        )
        missing = next((hit.id for hit in hits if hit.id not in nodes), None)
        if missing is not None:
            raise LookupError(
                f"the vector store ranked node {missing!r}, but neither it nor the docstore "
                "returns that node (was it deleted meanwhile?)"
            )
        return [self._result(hit, nodes[hit.id]) for hit in hits]

    def _filtered_index(self, filters: MetadataFilters | None) -> ExemplarIndex | None:
        """The index itself, or a sub-index of the nodes that match ``filters`` (None: none)."""
        whole = self._memory_index("filtering")
        if filters is None or not filters.filters:
            return whole
        matches = build_metadata_filter_fn(lambda item: self._nodes[item].metadata, filters)
        ids = whole.ids
        rows = [row for row, item in enumerate(ids) if matches(item)]
        if not rows:
            return None
        if len(rows) == len(ids):
            return whole
        subset = ExemplarIndex(whole.vectors[rows], [ids[row] for row in rows])
        subset.settings = whole.settings  # the calibrated settings rank the subset too
        return subset

    def _for_index(self, items: list[_Item], index: ExemplarIndex) -> list[_Item] | None:
        """Examples for ``index``: ids of nodes filtered out are passed as their vectors."""
        if not items:
            return None
        whole = self._memory_index("filtering")
        return [
            whole.vector(item) if isinstance(item, str) and item not in index else item
            for item in items
        ]

    def _result(self, hit: Hit, node: BaseNode) -> NodeWithScore:
        copy = node.model_copy(
            update={
                "metadata": {**node.metadata, SIMILARITY_KEY: hit.similarity},
                "excluded_embed_metadata_keys": _with_key(node.excluded_embed_metadata_keys),
                "excluded_llm_metadata_keys": _with_key(node.excluded_llm_metadata_keys),
            }
        )
        return NodeWithScore(node=copy, score=hit.score)

    # -- persistence ---------------------------------------------------------------------

    def persist(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path``: the nodes, the index and the parameters, as one
        version, crash-safe; no pickle is used.

        The nodes (without embeddings) go to a JSON file, the index's vectors, ids and solver
        statistics to the files :meth:`ExemplarIndex.save` writes, each named after its
        content; the manifest ``retriever.json`` holds the parameters and names every file
        with its size and checksum. It is written last, by an atomic rename, and the previous
        version's files are removed only after that: a process killed at any point leaves
        the old retriever or the new one (never new vectors with old texts), and the next
        persist or load removes its leftovers. Persists to one folder wait for each other,
        across processes too. A folder written by an older version (``index/`` next to
        ``retriever.json``) is replaced by this format. The embedding model is not saved:
        pass it to :meth:`from_persist_dir`.

        A retriever over an external vector store raises ``ValueError``: its data lives in the
        store, so build it again with :meth:`from_defaults` on the ``VectorStoreIndex``.
        """
        index = self._memory_index("persist")
        # No insert may land between the nodes written here and the index snapshot below.
        with self._write_lock:
            self._persist(index, Path(path))

    def _persist(self, index: ExemplarIndex, folder: Path) -> None:
        state = index._state()  # one snapshot: its ids are the nodes written
        nodes = []
        for item in state.ids:
            entry = doc_to_json(self._nodes[item])
            entry[DATA_KEY]["embedding"] = None  # the index holds the vectors
            nodes.append(entry)
        fields, files, payloads = _index_files.encode(state)
        node_payload = encode_json(nodes, "the nodes (their metadata must be JSON)")
        node_name, files["nodes"] = content_file("nodes", ".json", node_payload)
        payloads[node_name] = node_payload
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "similarity_top_k": self.similarity_top_k,
            "mode": self.mode,
            "C": self.C,
            "negative_weight": self.negative_weight,
            "search_kwargs": self.search_kwargs,
            "positives": _items_to_json(self._items(self.positives, "positives")),
            "negatives": _items_to_json(self._items(self.negatives, "negatives")),
            "filters": None if self.filters is None else self.filters.model_dump(mode="json"),
            "index": fields,
            "files": files,
        }
        publish(
            folder,
            PERSIST_FILENAME,
            manifest,
            payloads,
            previous=lambda: _persisted_files(folder),
            after=lambda: _remove_legacy_index(folder),
        )

    @classmethod
    def from_persist_dir(
        cls,
        path: str | os.PathLike[str],
        embed_model: EmbedModel = None,
        *,
        callback_manager: CallbackManager | None = None,
        objects: list[IndexNode] | None = None,
        object_map: dict[str, Any] | None = None,
        verbose: bool = False,
        **overrides: Any,
    ) -> ExemplarSVMRetriever:
        """Load a retriever saved by :meth:`persist`; anything else raises ``ValueError``.

        The files are checked as :meth:`ExemplarIndex.load` checks an index's (regular files
        inside the folder only, sizes before reading, checksums, bounded JSON, unit rows) and
        the node ids must be the index's ids; a load that races a persist in another process
        reads the old or the new version. Every failure is a ``ValueError`` naming the file.

        ``embed_model`` must be the model that embedded the nodes (``None``: as in the
        constructor). ``overrides`` replace saved parameters (``similarity_top_k``, ``mode``,
        ``C``, ``negative_weight``, ``search_kwargs``, ``positives``, ``negatives``, ``filters``).
        """
        folder = Path(path)
        tidy(folder, PERSIST_FILENAME)
        index, nodes, state = read_version(
            folder,
            PERSIST_FILENAME,
            lambda manifest: _read_persisted(folder, manifest),
            format=FORMAT,
            versions=FORMAT_VERSIONS,
            what="a persisted ExemplarSVMRetriever",
        )
        manifest_path = folder / PERSIST_FILENAME
        try:
            params: dict[str, Any] = {
                "similarity_top_k": state["similarity_top_k"],
                "mode": state["mode"],
                "C": state["C"],
                "negative_weight": state["negative_weight"],
                "search_kwargs": state.get("search_kwargs", {}),
                "positives": _items_from_json(state["positives"]),
                "negatives": _items_from_json(state["negatives"]),
                "filters": None
                if state["filters"] is None
                else MetadataFilters.model_validate(state["filters"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{manifest_path} is corrupt: {exc!r}") from None
        unknown = set(overrides) - set(params)
        if unknown:
            raise TypeError(f"unexpected parameters: {', '.join(sorted(unknown))}")
        try:
            # Checked here (the constructor checks them again), so that a bad one names the file.
            _check_parameters({name: params[name] for name in set(params) - set(overrides)})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{manifest_path} is corrupt: {exc}") from None
        params.update(overrides)
        return cls(
            index,
            nodes,
            embed_model,
            callback_manager=callback_manager,
            objects=objects,
            object_map=object_map,
            verbose=verbose,
            **params,
        )

    def __repr__(self) -> str:
        if isinstance(self._index, StoreIndex):
            corpus = f"index={self._index!r}"
        else:
            corpus = f"nodes={len(self._index)}"
        return (
            f"ExemplarSVMRetriever({corpus}, mode={self.mode!r}, "
            f"similarity_top_k={self.similarity_top_k})"
        )


# -- helpers -------------------------------------------------------------------------------


def _check_parameters(params: Mapping[str, Any]) -> None:
    """The constructor's checks of the saved parameters (``ValueError`` for a bad one)."""
    if "similarity_top_k" in params:
        check_k(params["similarity_top_k"])
    mode = params.get("mode")
    if mode is not None and mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    check_search_options({name: params.get(name) for name in ("C", "negative_weight")})
    search_kwargs = params.get("search_kwargs", {})
    if not isinstance(search_kwargs, Mapping):
        raise ValueError("search_kwargs must be a mapping")
    check_search_options(search_kwargs, own=("mode", "C", "negative_weight"))


def _persisted_files(folder: Path) -> set[str]:
    """The files the folder's ``retriever.json`` names (none without one); raises
    ``ValueError`` if it is not a retriever's, so a persist never overwrites what it did not
    write."""
    manifest = folder / PERSIST_FILENAME
    if not manifest.exists() and not manifest.is_symlink():
        return set()
    _, state = read_manifest(
        folder,
        PERSIST_FILENAME,
        format=FORMAT,
        versions=FORMAT_VERSIONS,
        what="a persisted ExemplarSVMRetriever",
    )
    return _index_files.file_names(state) if state.get("version") != 1 else set()


def _remove_legacy_index(folder: Path) -> None:
    """Remove the ``index/`` folder of format version 1, once a newer manifest is in place
    (only the files an index writes, and the folder if that empties it)."""
    legacy = folder / INDEX_DIRNAME
    if legacy.is_dir() and not legacy.is_symlink():
        remove_files(legacy, [_index_files.MANIFEST])


def _read_persisted(
    folder: Path, manifest: dict[str, Any]
) -> tuple[ExemplarIndex, list[BaseNode], dict[str, Any]]:
    """The index and nodes a manifest of version 1 or 2 describes, checked to match."""
    path = folder / PERSIST_FILENAME
    if manifest.get("version") == 1:
        # Format 1: the nodes are in the manifest, the index in its own folder.
        index = ExemplarIndex.load(folder / INDEX_DIRNAME)
        nodes = _nodes_from_json(manifest.get("nodes"), path)
        node_ids = [node.node_id for node in nodes]
        if sorted(node_ids) != sorted(index.ids):
            raise ValueError(
                f"{folder} is inconsistent: the node ids in {PERSIST_FILENAME} do not match the "
                f"ids in {INDEX_DIRNAME}/ ({len(node_ids)} nodes, {len(index)} vectors); "
                "persist the retriever again"
            )
        return index, nodes, manifest
    files, fields = manifest.get("files"), manifest.get("index")
    if not isinstance(files, dict) or not isinstance(fields, dict):
        raise ValueError(f"{path} is corrupt: no 'index' or 'files' entry")
    state = _index_files.decode_fields(folder, path, fields, files)
    name, size, digest = file_entry(files.get("nodes"), path, "nodes")
    payload = read_checked(folder, name, digest, path, size=size)
    nodes = _nodes_from_json(decode_json(payload, folder / name), folder / name)
    node_ids = [node.node_id for node in nodes]
    if node_ids != state.ids:
        raise ValueError(
            f"{folder} is inconsistent: the node ids in {name} do not match the index's ids "
            f"({len(node_ids)} nodes, {len(state.ids)} vectors); persist the retriever again"
        )
    return ExemplarIndex._from_state(state, path), nodes, manifest


def _nodes_from_json(entries: object, path: Path) -> list[BaseNode]:
    if not isinstance(entries, list):
        raise ValueError(f"{path} is corrupt: the nodes are not a list")
    try:
        return [json_to_doc(entry) for entry in entries]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} is corrupt: a node cannot be read ({exc!r})") from None


def _default_embed_model(embed_model: EmbedModel) -> Any:
    """``None`` means an explicitly set ``Settings.embed_model``, else the local default."""
    if embed_model is not None:
        return embed_model
    # Settings.embed_model would resolve LlamaIndex's default (OpenAI) when unset, so only
    # a model the user set is taken from it.
    configured = Settings._embed_model
    return configured if configured is not None else as_embedder(None)


def _node_title(node: BaseNode) -> str | None:
    for key in ("title", "document_title"):
        title = node.metadata.get(key)
        if isinstance(title, str) and title.strip():
            return title
    return None


def _nodes_by_id(nodes: Sequence[BaseNode], index: ExemplarIndex) -> dict[str, BaseNode]:
    by_id: dict[str, BaseNode] = {}
    for node in nodes:
        if not isinstance(node, BaseNode):
            raise TypeError(f"nodes must be LlamaIndex nodes, got {type(node).__name__}")
        if node.node_id in by_id:
            raise ValueError(f"duplicate node id {node.node_id!r}; every node needs its own id")
        by_id[node.node_id] = node
    if len(by_id) != len(index) or any(item not in by_id for item in index.ids):
        raise ValueError(
            f"the index ids do not match the node ids ({len(index)} vectors, {len(by_id)} "
            "nodes): pass one vector per node, with the node id as its id"
        )
    return by_id


def _embed_nodes(nodes: list[BaseNode], embedder: Embedder) -> ExemplarIndex:
    """Index ``nodes``, embedding those without an ``embedding`` (in one batch)."""
    if not nodes:
        raise ValueError("no nodes to index: pass at least one node")
    return ExemplarIndex(_node_vectors(nodes, embedder), [node.node_id for node in nodes])


def _node_vectors(nodes: list[BaseNode], embedder: Embedder) -> NDArray[np.float32]:
    """One vector per node: its own ``embedding``, else embedded (all of those in one batch)."""
    missing = [row for row, node in enumerate(nodes) if node.embedding is None]
    texts = [nodes[row].get_content(metadata_mode=MetadataMode.EMBED) for row in missing]
    embedded = embedder.embed_documents(texts) if texts else None
    vectors: list[NDArray[np.float32]] = [np.empty(0, dtype=np.float32)] * len(nodes)
    for row, node in enumerate(nodes):
        if node.embedding is not None:
            vectors[row] = np.asarray(node.embedding, dtype=np.float32)
    if embedded is not None:
        for position, row in enumerate(missing):
            vectors[row] = embedded[position]
    dims = {vector.shape for vector in vectors}
    if len(dims) != 1:
        raise ValueError(
            f"the node embeddings have different shapes {sorted(dims)}: the nodes' own "
            "embeddings and embed_model must come from the same model"
        )
    return np.vstack(vectors)


def _new_node_ids(nodes: list[BaseNode], index: ExemplarIndex) -> list[str]:
    """The ids of nodes to insert, refusing non-nodes and ids taken or repeated."""
    ids: dict[str, None] = {}
    for position, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            raise TypeError(f"nodes[{position}] is a {type(node).__name__}, not a LlamaIndex node")
        if node.node_id in index or node.node_id in ids:
            raise ValueError(f"duplicate node id {node.node_id!r}; every node needs its own id")
        ids[node.node_id] = None
    return list(ids)


def _from_vector_store_index(index: VectorStoreIndex) -> tuple[ExemplarIndex, list[BaseNode]]:
    """The embeddings and nodes a VectorStoreIndex already holds, without re-embedding."""
    if not isinstance(index, VectorStoreIndex):
        raise TypeError(f"index must be a VectorStoreIndex, got {type(index).__name__}")
    store = index.vector_store
    if not isinstance(store, SimpleVectorStore):
        raise ValueError(
            f"this VectorStoreIndex keeps its embeddings in a {type(store).__name__}, outside "
            "this process; ExemplarSVMRetriever can reuse only the embeddings of the default "
            "in-memory SimpleVectorStore for now. Pass the nodes instead (they are re-embedded): "
            "ExemplarSVMRetriever.from_defaults(nodes=..., embed_model=...)"
        )
    vector_ids = list(index.index_struct.nodes_dict)
    if not vector_ids:
        raise ValueError("the VectorStoreIndex is empty: add nodes to it first")
    embeddings = store.data.embedding_dict
    missing = next((item for item in vector_ids if item not in embeddings), None)
    if missing is not None:
        raise ValueError(f"the VectorStoreIndex has no stored embedding for node {missing!r}")
    node_ids = [index.index_struct.nodes_dict[item] for item in vector_ids]
    nodes = index.docstore.get_nodes(node_ids)
    vectors = np.asarray([embeddings[item] for item in vector_ids], dtype=np.float32)
    return ExemplarIndex(vectors, node_ids), list(nodes)


def _bundle(
    query: QueryType,
    positives: Examples,
    negatives: Examples,
    filters: MetadataFilters | None,
) -> ExemplarQueryBundle:
    """``query`` as an ExemplarQueryBundle; examples add to any it already carries."""
    if isinstance(query, str):
        return ExemplarQueryBundle(query, positives=positives, negatives=negatives, filters=filters)
    if isinstance(query, ExemplarQueryBundle):
        positives = [
            *_example_items(query.positives, "positives"),
            *_example_items(positives, "positives"),
        ]
        negatives = [
            *_example_items(query.negatives, "negatives"),
            *_example_items(negatives, "negatives"),
        ]
        filters = query.filters if filters is None else filters
    return ExemplarQueryBundle(
        query_str=query.query_str,
        image_path=query.image_path,
        custom_embedding_strs=query.custom_embedding_strs,
        embedding=query.embedding,
        positives=positives,
        negatives=negatives,
        filters=filters,
    )


def _embedding_strs(query_bundle: QueryBundle) -> list[str]:
    texts = list(query_bundle.embedding_strs)
    if not texts:
        raise ValueError(
            "the query is empty: pass a query string, custom_embedding_strs or an embedding"
        )
    return texts


def _query_matrix(vectors: Sequence[ArrayLike]) -> NDArray[np.float32]:
    """One row per query text; the core searches for what they share."""
    return np.vstack([np.asarray(vector, dtype=np.float32) for vector in vectors])


def _example_items(examples: Examples, name: str) -> list[_Item]:
    """Examples as a flat list of node ids and float32 vectors."""
    if examples is None:
        return []
    if isinstance(examples, (str, BaseNode, NodeWithScore)):
        return [_example_item(examples, name)]
    named = (str, BaseNode, NodeWithScore)
    if not (isinstance(examples, Sequence) and any(isinstance(e, named) for e in examples)):
        array = _numeric(examples)
        if array is not None:
            return list(array) if array.ndim == 2 else [array]
    if not isinstance(examples, Sequence):
        raise TypeError(
            f"{name} must be node ids, nodes, NodeWithScore or vectors, "
            f"got {type(examples).__name__}"
        )
    items: list[_Item] = []
    for example in examples:
        item = _example_item(example, name)
        items.extend(list(item) if isinstance(item, np.ndarray) and item.ndim == 2 else [item])
    return items


def _example_item(example: Any, name: str) -> _Item:
    if isinstance(example, str):
        return example
    if isinstance(example, NodeWithScore):
        return example.node.node_id
    if isinstance(example, BaseNode):
        return example.node_id
    array = _numeric(example)
    if array is None:
        raise TypeError(
            f"{name} must be node ids, nodes, NodeWithScore or vectors, "
            f"got {type(example).__name__}"
        )
    return array


def _numeric(value: Any) -> NDArray[np.float32] | None:
    """``value`` as a float32 vector or matrix, or None if it is not numbers."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged: a mix of kinds
        return None
    if array.dtype.kind not in "fiu" or array.ndim not in (1, 2) or array.size == 0:
        return None
    return array.astype(np.float32)


def _items_to_json(items: list[_Item]) -> list[str | list[float]]:
    return [item if isinstance(item, str) else [float(x) for x in item] for item in items]


def _items_from_json(items: Any) -> list[_Item]:
    if not isinstance(items, list):
        raise TypeError("examples must be a list")
    return [item if isinstance(item, str) else np.asarray(item, dtype=np.float32) for item in items]


def _with_key(keys: list[str]) -> list[str]:
    return list(keys) if SIMILARITY_KEY in keys else [*keys, SIMILARITY_KEY]
