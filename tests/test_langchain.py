"""LangChain adapter: ExemplarSVMRetriever against the core, in chains, async and traced.

Every test embeds with the real local all-MiniLM-L6-v2, through a LangChain ``Embeddings``
adapter defined here (the library itself keeps no such class: it only wraps LangChain's).
"""

from __future__ import annotations

import asyncio
import doctest
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import python_block

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from pydantic import ValidationError

import exemplar_svm.langchain as adapter
from exemplar_svm import MODES, ExemplarIndex, SentenceTransformerEmbedder
from exemplar_svm.langchain import ExemplarSVMRetriever

ROOT = Path(__file__).resolve().parents[1]

TOPICS = {
    "space": [
        "The Apollo 11 astronauts landed on the Moon in July 1969.",
        "Mars rovers search the red planet for signs of ancient water.",
        "The James Webb telescope observes distant galaxies in infrared light.",
        "A rocket needs enormous thrust to escape Earth's gravity.",
        "The International Space Station orbits Earth every ninety minutes.",
        "Saturn's rings are made of ice and rock fragments.",
    ],
    "cooking": [
        "Sourdough bread rises slowly thanks to wild yeast.",
        "A risotto needs hot stock added one ladle at a time.",
        "Searing steak in a hot pan creates a brown crust.",
        "Fresh pasta is made from flour and eggs kneaded into a dough.",
        "Caramel forms when sugar is heated until it turns amber.",
        "Marinating chicken in yoghurt makes it tender.",
    ],
    "pets": [
        "Cats purr when they are content and relaxed.",
        "Dogs need a daily walk to stay healthy.",
        "Goldfish should live in a large filtered tank.",
        "Rabbits chew hay constantly to wear down their teeth.",
        "A parrot can learn to imitate human speech.",
        "Kittens sleep for most of the day.",
    ],
    "football": [
        "The striker scored a goal in the final minute of the match.",
        "A goalkeeper may handle the ball inside the penalty area.",
        "The World Cup is held every four years.",
        "An offside player cannot take part in the attack.",
        "The referee showed a red card for a dangerous tackle.",
        "The team won the league after a long unbeaten run.",
    ],
}
TEXTS = [text for texts in TOPICS.values() for text in texts]
IDS = [f"{topic}-{i}" for topic, texts in TOPICS.items() for i in range(len(texts))]
METADATAS = [{"topic": item.split("-")[0], "row": row} for row, item in enumerate(IDS)]
QUERIES = [
    "space exploration and planets",
    "how to cook a good dinner",
    "looking after animals at home",
    "soccer rules",
    "baking with yeast",
]


class LocalEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over the real local model; records every call it gets."""

    def __init__(self, embedder: SentenceTransformerEmbedder) -> None:
        self.embedder = embedder
        self.document_batches: list[list[str]] = []
        self.queries: list[str] = []
        self.async_queries: list[str] = []
        self.async_document_batches: list[list[str]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.document_batches.append(list(texts))
        return self.embedder.embed_documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return self.embedder.embed_query(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.async_document_batches.append(list(texts))
        return (await self.embedder.aembed_documents(texts)).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        self.async_queries.append(text)
        return (await self.embedder.aembed_query(text)).tolist()

    @property
    def embedded_texts(self) -> list[str]:
        return [text for batch in self.document_batches for text in batch]


@pytest.fixture
def embeddings(local_embedder: SentenceTransformerEmbedder) -> LocalEmbeddings:
    return LocalEmbeddings(local_embedder)


@pytest.fixture(scope="module")
def corpus_vectors(local_embedder: SentenceTransformerEmbedder) -> np.ndarray:
    return local_embedder.embed_documents(TEXTS)


@pytest.fixture
def retriever(embeddings: LocalEmbeddings, corpus_vectors: np.ndarray) -> ExemplarSVMRetriever:
    """A retriever over the corpus (built from the vectors, so tests do not re-embed it)."""
    return ExemplarSVMRetriever.from_embeddings(
        zip(TEXTS, corpus_vectors, strict=True), embeddings, metadatas=METADATAS, ids=IDS
    )


def ids_of(docs: list[Document]) -> list[str]:
    return [str(doc.id) for doc in docs]


# -- construction ----------------------------------------------------------------------------


def test_from_texts_embeds_documents_in_one_batch(embeddings: LocalEmbeddings) -> None:
    retriever = ExemplarSVMRetriever.from_texts(TEXTS, embeddings, metadatas=METADATAS, ids=IDS)
    assert embeddings.document_batches == [TEXTS]
    assert embeddings.queries == []
    assert retriever.index.ids == IDS
    assert len(retriever.documents) == len(TEXTS)

    docs = retriever.invoke("astronauts on the Moon")
    assert len(docs) == 4  # the default k
    assert docs[0].id == "space-0"
    assert docs[0].page_content == TEXTS[0]
    assert docs[0].metadata["topic"] == "space"
    assert docs[0].metadata["row"] == 0
    assert embeddings.queries == ["astronauts on the Moon"]


def test_every_document_carries_its_scores(retriever: ExemplarSVMRetriever) -> None:
    docs = retriever.invoke("looking after animals at home", k=len(TEXTS), mode="hybrid")
    assert sorted(ids_of(docs)) == sorted(IDS)
    for doc in docs:
        assert isinstance(doc.metadata["score"], float)
        assert isinstance(doc.metadata["similarity"], float)
        assert -1.0 - 1e-6 <= doc.metadata["similarity"] <= 1.0 + 1e-6
        assert doc.metadata["topic"] == doc.id.split("-")[0]
    scores = [doc.metadata["score"] for doc in docs]
    assert scores == sorted(scores, reverse=True)
    # The stored documents are never changed by a search.
    assert all("score" not in doc.metadata for doc in retriever.documents.values())


def test_knn_similarity_is_the_cosine(retriever: ExemplarSVMRetriever, local_embedder) -> None:
    query = local_embedder.embed_query("soccer rules")
    for doc in retriever.invoke("soccer rules", k=5, mode="knn"):
        expected = float(retriever.index.vector(str(doc.id)) @ query)
        assert doc.metadata["similarity"] == pytest.approx(expected, abs=1e-5)
        assert doc.metadata["score"] == pytest.approx(doc.metadata["similarity"], abs=1e-6)


def test_from_documents_keeps_ids_and_metadata(embeddings: LocalEmbeddings) -> None:
    originals = [
        Document(page_content=TEXTS[0], metadata={"source": "a"}, id="moon"),
        Document(page_content=TEXTS[6], metadata={"source": "b"}),
        Document(page_content=TEXTS[12], metadata={"source": "c"}),
    ]
    retriever = ExemplarSVMRetriever.from_documents(originals, embeddings, k=3)
    assert embeddings.document_batches == [[TEXTS[0], TEXTS[6], TEXTS[12]]]
    ids = retriever.index.ids
    assert ids[0] == "moon"
    for fresh in ids[1:]:  # documents without an id get a UUID4, LangChain's convention
        assert uuid.UUID(fresh).version == 4
    by_id = {doc.id: doc for doc in retriever.invoke("bread")}
    assert {doc.metadata["source"] for doc in by_id.values()} == {"a", "b", "c"}
    assert by_id["moon"].metadata["source"] == "a"
    # The caller's documents are left as they were.
    assert originals[1].id is None
    assert originals[0].metadata == {"source": "a"}


def test_from_documents_ids_argument_fills_missing_ids(embeddings: LocalEmbeddings) -> None:
    docs = [Document(page_content=TEXTS[0]), Document(page_content=TEXTS[1], id="own")]
    retriever = ExemplarSVMRetriever.from_documents(docs, embeddings, ids=["given", None])
    assert retriever.index.ids == ["given", "own"]


def test_duplicate_ids_fail_before_embedding(embeddings: LocalEmbeddings) -> None:
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        ExemplarSVMRetriever.from_texts(["a", "b"], embeddings, ids=["x", "x"])
    docs = [Document(page_content="a", id="x"), Document(page_content="b", id="x")]
    with pytest.raises(ValueError, match="duplicate id"):
        ExemplarSVMRetriever.from_documents(docs, embeddings)
    assert embeddings.document_batches == []


def test_mismatched_lengths_and_bad_input(embeddings: LocalEmbeddings) -> None:
    with pytest.raises(ValueError, match="2 metadatas for 3 texts"):
        ExemplarSVMRetriever.from_texts(["a", "b", "c"], embeddings, metadatas=[{}, {}])
    with pytest.raises(ValueError, match="1 ids for 2"):
        ExemplarSVMRetriever.from_texts(["a", "b"], embeddings, ids=["x"])
    with pytest.raises(TypeError, match="not one string"):
        ExemplarSVMRetriever.from_texts("just one text", embeddings)
    with pytest.raises(ValueError, match="at least one"):
        ExemplarSVMRetriever.from_texts([], embeddings)
    with pytest.raises(TypeError, match="not a Document"):
        ExemplarSVMRetriever.from_documents(["a text"], embeddings)  # type: ignore[list-item]
    assert embeddings.document_batches == []


def test_unknown_arguments_are_errors(
    embeddings: LocalEmbeddings, retriever: ExemplarSVMRetriever
) -> None:
    with pytest.raises(TypeError, match="'top_k'"):
        ExemplarSVMRetriever.from_texts(TEXTS, embeddings, top_k=3)
    with pytest.raises(TypeError, match="'index'"):
        ExemplarSVMRetriever.from_texts(TEXTS, embeddings, index=retriever.index)
    assert embeddings.document_batches == []  # refused before spending time on embeddings
    with pytest.raises(ValidationError, match="top_k"):
        ExemplarSVMRetriever(
            embedding=embeddings, index=retriever.index, documents=retriever.documents, top_k=3
        )
    with pytest.raises(TypeError, match="top_k"):
        retriever.invoke("soccer", top_k=3)


@pytest.mark.parametrize(
    ("field", "value"), [("k", 0), ("mode", "cosine"), ("C", 0.0), ("negative_weight", -1.0)]
)
def test_invalid_fields_are_refused(
    retriever: ExemplarSVMRetriever, field: str, value: object
) -> None:
    with pytest.raises(ValidationError, match=field):
        ExemplarSVMRetriever(
            embedding=retriever.embedding,
            index=retriever.index,
            documents=retriever.documents,
            **{field: value},
        )


def test_fields_default_to_the_core_and_are_documented() -> None:
    fields = ExemplarSVMRetriever.model_fields
    assert fields["k"].default == 4
    # None: the index's calibrated settings, else the library's defaults.
    assert fields["mode"].default is None
    assert fields["C"].default is None
    assert fields["negative_weight"].default is None
    for name in ("k", "mode", "C", "negative_weight", "embedding", "index", "documents"):
        assert fields[name].description, f"field {name} has no description"


def test_documents_must_match_the_index(
    embeddings: LocalEmbeddings, retriever: ExemplarSVMRetriever
) -> None:
    partial = dict(list(retriever.documents.items())[:-1])
    with pytest.raises(ValidationError, match="same ids"):
        ExemplarSVMRetriever(embedding=embeddings, index=retriever.index, documents=partial)
    wrong = {**retriever.documents, IDS[0]: Document(page_content="x", id="other")}
    with pytest.raises(ValidationError, match="has id 'other'"):
        ExemplarSVMRetriever(embedding=embeddings, index=retriever.index, documents=wrong)


def test_from_embeddings_matches_from_texts(
    embeddings: LocalEmbeddings, retriever: ExemplarSVMRetriever
) -> None:
    assert embeddings.document_batches == []  # from_embeddings embedded nothing
    embedded = ExemplarSVMRetriever.from_texts(TEXTS, embeddings, metadatas=METADATAS, ids=IDS)
    for query in QUERIES:
        assert retriever.invoke(query) == embedded.invoke(query)


def test_from_index_after_save_and_load(
    tmp_path: Path, embeddings: LocalEmbeddings, retriever: ExemplarSVMRetriever
) -> None:
    retriever.index.save(tmp_path / "index")
    stored = [retriever.documents[item] for item in retriever.index.ids]
    loaded = ExemplarSVMRetriever.from_index(
        ExemplarIndex.load(tmp_path / "index"), stored, embeddings, k=5
    )
    assert loaded.k == 5
    for query in QUERIES:
        assert loaded.invoke(query) == retriever.invoke(query, k=5)
    by_key = ExemplarSVMRetriever.from_index(retriever.index, retriever.documents, embeddings)
    assert by_key.invoke(QUERIES[0]) == retriever.invoke(QUERIES[0])
    with pytest.raises(ValueError, match="3 documents for an index of 24"):
        ExemplarSVMRetriever.from_index(retriever.index, stored[:3], embeddings)


def test_embedding_accepts_an_exemplar_svm_embedder(local_embedder) -> None:
    retriever = ExemplarSVMRetriever.from_texts(TEXTS, local_embedder, ids=IDS, k=2)
    assert retriever.embedding is local_embedder
    assert ids_of(retriever.invoke("astronauts on the Moon"))[0] == "space-0"


def test_repr_does_not_dump_the_corpus(retriever: ExemplarSVMRetriever) -> None:
    text = repr(retriever)
    assert "ExemplarIndex(n=24" in text
    assert TEXTS[5] not in text


# -- growing ---------------------------------------------------------------------------------


def test_add_texts_embeds_only_the_new_ones(
    embeddings: LocalEmbeddings, retriever: ExemplarSVMRetriever
) -> None:
    new = ["Jupiter is the largest planet of the solar system.", "Basil grows well in sun."]
    ids = retriever.add_texts(new, metadatas=[{"topic": "space"}, {"topic": "garden"}])
    assert embeddings.document_batches == [new]
    assert len(ids) == 2
    assert all(uuid.UUID(item).version == 4 for item in ids)
    assert retriever.index.ids == IDS + ids
    top = retriever.invoke("the biggest planet", k=1)[0]
    assert top.id == ids[0]
    assert top.page_content == new[0]
    assert top.metadata["topic"] == "space"


def test_add_documents_returns_ids_and_refuses_duplicates(
    embeddings: LocalEmbeddings, retriever: ExemplarSVMRetriever
) -> None:
    ids = retriever.add_documents(
        [Document(page_content="Tennis is played with a racket.", id="tennis")]
    )
    assert ids == ["tennis"]
    assert retriever.add_documents([]) == []
    with pytest.raises(ValueError, match="duplicate id 'tennis'"):
        retriever.add_texts(["Another text"], ids=["tennis"])
    with pytest.raises(ValueError, match="duplicate id 'space-0'"):
        retriever.add_documents([Document(page_content="x", id="space-0")])
    assert len(retriever.index) == len(retriever.documents) == len(TEXTS) + 1
    assert embeddings.embedded_texts == ["Tennis is played with a racket."]
    assert retriever.invoke("racket sports", k=1)[0].id == "tennis"


# -- calls -----------------------------------------------------------------------------------


def test_k_per_call(retriever: ExemplarSVMRetriever) -> None:
    assert len(retriever.invoke("soccer rules")) == 4
    assert len(retriever.invoke("soccer rules", k=1)) == 1
    assert len(retriever.invoke("soccer rules", k=7)) == 7
    assert len(retriever.invoke("soccer rules", k=100)) == len(TEXTS)
    assert len(retriever.bind(k=2).invoke("soccer rules")) == 2
    retriever.k = 3
    assert len(retriever.invoke("soccer rules")) == 3


async def test_k_per_async_call(retriever: ExemplarSVMRetriever) -> None:
    assert len(await retriever.ainvoke("soccer rules")) == 4
    assert len(await retriever.ainvoke("soccer rules", k=2)) == 2
    assert len(await retriever.ainvoke("soccer rules", k=9)) == 9


def test_negatives_by_id_are_left_out(retriever: ExemplarSVMRetriever) -> None:
    first = retriever.invoke("space exploration and planets", k=3)
    again = retriever.invoke("space exploration and planets", k=3, negatives=ids_of(first)[:2])
    assert not set(ids_of(first)[:2]) & set(ids_of(again))
    # Counter-examples do more than leave documents out: they push their kind down.
    assert ids_of(again) == [
        hit.id
        for hit in retriever.index.search(
            retriever.embedding.embed_query("space exploration and planets"),
            k=3,
            negatives=ids_of(first)[:2],
        )
    ]


def test_examples_as_documents_feed_back_results(retriever: ExemplarSVMRetriever) -> None:
    docs = retriever.invoke("bread", k=2)
    by_doc = retriever.invoke("bread", k=5, positives=docs[0], negatives=[docs[1]])
    by_id = retriever.invoke("bread", k=5, positives=docs[0].id, negatives=[docs[1].id])
    assert by_doc == by_id
    assert not {docs[0].id, docs[1].id} & set(ids_of(by_doc))


def test_examples_as_text_vector_or_document_without_id_agree(
    retriever: ExemplarSVMRetriever, local_embedder
) -> None:
    text = "Penalty kicks decide a drawn final."
    vector = local_embedder.embed_documents([text])[0]
    by_text = retriever.invoke("sport", k=6, positives=[text])
    assert by_text == retriever.invoke("sport", k=6, positives=vector)
    assert by_text == retriever.invoke("sport", k=6, positives=[vector.tolist()])
    assert by_text == retriever.invoke("sport", k=6, positives=Document(page_content=text))


def test_example_edge_cases(retriever: ExemplarSVMRetriever, local_embedder) -> None:
    plain = retriever.invoke("sport", k=5)
    assert retriever.invoke("sport", k=5, positives=[], negatives=()) == plain
    two = local_embedder.embed_documents(["A free kick.", "A corner kick."])
    assert retriever.invoke("sport", k=5, positives=[two]) == retriever.invoke(
        "sport", k=5, positives=list(two)
    )
    assert retriever.invoke("sport", k=5, positives=["football-1", two]) == retriever.invoke(
        "sport", k=5, positives=["football-1", two[0], two[1]]
    )
    with pytest.raises(ValueError, match="dimension mismatch"):
        retriever.invoke("sport", positives=[np.ones(3)])
    with pytest.raises(ValueError, match="both as a positive and a negative"):
        retriever.invoke("sport", positives="pets-0", negatives=["pets-0"])


@pytest.mark.parametrize("mode", MODES)
def test_same_ranking_as_the_core(
    retriever: ExemplarSVMRetriever,
    embeddings: LocalEmbeddings,
    local_embedder,
    corpus_vectors: np.ndarray,
    mode: str,
) -> None:
    core = ExemplarIndex(corpus_vectors, ids=IDS)
    extra_positive = "A telescope photographs a far away nebula."
    extra_negative = "Rockets and launch pads."
    for query in QUERIES:
        query_vector = local_embedder.embed_query(query)
        hits = core.search(query_vector, k=10, mode=mode)
        docs = retriever.invoke(query, k=10, mode=mode)
        assert ids_of(docs) == [hit.id for hit in hits]
        assert [doc.metadata["score"] for doc in docs] == pytest.approx(
            [hit.score for hit in hits], abs=1e-6
        )
        assert [doc.metadata["similarity"] for doc in docs] == pytest.approx(
            [hit.similarity for hit in hits], abs=1e-6
        )

        examples = local_embedder.embed_documents([extra_positive, extra_negative])
        hits = core.search(
            query_vector,
            k=8,
            mode=mode,
            positives=["space-2", examples[0]],
            negatives=["space-3", "cooking-0", examples[1]],
            C=0.5,
            negative_weight=3.0,
        )
        docs = retriever.invoke(
            query,
            k=8,
            mode=mode,
            positives=["space-2", extra_positive],
            negatives=["space-3", "cooking-0", extra_negative],
            C=0.5,
            negative_weight=3.0,
        )
        assert ids_of(docs) == [hit.id for hit in hits]
        assert [doc.metadata["score"] for doc in docs] == pytest.approx(
            [hit.score for hit in hits], abs=1e-6
        )
    # Example texts go to embed_documents, in one batch per call.
    assert [extra_positive, extra_negative] in embeddings.document_batches


async def test_ainvoke_matches_invoke_and_is_natively_async(
    retriever: ExemplarSVMRetriever, embeddings: LocalEmbeddings
) -> None:
    for mode in MODES:
        options: dict[str, Any] = {
            "k": 5,
            "mode": mode,
            "positives": ["pets-0", "Hamsters run on a wheel."],
            "negatives": "pets-1",
        }
        expected = retriever.invoke("pets", **options)
        embeddings.queries.clear()
        embeddings.document_batches.clear()
        assert await retriever.ainvoke("pets", **options) == expected
        # The async path used the async embedding methods only.
        assert embeddings.queries == [] and embeddings.document_batches == []
    assert embeddings.async_queries == ["pets"] * len(MODES)
    assert embeddings.async_document_batches == [["Hamsters run on a wheel."]] * len(MODES)


def test_batch(retriever: ExemplarSVMRetriever) -> None:
    results = retriever.batch(QUERIES)
    assert results == [retriever.invoke(query) for query in QUERIES]


# -- tracing ---------------------------------------------------------------------------------


class Recorder(BaseCallbackHandler):
    """Records the retriever runs LangChain's callbacks report."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self.events.append(("start", query))

    def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
        self.events.append(("end", [doc.id for doc in documents]))

    def on_retriever_error(self, error: BaseException, **kwargs: Any) -> None:
        self.events.append(("error", error))


