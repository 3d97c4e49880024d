"""The LlamaIndex adapter: ExemplarSVMRetriever against the core, LlamaIndex's machinery and disk.

Everything is embedded by the real local all-MiniLM-L6-v2, wrapped as a LlamaIndex
``BaseEmbedding`` that counts its calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import re
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import python_block

pytest.importorskip("llama_index.core")

from llama_index.core import (
    Document,
    Settings,
    StorageContext,
    VectorStoreIndex,
    load_index_from_storage,
)
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.callbacks.schema import EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.retrieval import (
    RetrievalEndEvent,
    RetrievalStartEvent,
)
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.types import BasePydanticVectorStore, VectorStoreQueryResult

from exemplar_svm import MODES, ExemplarIndex
from exemplar_svm.llama_index import (
    PERSIST_FILENAME,
    SIMILARITY_KEY,
    ExemplarQueryBundle,
    ExemplarSVMRetriever,
)

ROOT = Path(__file__).resolve().parents[1]

TOPICS = {
    "cats": [
        "Kittens need four small meals a day of wet kitten food.",
        "Take your cat to the vet once a year for its vaccinations.",
        "Brush your cat's teeth weekly to prevent gum disease.",
        "A scratching post saves your sofa from a bored cat.",
        "Indoor cats live longer than cats allowed to roam outside.",
        "Cats purr when content but sometimes also when in pain.",
        "Clean the litter box daily so your cat keeps using it.",
        "Older cats often need food that is gentle on the kidneys.",
    ],
    "dogs": [
        "Dogs need a walk at least twice a day, whatever the weather.",
        "Feed an adult dog twice a day and keep fresh water out.",
        "Puppies learn to sit fastest with short, frequent training sessions.",
        "A tired dog is a well-behaved dog: play fetch in the park.",
        "Large dog breeds are prone to hip problems as they age.",
        "Socialise your puppy with other dogs before it is four months old.",
        "Chocolate and grapes are poisonous to dogs.",
        "Brush a long-haired dog several times a week to avoid mats.",
    ],
    "space": [
        "Mars has two small moons, Phobos and Deimos.",
        "Jupiter's Great Red Spot is a storm larger than the Earth.",
        "A light year is the distance light travels in one year.",
        "The International Space Station orbits the Earth every ninety minutes.",
        "Saturn's rings are made mostly of ice and rock.",
        "Black holes bend light so strongly that nothing escapes them.",
        "The Moon always shows the same face to the Earth.",
        "Venus is the hottest planet because of its thick atmosphere.",
    ],
    "cooking": [
        "Knead the dough for ten minutes, then let it rise for an hour.",
        "Cook pasta in plenty of salted boiling water.",
        "Sear the steak in a very hot pan, then let it rest.",
        "A pinch of salt brings out the sweetness in chocolate desserts.",
        "Roast vegetables at a high heat so they caramelise.",
        "Whisk the egg whites until they form stiff peaks.",
        "Simmer the tomato sauce slowly for a deeper flavour.",
        "Toast spices in a dry pan before grinding them.",
    ],
    "finance": [
        "Index funds spread your savings across many companies at low cost.",
        "Pay off credit card debt before investing in shares.",
        "An emergency fund should cover three to six months of expenses.",
        "Compound interest makes early saving much more valuable.",
        "Bond prices fall when interest rates rise.",
        "A pension contribution often comes with tax relief.",
        "Inflation erodes the value of cash kept in a current account.",
        "Diversification lowers the risk of a portfolio.",
    ],
}


def make_nodes() -> list[TextNode]:
    nodes = []
    for topic, texts in TOPICS.items():
        for number, text in enumerate(texts):
            nodes.append(
                TextNode(
                    id_=f"{topic}-{number}",
                    text=text,
                    metadata={"topic": topic, "year": 2000 + number, "number": number},
                    excluded_embed_metadata_keys=["topic", "year", "number"],
                    excluded_llm_metadata_keys=["year", "number"],
                )
            )
    return nodes


class LocalEmbedding(BaseEmbedding):
    """A LlamaIndex BaseEmbedding over the real local model, counting what it embeds."""

    _embedder: Any = PrivateAttr()
    _counts: Counter = PrivateAttr()

    def __init__(self, embedder: Any) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2", embed_batch_size=64)
        self._embedder = embedder
        self._counts = Counter()

    @classmethod
    def class_name(cls) -> str:
        return "LocalEmbedding"

    @property
    def counts(self) -> Counter:
        return self._counts

    def _get_query_embedding(self, query: str) -> list[float]:
        self._counts["query"] += 1
        return self._embedder.embed_query(query).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        self._counts["aquery"] += 1
        return (await self._embedder.aembed_query(query)).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        self._counts["text"] += len(texts)
        return self._embedder.embed_documents(texts).tolist()


@pytest.fixture
def embed_model(local_embedder) -> LocalEmbedding:
    return LocalEmbedding(local_embedder)


@pytest.fixture(scope="module")
def corpus(local_embedder) -> tuple[list[TextNode], np.ndarray]:
    """The nodes and their embeddings, computed once (nodes themselves carry none)."""
    nodes = make_nodes()
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    return nodes, local_embedder.embed_documents(texts)


@pytest.fixture
def retriever(corpus, embed_model) -> ExemplarSVMRetriever:
    """Built from nodes that already carry their embeddings, so nothing is embedded here."""
    nodes, vectors = corpus
    with_vectors = [
        node.model_copy(update={"embedding": vector.tolist()})
        for node, vector in zip(nodes, vectors, strict=True)
    ]
    built = ExemplarSVMRetriever.from_defaults(
        nodes=with_vectors, embed_model=embed_model, similarity_top_k=5
    )
    assert embed_model.counts["text"] == 0
    return built


@pytest.fixture
def unset_settings_embed_model():
    """Leave Settings.embed_model unset during the test, and as it was after it."""
    saved = Settings._embed_model
    Settings._embed_model = None
    yield
    Settings._embed_model = saved


def ids(results: list[NodeWithScore]) -> list[str]:
    return [result.node.node_id for result in results]


def core_index(corpus) -> ExemplarIndex:
    nodes, vectors = corpus
    return ExemplarIndex(vectors, [node.node_id for node in nodes])


# -- construction and results ---------------------------------------------------------------


def test_from_nodes_embeds_each_node_once_and_returns_scored_copies(corpus, embed_model) -> None:
    nodes, _ = corpus
    before = [node.model_dump() for node in nodes]
    retriever = ExemplarSVMRetriever.from_defaults(
        nodes=nodes, embed_model=embed_model, similarity_top_k=4
    )
    assert embed_model.counts == Counter(text=len(nodes))
    # None: the index's calibrated settings, else the library's defaults.
    assert (retriever.mode, retriever.C, retriever.negative_weight) == (None, None, None)

    results = retriever.retrieve("How often should my kitten eat?")
    assert embed_model.counts["query"] == 1
    assert len(results) == 4
    assert all(isinstance(result, NodeWithScore) for result in results)
    assert ids(results)[0] == "cats-0"
    assert all(result.node.metadata["topic"] == "cats" for result in results[:2])
    scores = [result.score for result in results]
    assert scores == sorted(scores, reverse=True)

    top = results[0].node
    assert 0.3 < top.metadata[SIMILARITY_KEY] <= 1.0
    # The similarity is kept on a copy, hidden from the LLM and the embedding text.
    assert SIMILARITY_KEY not in top.get_content(metadata_mode=MetadataMode.LLM)
    assert SIMILARITY_KEY not in top.get_content(metadata_mode=MetadataMode.EMBED)
    assert "topic: cats" in top.get_content(metadata_mode=MetadataMode.LLM)
    assert [node.model_dump() for node in nodes] == before
    assert all(SIMILARITY_KEY not in node.metadata for node in retriever.nodes)


@pytest.mark.parametrize("mode", MODES)
def test_same_ranking_as_the_core(corpus, embed_model, local_embedder, retriever, mode) -> None:
    retriever.mode = mode
    query = "What should I put in my savings?"
    hits = core_index(corpus).search(local_embedder.embed_query(query), k=5, mode=mode)
    results = retriever.retrieve(query)
    assert ids(results) == [hit.id for hit in hits]
    np.testing.assert_allclose([r.score for r in results], [h.score for h in hits], rtol=1e-5)
    np.testing.assert_allclose(
        [r.node.metadata[SIMILARITY_KEY] for r in results],
        [hit.similarity for hit in hits],
        rtol=1e-5,
    )
    if mode == "knn":
        np.testing.assert_allclose(
            [r.score for r in results], [r.node.metadata[SIMILARITY_KEY] for r in results]
        )


def test_from_vector_store_index_reuses_its_embeddings(corpus, embed_model) -> None:
    nodes, _ = corpus
    vector_index = VectorStoreIndex(nodes, embed_model=embed_model)
    assert embed_model.counts == Counter(text=len(nodes))

    retriever = ExemplarSVMRetriever.from_defaults(index=vector_index, similarity_top_k=5)
    assert embed_model.counts == Counter(text=len(nodes)), "documents were embedded again"
    assert retriever.embed_model is embed_model  # the index's own model embeds queries
    assert sorted(retriever.index.ids) == sorted(node.node_id for node in nodes)

    results = retriever.retrieve("Which planet has two moons?")
    assert embed_model.counts == Counter(text=len(nodes), query=1)
    assert ids(results)[0] == "space-0"
    assert results[0].node.get_content() == nodes[16].get_content()
    # The same vectors as embedding the nodes directly.
    rebuilt = ExemplarSVMRetriever.from_defaults(
        nodes=nodes, embed_model=embed_model, similarity_top_k=5
    )
    assert ids(rebuilt.retrieve("Which planet has two moons?")) == ids(results)


def test_from_a_vector_store_index_loaded_from_storage(corpus, embed_model, tmp_path) -> None:
    nodes, _ = corpus
    VectorStoreIndex(nodes, embed_model=embed_model).storage_context.persist(tmp_path)
    embed_model.counts.clear()
    loaded = load_index_from_storage(
        StorageContext.from_defaults(persist_dir=str(tmp_path)), embed_model=embed_model
    )
    retriever = ExemplarSVMRetriever.from_defaults(index=loaded, similarity_top_k=3)
    assert ids(retriever.retrieve("Which planet has two moons?"))[0] == "space-0"
    assert embed_model.counts == Counter(query=1)


class ExternalStore(BasePydanticVectorStore):
    """A vector store that keeps its embeddings elsewhere (like a database would)."""

    stores_text: bool = True

    @property
    def client(self) -> Any:
        return None

    def add(self, nodes: Any, **kwargs: Any) -> list[str]:
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **kwargs: Any) -> None:
        pass

    def query(self, query: Any, **kwargs: Any) -> VectorStoreQueryResult:
        return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])


def test_index_with_an_external_vector_store_is_refused(corpus, embed_model) -> None:
    nodes, _ = corpus
    storage = StorageContext.from_defaults(vector_store=ExternalStore())
    vector_index = VectorStoreIndex(nodes[:3], storage_context=storage, embed_model=embed_model)
    with pytest.raises(ValueError, match=r"ExternalStore.*SimpleVectorStore.*nodes="):
        ExemplarSVMRetriever.from_defaults(index=vector_index)


def test_from_documents_splits_and_embeds(embed_model) -> None:
    documents = [
        Document(text=" ".join(texts), doc_id=topic, metadata={"topic": topic})
        for topic, texts in TOPICS.items()
    ]
    retriever = ExemplarSVMRetriever.from_documents(
        documents,
        embed_model,
        transformations=[SentenceSplitter(chunk_size=40, chunk_overlap=0)],
        similarity_top_k=3,
    )
    assert len(retriever.index) > len(documents)
    assert embed_model.counts["text"] == len(retriever.index)
    results = retriever.retrieve("Is chocolate bad for my puppy?")
    assert results[0].node.ref_doc_id == "dogs"
    assert results[0].node.metadata["topic"] == "dogs"


def test_from_docstore(corpus, embed_model) -> None:
    nodes, _ = corpus
    docstore = SimpleDocumentStore()
    docstore.add_documents(nodes)
    retriever = ExemplarSVMRetriever.from_defaults(docstore=docstore, embed_model=embed_model)
    assert embed_model.counts["text"] == len(nodes)
    assert ids(retriever.retrieve("Whisk the egg whites"))[0] == "cooking-5"


def test_embed_model_none_is_settings_or_the_local_model(
    corpus, embed_model, unset_settings_embed_model
) -> None:
    nodes, vectors = corpus
    with_vectors = [
        node.model_copy(update={"embedding": vector.tolist()})
        for node, vector in zip(nodes, vectors, strict=True)
    ]
    local = ExemplarSVMRetriever.from_defaults(nodes=with_vectors)
    assert type(local.embed_model).__name__ == "SentenceTransformerEmbedder"
    assert ids(local.retrieve("Which planet has two moons?"))[0] == "space-0"

    Settings.embed_model = embed_model
    configured = ExemplarSVMRetriever.from_defaults(nodes=with_vectors)
    assert configured.embed_model is embed_model
    configured.retrieve("Which planet has two moons?")
    assert embed_model.counts["query"] == 1


def test_accepts_an_exemplar_svm_embedder(corpus, local_embedder) -> None:
    nodes, _ = corpus
    retriever = ExemplarSVMRetriever.from_defaults(nodes=nodes[:16], embed_model=local_embedder)
    assert ids(retriever.retrieve("dog training"))[0].startswith("dogs-")


# -- queries --------------------------------------------------------------------------------


def test_a_query_bundle_with_an_embedding_is_not_embedded_again(
    corpus, embed_model, local_embedder, retriever
) -> None:
    vector = local_embedder.embed_query("Saturn's rings").tolist()
    results = retriever.retrieve(QueryBundle(query_str="ignored words", embedding=vector))
    assert embed_model.counts["query"] == 0
    assert ids(results)[0] == "space-4"


async def test_async_query_bundle_with_an_embedding(embed_model, local_embedder, retriever):
    vector = local_embedder.embed_query("Saturn's rings").tolist()
    results = await retriever.aretrieve(QueryBundle(query_str="ignored", embedding=vector))
    assert embed_model.counts["query"] + embed_model.counts["aquery"] == 0
    assert ids(results)[0] == "space-4"


def test_custom_embedding_strs_are_embedded_instead_of_the_query(
    corpus, embed_model, local_embedder, retriever
) -> None:
    strs = ["feeding a kitten", "cat food for old cats"]
    bundle = QueryBundle(query_str="zzz qqq", custom_embedding_strs=strs)
    results = retriever.retrieve(bundle)
    assert embed_model.counts["query"] == 2
    queries = np.vstack([local_embedder.embed_query(text) for text in strs])
    assert ids(results) == [hit.id for hit in core_index(corpus).search(queries, k=5)]
    assert {"cats-0", "cats-7"} <= set(ids(results))


def test_empty_query_is_refused(retriever) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        retriever.retrieve("")


# -- examples and filters -------------------------------------------------------------------


def test_positives_and_negatives_by_node_id(corpus, local_embedder, retriever) -> None:
    query = "pet care"
    vector = local_embedder.embed_query(query)
    core = core_index(corpus)

    results = retriever.retrieve_with_examples(
        query, positives=["cats-1"], negatives=["dogs-0", "dogs-1"]
    )
    hits = core.search(vector, k=5, positives=["cats-1"], negatives=["dogs-0", "dogs-1"])
    assert ids(results) == [hit.id for hit in hits]
    assert not {"cats-1", "dogs-0", "dogs-1"} & set(ids(results))

    # Earlier results work as examples too, and retriever-level examples apply to every query.
    plain = retriever.retrieve(query)
    marked = retriever.retrieve_with_examples(query, negatives=plain[:2])
    assert not set(ids(plain[:2])) & set(ids(marked))
    retriever.positives = ["cats-1"]
    retriever.negatives = ["dogs-0"]
    combined = retriever.retrieve_with_examples(query, negatives=["dogs-1"])
    assert ids(combined) == ids(results)
    assert ids(retriever.retrieve(query)) == [
        hit.id for hit in core.search(vector, k=5, positives=["cats-1"], negatives=["dogs-0"])
    ]


async def test_async_examples(corpus, local_embedder, retriever) -> None:
    results = await retriever.aretrieve_with_examples("pet care", positives=["cats-1"])
    hits = core_index(corpus).search(
        local_embedder.embed_query("pet care"), k=5, positives=["cats-1"]
    )
    assert ids(results) == [hit.id for hit in hits]


def test_bad_examples_are_refused(corpus, retriever, embed_model) -> None:
    with pytest.raises(ValueError, match="unknown node id 'nope'"):
        retriever.retrieve_with_examples("cats", positives=["nope"])
    with pytest.raises(ValueError, match="both"):
        retriever.retrieve_with_examples("cats", positives=["cats-1"], negatives=["cats-1"])
    with pytest.raises(TypeError, match="positives must be"):
        retriever.retrieve_with_examples("cats", positives=[{"id": "cats-1"}])
    nodes, _ = corpus
    with pytest.raises(ValueError, match="unknown node id"):
        ExemplarSVMRetriever.from_defaults(nodes=nodes, embed_model=embed_model, negatives="x")


TOPIC_IS_CATS = MetadataFilters(filters=[MetadataFilter(key="topic", value="cats")])

FILTER_CASES = [
    (TOPIC_IS_CATS, lambda m: m["topic"] == "cats"),
    (
        MetadataFilters(filters=[MetadataFilter(key="topic", value="cats", operator="!=")]),
        lambda m: m["topic"] != "cats",
    ),
    (
        MetadataFilters(filters=[MetadataFilter(key="year", value=2005, operator=">")]),
        lambda m: m["year"] > 2005,
    ),
    (
        MetadataFilters(filters=[MetadataFilter(key="year", value=2005, operator=">=")]),
        lambda m: m["year"] >= 2005,
    ),
    (
        MetadataFilters(filters=[MetadataFilter(key="number", value=2, operator="<")]),
        lambda m: m["number"] < 2,
    ),
    (
        MetadataFilters(filters=[MetadataFilter(key="number", value=2, operator="<=")]),
        lambda m: m["number"] <= 2,
    ),
    (
        MetadataFilters(
            filters=[
                MetadataFilter(key="topic", value=["cats", "dogs"], operator=FilterOperator.IN)
            ]
        ),
        lambda m: m["topic"] in ("cats", "dogs"),
    ),
    (
        MetadataFilters(
            filters=[
                MetadataFilter(key="topic", value=["cats", "dogs"], operator=FilterOperator.NIN)
            ]
        ),
        lambda m: m["topic"] not in ("cats", "dogs"),
    ),
    (
        MetadataFilters(
            filters=[
                MetadataFilter(key="topic", value="space"),
                MetadataFilter(key="number", value=4, operator=FilterOperator.GTE),
            ],
            condition=FilterCondition.AND,
        ),
        lambda m: m["topic"] == "space" and m["number"] >= 4,
    ),
    (
        MetadataFilters(
            filters=[
                MetadataFilter(key="topic", value="space"),
                MetadataFilter(key="number", value=0),
            ],
            condition=FilterCondition.OR,
        ),
        lambda m: m["topic"] == "space" or m["number"] == 0,
    ),
]


@pytest.mark.parametrize(("filters", "predicate"), FILTER_CASES)
def test_metadata_filters_select_before_training(
    corpus, local_embedder, embed_model, filters, predicate
) -> None:
    nodes, vectors = corpus
    retriever = ExemplarSVMRetriever(
        core_index(corpus), nodes, embed_model, similarity_top_k=40, filters=filters
    )
    query = "something to read"
    results = retriever.retrieve(query)
    keep = [row for row, node in enumerate(nodes) if predicate(node.metadata)]
    assert 0 < len(keep) < len(nodes)
    assert sorted(ids(results)) == sorted(nodes[row].node_id for row in keep)
    # The SVM saw only the matching nodes: the same as a core index over them alone.
    subset = ExemplarIndex(vectors[keep], [nodes[row].node_id for row in keep])
    hits = subset.search(local_embedder.embed_query(query), k=40)
    assert ids(results) == [hit.id for hit in hits]
    np.testing.assert_allclose([r.score for r in results], [h.score for h in hits], rtol=1e-5)


def test_filters_per_query_and_examples_outside_the_filter(
    corpus, local_embedder, retriever
) -> None:
    nodes, vectors = corpus
    # A dog note as positive while only cat notes are candidates: it still shapes the SVM.
    results = retriever.retrieve_with_examples(
        "pet care", positives=["dogs-4"], filters=TOPIC_IS_CATS
    )
    cats = [row for row, node in enumerate(nodes) if node.metadata["topic"] == "cats"]
    subset = ExemplarIndex(vectors[cats], [nodes[row].node_id for row in cats])
    dog = vectors[[node.node_id for node in nodes].index("dogs-4")]
    hits = subset.search(local_embedder.embed_query("pet care"), k=5, positives=[dog])
    assert ids(results) == [hit.id for hit in hits]
    assert retriever.filters is None  # per-query filters do not stick

    nothing = MetadataFilters(filters=[MetadataFilter(key="topic", value="gardening")])
    assert retriever.retrieve_with_examples("pet care", filters=nothing) == []


def test_retrieve_with_examples_adds_to_a_bundles_examples(retriever) -> None:
    bundle = ExemplarQueryBundle("pet care", positives=["cats-1"], filters=TOPIC_IS_CATS)
    merged = retriever.retrieve_with_examples(bundle, negatives=["cats-2"])
    direct = retriever.retrieve(
        ExemplarQueryBundle(
            "pet care", positives=["cats-1"], negatives=["cats-2"], filters=TOPIC_IS_CATS
        )
    )
    assert ids(merged) == ids(direct)
    assert not {"cats-1", "cats-2"} & set(ids(merged))
    assert all(result.node.metadata["topic"] == "cats" for result in merged)


def test_exemplar_query_bundle_through_a_query_engine(retriever) -> None:
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    plain = engine.query("How do I keep my cat healthy?")
    top = ids(plain.source_nodes)[0]
    response = engine.query(
        ExemplarQueryBundle("How do I keep my cat healthy?", negatives=[top], filters=None)
    )
    assert top not in ids(response.source_nodes)
    assert len(response.source_nodes) == 5


# -- LlamaIndex machinery -------------------------------------------------------------------


def test_similarity_postprocessor_cuts_on_the_score(retriever) -> None:
    results = retriever.retrieve("Which foods are dangerous for dogs?")
    cutoff = (results[1].score + results[2].score) / 2
    kept = SimilarityPostprocessor(similarity_cutoff=cutoff).postprocess_nodes(results)
    assert ids(kept) == ids(results[:2])

    retriever.mode = "knn"
    results = retriever.retrieve("Which foods are dangerous for dogs?")
    kept = SimilarityPostprocessor(similarity_cutoff=0.3).postprocess_nodes(results)
    assert kept and all(result.node.metadata[SIMILARITY_KEY] >= 0.3 for result in kept)
    assert len(kept) == sum(result.score >= 0.3 for result in results)


async def test_query_engine_end_to_end_with_mock_llm(retriever, embed_model) -> None:
    results = retriever.retrieve("Should I brush my cat's teeth?")
    cutoff = results[2].score
    engine = RetrieverQueryEngine.from_args(
        retriever,
        llm=MockLLM(),
        node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=cutoff)],
    )
    response = engine.query("Should I brush my cat's teeth?")
    assert ids(response.source_nodes) == ids(results[:3])
    # MockLLM echoes its prompt: the retrieved text reached the LLM, the similarity did not.
    assert "Brush your cat's teeth weekly" in str(response)
    assert "topic: cats" in str(response)
    assert SIMILARITY_KEY not in str(response)

    aresponse = await engine.aquery("Should I brush my cat's teeth?")
    assert ids(aresponse.source_nodes) == ids(results[:3])
    assert embed_model.counts["aquery"] == 1


def test_callbacks_fire_as_for_llama_index_retrievers(corpus, embed_model) -> None:
    nodes, _ = corpus
    debug = LlamaDebugHandler()
    retriever = ExemplarSVMRetriever.from_defaults(
        nodes=nodes,
        embed_model=embed_model,
        similarity_top_k=3,
        callback_manager=CallbackManager([debug]),
    )
    results = retriever.retrieve("Saturn's rings")
    pairs = debug.get_event_pairs(CBEventType.RETRIEVE)
    assert len(pairs) == 1
    start, end = pairs[0]
    assert start.payload[EventPayload.QUERY_STR] == "Saturn's rings"
    assert ids(end.payload[EventPayload.NODES]) == ids(results)


async def test_async_callbacks(corpus, embed_model, retriever) -> None:
    debug = LlamaDebugHandler()
    retriever.callback_manager = CallbackManager([debug])
    await retriever.aretrieve("Saturn's rings")
    assert len(debug.get_event_pairs(CBEventType.RETRIEVE)) == 1


class Recorder(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder():
    root = get_dispatcher()
    handler = Recorder()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def retrieval_events(recorder: Recorder) -> list[BaseEvent]:
    kinds = (RetrievalStartEvent, RetrievalEndEvent)
    return [event for event in recorder.events if isinstance(event, kinds)]


async def test_instrumentation_events_match_vector_index_retriever(
    corpus, embed_model, retriever, recorder
) -> None:
    nodes, _ = corpus
    reference = VectorStoreIndex(nodes, embed_model=embed_model).as_retriever(similarity_top_k=5)
    reference.retrieve("Saturn's rings")
    expected = [type(event) for event in retrieval_events(recorder)]
    assert expected == [RetrievalStartEvent, RetrievalEndEvent]

    recorder.events.clear()
    results = retriever.retrieve("Saturn's rings")
    events = retrieval_events(recorder)
    assert [type(event) for event in events] == expected
    assert events[0].str_or_query_bundle == "Saturn's rings"
    assert ids(events[1].nodes) == ids(results)
    # Query embedding events come from the embed model, as for the vector index retriever.
    assert "EmbeddingStartEvent" in {type(event).__name__ for event in recorder.events}

    recorder.events.clear()
    await retriever.aretrieve("Saturn's rings")
    assert [type(event) for event in retrieval_events(recorder)] == expected


# -- async ----------------------------------------------------------------------------------


async def test_aretrieve_under_gather_of_50_calls(retriever, embed_model, monkeypatch) -> None:
    queries = [
        f"{subject} number {number}"
        for number in range(10)
        for subject in ["cats", "dogs", "planets", "recipes", "savings"]
    ]
    expected = {query: ids(retriever.retrieve(query)) for query in queries}
    embed_model.counts.clear()

    loop_thread = threading.get_ident()
    search_threads: list[int] = []
    search = ExemplarIndex.search

    def recording_search(self: ExemplarIndex, *args: Any, **kwargs: Any) -> Any:
        search_threads.append(threading.get_ident())
        return search(self, *args, **kwargs)

    monkeypatch.setattr(ExemplarIndex, "search", recording_search)
    results = await asyncio.gather(*(retriever.aretrieve(query) for query in queries))
    assert len(results) == 50
    for query, result in zip(queries, results, strict=True):
        assert ids(result) == expected[query]
    assert embed_model.counts == Counter(aquery=50)  # the async embedding path, every time
    assert len(search_threads) == 50
    assert loop_thread not in search_threads  # the SVM trained off the event loop


# -- persistence ----------------------------------------------------------------------------


def test_persist_round_trip(corpus, retriever, embed_model, tmp_path) -> None:
    retriever.mode = "hybrid"
    retriever.C = 0.5
    retriever.negatives = ["dogs-3"]
    retriever.filters = MetadataFilters(
        filters=[MetadataFilter(key="topic", value="finance", operator="!=")]
    )
    query = "How do I look after an animal?"
    before = retriever.retrieve(query)
    retriever.persist(tmp_path / "saved")

    files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert all(not name.endswith((".pkl", ".pickle")) for name in files)
    state = json.loads((tmp_path / "saved" / PERSIST_FILENAME).read_text())
    assert state["mode"] == "hybrid" and state["similarity_top_k"] == 5 and state["C"] == 0.5
    saved_nodes = json.loads((tmp_path / "saved" / state["files"]["nodes"]["name"]).read_text())
    assert all(entry["__data__"]["embedding"] is None for entry in saved_nodes)

    loaded = ExemplarSVMRetriever.from_persist_dir(tmp_path / "saved", embed_model=embed_model)
    after = loaded.retrieve(query)
    assert ids(after) == ids(before)
    np.testing.assert_allclose([r.score for r in after], [r.score for r in before], rtol=1e-6)
    assert [r.node.get_content(MetadataMode.LLM) for r in after] == [
        r.node.get_content(MetadataMode.LLM) for r in before
    ]
    assert (loaded.mode, loaded.C, loaded.negatives, loaded.filters) == (
        "hybrid",
        0.5,
        ["dogs-3"],
        retriever.filters,
    )
    nodes, _ = corpus
    assert {node.node_id: node.get_content() for node in loaded.nodes} == {
        node.node_id: node.get_content() for node in nodes
    }

    # Overrides, and persisting again in place.
    knn = ExemplarSVMRetriever.from_persist_dir(
        tmp_path / "saved", embed_model=embed_model, mode="knn", similarity_top_k=2
    )
    assert (knn.mode, knn.similarity_top_k) == ("knn", 2)
    knn.persist(tmp_path / "saved")
    assert ExemplarSVMRetriever.from_persist_dir(tmp_path / "saved", embed_model).mode == "knn"


def test_persist_with_vector_examples(retriever, local_embedder, embed_model, tmp_path) -> None:
    retriever.positives = [local_embedder.embed_query("telescopes"), "space-2"]
    before = retriever.retrieve("the night sky")
    retriever.persist(tmp_path)
    loaded = ExemplarSVMRetriever.from_persist_dir(tmp_path, embed_model)
    assert ids(loaded.retrieve("the night sky")) == ids(before)


def test_from_persist_dir_refuses_mismatched_or_foreign_files(retriever, tmp_path) -> None:
    with pytest.raises(ValueError, match="not a persisted ExemplarSVMRetriever"):
        ExemplarSVMRetriever.from_persist_dir(tmp_path)

    retriever.persist(tmp_path)
    path = tmp_path / PERSIST_FILENAME
    good = path.read_text()
    state = json.loads(good)

    # One node fewer, its file's size and checksum updated as a tamperer would.
    nodes_file = tmp_path / state["files"]["nodes"]["name"]
    fewer = json.dumps(json.loads(nodes_file.read_text())[:-1]).encode()
    (tmp_path / "nodes-0000000000000000.json").write_bytes(fewer)
    entry = {"bytes": len(fewer), "sha256": hashlib.sha256(fewer).hexdigest()}
    state["files"]["nodes"] |= entry | {"name": "nodes-0000000000000000.json"}
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"node ids .* do not match"):
        ExemplarSVMRetriever.from_persist_dir(tmp_path, retriever.embed_model)

    path.write_text(json.dumps({**state, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        ExemplarSVMRetriever.from_persist_dir(tmp_path, retriever.embed_model)

    path.write_text(json.dumps({**state, "format": "pickle"}))
    with pytest.raises(
        ValueError, match=r"retriever\.json is not a persisted ExemplarSVMRetriever"
    ):
        ExemplarSVMRetriever.from_persist_dir(tmp_path, retriever.embed_model)

    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ExemplarSVMRetriever.from_persist_dir(tmp_path, retriever.embed_model)

    state = json.loads(good)
    state.pop("mode")
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="corrupt"):
        ExemplarSVMRetriever.from_persist_dir(tmp_path, retriever.embed_model)


# -- bad input ------------------------------------------------------------------------------


def test_bad_construction_is_refused(corpus, embed_model) -> None:
    nodes, vectors = corpus
    with pytest.raises(ValueError, match="exactly one of index, nodes or docstore"):
        ExemplarSVMRetriever.from_defaults(embed_model=embed_model)
    with pytest.raises(ValueError, match=r"exactly one .* \(got index, nodes\)"):
        ExemplarSVMRetriever.from_defaults(
            index=VectorStoreIndex([], embed_model=embed_model), nodes=nodes
        )
    with pytest.raises(ValueError, match="no nodes"):
        ExemplarSVMRetriever.from_defaults(nodes=[], embed_model=embed_model)
    with pytest.raises(ValueError, match="empty"):
        ExemplarSVMRetriever.from_defaults(index=VectorStoreIndex([], embed_model=embed_model))
    with pytest.raises(ValueError, match="unknown mode"):
        ExemplarSVMRetriever(core_index(corpus), nodes, embed_model, mode="svn")
    with pytest.raises(ValueError, match="C must be"):
        ExemplarSVMRetriever(core_index(corpus), nodes, embed_model, C=0)
    with pytest.raises(ValueError, match="k must be"):
        ExemplarSVMRetriever(core_index(corpus), nodes, embed_model, similarity_top_k=0)
    with pytest.raises(ValueError, match="index ids do not match the node ids"):
        ExemplarSVMRetriever(core_index(corpus), nodes[:-1], embed_model)
    with pytest.raises(ValueError, match="duplicate node id"):
        ExemplarSVMRetriever(core_index(corpus), [*nodes, nodes[0]], embed_model)
    with pytest.raises(TypeError, match="ExemplarIndex"):
        ExemplarSVMRetriever(vectors, nodes, embed_model)  # type: ignore[arg-type]
    mixed = [nodes[0].model_copy(update={"embedding": [1.0, 0.0]}), *nodes[1:4]]
    with pytest.raises(ValueError, match="different shapes"):
        ExemplarSVMRetriever.from_defaults(nodes=mixed, embed_model=embed_model)


def test_missing_llama_index_names_the_extra(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "exemplar_svm.llama_index")
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'exemplar-svm[llama-index]'")):
        importlib.import_module("exemplar_svm.llama_index")


# -- README ---------------------------------------------------------------------------------


def test_readme_example_runs_as_written(tmp_path, monkeypatch, unset_settings_embed_model):
    monkeypatch.chdir(tmp_path)
    code = python_block("## LlamaIndex")
    namespace = {"__name__": "__readme__"}
    exec(compile(code, "README.md (LlamaIndex)", "exec"), namespace)
    assert (tmp_path / "svm_retriever" / PERSIST_FILENAME).is_file()
    loaded, retriever = namespace["loaded"], namespace["retriever"]
    assert ids(loaded.retrieve("cat food")) == ids(retriever.retrieve("cat food"))


# -- the core's other ranking options ------------------------------------------------------------


def test_search_kwargs_reach_the_core_and_are_persisted(corpus, embed_model, tmp_path) -> None:
    nodes, _ = corpus
    options = {"feedback": 0, "hybrid_weight": 0.8, "prior": 2.0}
    retriever = ExemplarSVMRetriever(
        core_index(corpus), nodes, embed_model, similarity_top_k=5, search_kwargs=options
    )
    query = embed_model.get_query_embedding("planets and moons")
    expected = [hit.id for hit in core_index(corpus).search(query, k=5, **options)]
    assert [hit.node.node_id for hit in retriever.retrieve("planets and moons")] == expected
    retriever.persist(tmp_path)
    loaded = ExemplarSVMRetriever.from_persist_dir(tmp_path, embed_model)
    assert loaded.search_kwargs == options
    assert [hit.node.node_id for hit in loaded.retrieve("planets and moons")] == expected


def test_bad_search_kwargs_are_refused(corpus, embed_model) -> None:
    nodes, _ = corpus
    with pytest.raises(ValueError, match="unknown search option"):
        ExemplarSVMRetriever(core_index(corpus), nodes, embed_model, search_kwargs={"feedbak": 1})
    with pytest.raises(ValueError, match="with the retriever's own argument"):
        ExemplarSVMRetriever(core_index(corpus), nodes, embed_model, search_kwargs={"C": 1.0})