async def test_callbacks_see_start_end_and_error(retriever: ExemplarSVMRetriever) -> None:
    recorder = Recorder()
    config: Any = {"callbacks": [recorder]}
    docs = retriever.invoke("soccer rules", config, k=2)
    assert recorder.events == [("start", "soccer rules"), ("end", ids_of(docs))]

    recorder.events.clear()
    docs = await retriever.ainvoke("soccer rules", config, k=3)
    assert recorder.events == [("start", "soccer rules"), ("end", ids_of(docs))]

    for call in (retriever.invoke, retriever.ainvoke):
        recorder.events.clear()
        with pytest.raises(ValueError, match="k must be at least 1"):
            result = call("soccer rules", config, k=0)
            if asyncio.iscoroutine(result):
                await result
        assert [name for name, _ in recorder.events] == ["start", "error"]
        assert isinstance(recorder.events[1][1], ValueError)


# -- concurrency -----------------------------------------------------------------------------


class GatedEmbeddings(LocalEmbeddings):
    """Holds every ``aembed_query`` until ``parties`` of them are waiting at once.

    Only calls that are in flight together can get past it, so it deadlocks (and then fails
    on its timeout) if the retriever runs its async calls one after the other.
    """

    def __init__(self, embedder: SentenceTransformerEmbedder, parties: int) -> None:
        super().__init__(embedder)
        self.parties = parties
        self.arrived = 0
        self.all_in = asyncio.Event()

    async def aembed_query(self, text: str) -> list[float]:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=60)
        return await super().aembed_query(text)


async def test_fifty_concurrent_ainvoke_calls_progress_together(
    local_embedder, corpus_vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 50
    embeddings = GatedEmbeddings(local_embedder, parties=calls)
    retriever = ExemplarSVMRetriever.from_embeddings(
        zip(TEXTS, corpus_vectors, strict=True), embeddings, ids=IDS
    )
    requests = [(QUERIES[i % len(QUERIES)], 1 + i % 5, MODES[i % len(MODES)]) for i in range(calls)]
    expected = [retriever.invoke(query, k=k, mode=mode) for query, k, mode in requests]

    # Each core search checks, from inside, that the event loop still runs other work.
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    search_threads: list[int] = []
    search = retriever.index.search

    def checked_search(*args: Any, **kwargs: Any) -> Any:
        search_threads.append(threading.get_ident())
        # Deadlocks (fails after the timeout) if the search blocks the event loop.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout=20)
        return search(*args, **kwargs)

    monkeypatch.setattr(retriever.index, "search", checked_search)
    results = await asyncio.wait_for(
        asyncio.gather(*(retriever.ainvoke(q, k=k, mode=mode) for q, k, mode in requests)),
        timeout=300,
    )
    assert results == expected
    assert [len(docs) for docs in results] == [k for _, k, _ in requests]
    assert embeddings.arrived == calls
    assert len(search_threads) == calls
    assert loop_thread not in search_threads


# -- LCEL ------------------------------------------------------------------------------------


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"[{doc.id}] {doc.page_content}" for doc in docs)


async def test_lcel_rag_chain_end_to_end(retriever: ExemplarSVMRetriever) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer the question using only the context."),
            ("human", "Context:\n{context}\n\nQuestion: {question}"),
        ]
    )
    chain = (
        {"context": retriever.bind(k=2) | format_docs, "question": RunnablePassthrough()}
        | prompt
        | ParrotFakeChatModel()  # answers with the prompt it got, so we can see the context
        | StrOutputParser()
    )
    question = "Who landed on the Moon?"
    recorder = Recorder()
    answer = chain.invoke(question, {"callbacks": [recorder]})
    expected = retriever.invoke(question, k=2)
    assert answer == f"Context:\n{format_docs(expected)}\n\nQuestion: {question}"
    assert "[space-0] The Apollo 11 astronauts landed" in answer
    # The retriever run is traced inside the chain run.
    assert recorder.events == [("start", question), ("end", ids_of(expected))]

    assert await chain.ainvoke(question) == answer
    assert chain.batch([question, "soccer rules"])[0] == answer


# -- docs and packaging ----------------------------------------------------------------------


def readme_langchain_code() -> str:
    return python_block("## LangChain")


def test_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = readme_langchain_code()
    exec(compile(code, "README.md (LangChain)", "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "kitten-food"  # the young cat's food
    examples = eval(lines[-1])  # the ids found for the examples, which are left out
    assert len(examples) == 2 and not {"cat-vet", "dog-walk"} & set(examples)


def test_docstring_example_runs() -> None:
    result = doctest.testmod(adapter._retriever, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_missing_langchain_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['langchain_core'] = None\n"
        "try:\n"
        "    import exemplar_svm.langchain\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "pip install 'exemplar-svm[langchain]'" in out


# -- the core's other ranking options ------------------------------------------------------------


def test_search_kwargs_and_per_call_options_reach_the_core(
    retriever: ExemplarSVMRetriever, embeddings: LocalEmbeddings
) -> None:
    options = {"feedback": 0, "hybrid_weight": 0.8, "prior": 2.0}
    tuned = ExemplarSVMRetriever(
        embedding=embeddings,
        index=retriever.index,
        documents=retriever.documents,
        k=5,
        search_kwargs=options,
    )
    query = embeddings.embed_query("planets and moons")
    expected = [hit.id for hit in retriever.index.search(query, k=5, **options)]
    assert ids_of(tuned.invoke("planets and moons")) == expected
    # A per-call option overrides the retriever's, for that call only.
    knn = [hit.id for hit in retriever.index.search(query, k=5, mode="knn")]
    assert ids_of(tuned.invoke("planets and moons", mode="knn")) == knn
    assert ids_of(tuned.invoke("planets and moons")) == expected
    with pytest.raises(TypeError, match="'top_k'"):
        tuned.invoke("planets", top_k=3)


def test_bad_search_kwargs_are_refused_when_built(
    retriever: ExemplarSVMRetriever, embeddings: LocalEmbeddings
) -> None:
    from pydantic import ValidationError

    base = {"embedding": embeddings, "index": retriever.index, "documents": retriever.documents}
    with pytest.raises(ValidationError, match="unknown search option"):
        ExemplarSVMRetriever(**base, search_kwargs={"feedbak": 3})
    with pytest.raises(ValidationError, match="hybrid_weight must be between 0 and 1"):
        ExemplarSVMRetriever(**base, search_kwargs={"hybrid_weight": 2})
    with pytest.raises(ValidationError, match="with the retriever's own argument"):
        ExemplarSVMRetriever(**base, search_kwargs={"mode": "knn"})


# -- langchain-community SVMRetriever compatibility (docs/migrating.md) -------------------------


def test_relevancy_threshold_is_the_min_max_normalised_score(
    retriever: ExemplarSVMRetriever,
) -> None:
    query = "looking after animals at home"
    everything = retriever.invoke(query, k=len(TEXTS), mode="svm")
    scores = [doc.metadata["score"] for doc in everything]
    highest, lowest = max(scores), min(scores)
    expected = [(score - highest) / (highest - lowest) + 1.0 for score in scores]

    docs = retriever.invoke(query, k=len(TEXTS), mode="svm", relevancy_threshold=0.0)
    assert ids_of(docs) == ids_of(everything)
    assert [doc.metadata["relevancy"] for doc in docs] == pytest.approx(expected, abs=1e-9)
    assert docs[0].metadata["relevancy"] == 1.0 and docs[-1].metadata["relevancy"] == 0.0
    # Of the k best, those at or above the threshold: fewer than k is allowed.
    kept = [doc for doc in docs[:6] if doc.metadata["relevancy"] >= 0.6]
    assert 0 < len(kept) < 6
    thresholded = retriever.model_copy(update={"relevancy_threshold": 0.6, "k": 6})
    assert ids_of(thresholded.invoke(query, mode="svm")) == ids_of(kept)
    # Per call it overrides the field, also with None; without one, no "relevancy" entry.
    assert len(thresholded.invoke(query, mode="svm", relevancy_threshold=None)) == 6
    assert "relevancy" not in retriever.invoke(query)[0].metadata
    assert all("relevancy" not in doc.metadata for doc in retriever.documents.values())


async def test_relevancy_threshold_async_and_with_examples(
    retriever: ExemplarSVMRetriever,
) -> None:
    options = {"k": 10, "negatives": ["pets-1"], "relevancy_threshold": 0.4}
    query = "cats and kittens"
    docs = retriever.invoke(query, **options)
    assert ids_of(await retriever.ainvoke(query, **options)) == ids_of(docs)
    # The named example is not ranked, so it is not the worst document either.
    assert "pets-1" not in ids_of(docs)
    ranked = retriever.invoke(query, k=len(TEXTS), negatives=["pets-1"], relevancy_threshold=0)
    assert len(ranked) == len(TEXTS) - 1 and ranked[-1].metadata["relevancy"] == 0.0


@pytest.mark.parametrize("value", [True, -0.1, 1.5, float("nan"), "0.5"])
def test_bad_relevancy_thresholds_are_refused_before_embedding(
    embeddings: LocalEmbeddings, retriever: ExemplarSVMRetriever, value: object
) -> None:
    with pytest.raises(ValueError, match="relevancy_threshold"):
        ExemplarSVMRetriever.from_texts(TEXTS, embeddings, relevancy_threshold=value)
    assert embeddings.document_batches == []
    with pytest.raises(ValidationError, match="relevancy_threshold"):
        retriever.model_validate({**dict(retriever), "relevancy_threshold": value})
    with pytest.raises(ValueError, match="relevancy_threshold"):
        retriever.invoke("soccer", relevancy_threshold=value)
    assert embeddings.queries == []


def test_relevancy_threshold_needs_the_in_memory_index(embeddings: LocalEmbeddings) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(embeddings)
    store.add_texts(TEXTS[:6], ids=IDS[:6])
    with pytest.raises(ValueError, match="in-memory ExemplarIndex"):
        ExemplarSVMRetriever.from_vectorstore(store, relevancy_threshold=0.5)
    over_store = ExemplarSVMRetriever.from_vectorstore(store)
    calls = len(embeddings.queries)
    with pytest.raises(ValueError, match="in-memory ExemplarIndex"):
        over_store.invoke("the Moon", relevancy_threshold=0.5)
    assert len(embeddings.queries) == calls  # refused before the query is embedded


def test_from_texts_takes_svm_retrievers_embeddings_keyword(
    embeddings: LocalEmbeddings,
) -> None:
    named = ExemplarSVMRetriever.from_texts(texts=TEXTS, embeddings=embeddings, k=2, ids=IDS)
    assert named.embedding is embeddings
    docs = [Document(page_content=text) for text in TEXTS[:4]]
    assert len(ExemplarSVMRetriever.from_documents(docs, embeddings=embeddings).index) == 4
    assert len(embeddings.document_batches) == 2
    with pytest.raises(TypeError, match="both embedding and embeddings"):
        ExemplarSVMRetriever.from_texts(TEXTS, embeddings, embeddings=embeddings)
    with pytest.raises(TypeError, match="needs the embedding model"):
        ExemplarSVMRetriever.from_texts(TEXTS)
    with pytest.raises(TypeError, match="needs the embedding model"):
        ExemplarSVMRetriever.from_documents(docs)
    assert len(embeddings.document_batches) == 2
