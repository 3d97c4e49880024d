"""Per-corpus calibration: ExemplarIndex.calibrate, its synthetic queries, persistence, adapters."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

import exemplar_svm.calibration as calibration
from exemplar_svm import ExemplarIndex
from exemplar_svm.calibration import (
    CANDIDATES,
    Calibration,
    calibrate,
    embed_queries,
    synthetic_queries,
)
from exemplar_svm.index import DEFAULT_MODE, SEARCH_DEFAULTS
from tests.word_embedder import WordEmbedder, bag_of_words

#: Two clearly different settings: cosine kNN, and the textbook exemplar SVM at a large C.
PAIR = {
    "knn": {"mode": "knn"},
    "svm": {"mode": "svm", "C": 1.0, "feedback": 0},
}


def same(first: list, second: list) -> bool:
    """The same hits, scores and similarities equal up to float32 rounding."""
    return [hit.id for hit in first] == [hit.id for hit in second] and all(
        a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)
        and a.similarity == pytest.approx(b.similarity, rel=1e-5, abs=1e-6)
        for a, b in zip(first, second, strict=True)
    )


def clustered_corpus(seed: int = 0) -> tuple[ExemplarIndex, np.ndarray, list[list[str]]]:
    """20 clusters of 15 documents; each query is near one cluster's centre, whose members are
    its relevant documents. Its nearest neighbours are its answers, so kNN ranks them best and
    an SVM that tries to separate the query from its own neighbours ranks them worse."""
    rng = np.random.default_rng(seed)
    clusters, size, dim, spread = 20, 15, 32, 0.8
    centres = rng.normal(size=(clusters, dim))
    scale = spread * np.linalg.norm(centres, axis=1).mean() / np.sqrt(dim)
    documents = np.repeat(centres, size, axis=0) + scale * rng.normal(size=(clusters * size, dim))
    queries = centres + scale * rng.normal(size=centres.shape)
    labels = np.repeat(np.arange(clusters), size)
    relevant = [[str(row) for row in np.flatnonzero(labels == c)] for c in range(clusters)]
    return ExemplarIndex(documents), queries, relevant


def nuisance_corpus(seed: int = 0) -> tuple[ExemplarIndex, np.ndarray, list[list[str]]]:
    """Every document (and query) has a large component of either sign along one shared
    direction; a query's 10 relevant documents share a small topic direction with it. kNN is
    dominated by the shared direction, while the SVM's contrast with the corpus finds the
    direction that is rare in the corpus: the topic."""
    rng = np.random.default_rng(seed)
    count, dim, topics, size = 400, 32, 20, 10
    documents = 0.3 * rng.normal(size=(count, dim))
    documents[:, 0] += rng.choice([-3.0, 3.0], size=count)
    free = np.ones(count, dtype=bool)
    queries, relevant = [], []
    for topic in range(topics):
        rows = rng.choice(np.flatnonzero(free), size, replace=False)
        free[rows] = False
        documents[rows, 1 + topic] += 1.5
        query = 0.3 * rng.normal(size=dim)
        query[0] += 3.0
        query[1 + topic] += 1.5
        queries.append(query)
        relevant.append([str(row) for row in rows])
    return ExemplarIndex(documents), np.array(queries), relevant


@pytest.mark.parametrize(
    ("corpus", "better", "worse"),
    [(clustered_corpus, "knn", "svm"), (nuisance_corpus, "svm", "knn")],
)
def test_calibration_chooses_the_better_of_two_clearly_different_settings(
    corpus, better: str, worse: str
) -> None:
    index, queries, relevant = corpus()
    result = index.calibrate(queries, relevant, candidates=PAIR)
    # The two settings really are far apart on this corpus, and the better one is chosen.
    assert result.scores[better]["nDCG@10"] > result.scores[worse]["nDCG@10"] + 0.1
    assert (result.chosen, result.settings) == (better, PAIR[better])
    assert (result.source, result.n_queries, result.metric) == ("labelled", 20, "nDCG@10")
    assert index.settings == PAIR[better]

    # search (and search_batch) now rank with the chosen setting, as explicit options would.
    fresh = ExemplarIndex(index.vectors, index.ids)
    for query in queries[:3]:
        assert same(index.search(query, 10), fresh.search(query, 10, **PAIR[better]))
    batch = index.search_batch(list(queries[:3]), 10)
    for hits, query in zip(batch, queries[:3], strict=True):
        assert same(hits, fresh.search(query, 10, **PAIR[better]))
    # Explicit arguments still win over the calibrated settings.
    assert same(
        index.search(queries[0], 10, **PAIR[worse]), fresh.search(queries[0], 10, **PAIR[worse])
    )


def test_the_deciding_metric_is_recorded_and_scores_cover_both_metrics() -> None:
    index, queries, relevant = nuisance_corpus()
    result = index.calibrate(queries, relevant, candidates=PAIR, metric="MAP@100")
    assert result.metric == "MAP@100" and result.chosen == "svm"
    assert all(set(values) == {"nDCG@10", "MAP@100"} for values in result.scores.values())
    assert list(result.candidates) == ["knn", "svm"]


def test_ties_go_to_the_earlier_candidate() -> None:
    index, queries, relevant = clustered_corpus()
    same = {"first": {"mode": "knn"}, "second": {"mode": "knn"}}
    assert index.calibrate(queries, relevant, candidates=same).chosen == "first"


def test_candidates_are_measured_at_the_library_defaults_whatever_the_index_settings() -> None:
    index, queries, relevant = clustered_corpus()
    fresh = ExemplarIndex(index.vectors, index.ids)
    index.settings = {"mode": "svm", "C": 1.0}
    assert calibrate(index, queries, relevant).scores == calibrate(fresh, queries, relevant).scores


def test_the_default_candidates() -> None:
    names = list(CANDIDATES)
    assert names[:2] == ["default", "knn"] and CANDIDATES["default"] == {}
    assert len(names) == 8 and names[-1] == "svm"
    index, queries, relevant = clustered_corpus()
    result = index.calibrate(queries, relevant)
    assert list(result.scores) == names
    # The library default keeps a tie: kNN wins here only if it is strictly better.
    if result.chosen == "default":
        assert index.settings == {}
    fresh = ExemplarIndex(index.vectors, index.ids)
    assert same(index.search(queries[0], 5), fresh.search(queries[0], 5, **result.settings))


def test_graded_gains_and_excluded_query_documents() -> None:
    index, queries, relevant = clustered_corpus()
    graded = [{doc: 2.0 for doc in docs} | {docs[0]: 0.0} for docs in relevant]
    result = index.calibrate(queries, graded, candidates=PAIR)
    assert result.chosen == "knn"
    # Query by example: the query is a document, left out of its own ranking and judgements.
    rows = [int(docs[0]) for docs in relevant]
    by_example = index.vectors[rows]
    exclude = [[docs[0]] for docs in relevant]
    result = index.calibrate(by_example, relevant, candidates=PAIR, exclude=exclude)
    assert result.chosen == "knn" and result.n_queries == 20
    assert result.scores["knn"]["nDCG@10"] < 1.0 + 1e-12


def test_markdown_and_json() -> None:
    index, queries, relevant = nuisance_corpus()
    result = index.calibrate(queries, relevant, candidates=PAIR)
    table = result.to_markdown()
    assert "| candidate | settings | nDCG@10 | MAP@100 |" in table
    assert "| **svm** |" in table and "| knn |" in table
    payload = json.loads(json.dumps(result.to_json()))
    assert payload["chosen"] == "svm" and payload["settings"] == PAIR["svm"]
    assert payload["scores"]["knn"]["MAP@100"] == pytest.approx(result.scores["knn"]["MAP@100"])
    assert isinstance(result, Calibration)


@pytest.mark.parametrize(
    ("queries", "relevant", "kwargs", "error", "message"),
    [
        (np.empty((0, 32)), [], {}, ValueError, "no queries"),
        ([], [], {}, ValueError, "no queries"),
        (np.ones((2, 32)), [["0"]], {}, ValueError, "2 queries but 1 lists"),
        (np.ones((1, 32)), [["0", "nope"]], {}, ValueError, "not in the index"),
        (np.ones((1, 32)), [[]], {}, ValueError, "no query has a relevant document"),
        (np.ones((1, 8)), [["0"]], {}, ValueError, "dimension mismatch"),
        (np.ones((1, 32)), [["0"]], {"metric": "P@10"}, ValueError, "unknown metric"),
        (np.ones((1, 32)), [["0"]], {"candidates": {}}, ValueError, "no candidate"),
        (np.ones((1, 32)), [["0"]], {"candidates": {"x": {"mode": "no"}}}, ValueError, "'x'"),
        (np.ones((1, 32)), ["0"], {}, TypeError, "one string"),
    ],
)
def test_bad_labelled_input(queries, relevant, kwargs, error, message) -> None:
    index, _, _ = clustered_corpus()
    with pytest.raises(error, match=message):
        index.calibrate(queries, relevant, **kwargs)
    assert index.settings == {}


def test_the_routes_are_exclusive_and_complete() -> None:
    index, queries, relevant = clustered_corpus()
    with pytest.raises(ValueError, match="needs labelled queries"):
        index.calibrate()
    with pytest.raises(ValueError, match="both queries= and relevant="):
        index.calibrate(queries)
    with pytest.raises(ValueError, match="not both"):
        index.calibrate(queries, relevant, texts=["a"] * len(index), embedder=WordEmbedder())
    with pytest.raises(ValueError, match="embedder="):
        index.calibrate(texts=["a"] * len(index))


# -- synthetic queries ---------------------------------------------------------------------


def test_synthetic_queries_titles_first_sentences_and_skips() -> None:
    texts = [
        "Cats purr when they are content. They also knead with their paws.",
        "One sentence only, so the query would be the whole text.",
        "Short. The first sentence has too few words to be a query.",
        "Titled documents use their title. Whatever the text says.",
        "Why do   dogs\nbark so much? Mostly to warn their pack.",
        "A heading without a full stop\n\nThen a paragraph follows here.",
        "",
    ]
    titles = [None, None, None, "  The   title  ", None, None, None]
    assert synthetic_queries(texts, titles) == [
        (0, "Cats purr when they are content."),
        (3, "The title"),
        (4, "Why do dogs bark so much?"),
        (5, "A heading without a full stop"),
    ]
    # Deterministic; without titles the titled document falls back to its first sentence.
    assert synthetic_queries(texts) == synthetic_queries(texts)
    assert (3, "Titled documents use their title.") in synthetic_queries(texts)
    # A title makes even a one-sentence document usable.
    assert synthetic_queries(["Only one sentence here."], ["Its title"]) == [(0, "Its title")]
    with pytest.raises(ValueError, match="2 titles for 1 texts"):
        synthetic_queries(["a"], ["x", "y"])
    with pytest.raises(TypeError, match="not one string"):
        synthetic_queries("a text")  # type: ignore[arg-type]


def _sentences_corpus() -> tuple[ExemplarIndex, list[str]]:
    topics = {
        "cats": ["purr", "whiskers", "kittens", "mice", "naps", "claws"],
        "ships": ["sails", "harbour", "anchor", "crew", "waves", "captain"],
        "bread": ["dough", "yeast", "oven", "flour", "crust", "bakery"],
    }
    texts = [
        f"Notes on {topic} and {word} number {number}. More about {word} and {topic} follows."
        for topic, words in topics.items()
        for number, word in enumerate(words)
    ]
    return ExemplarIndex(WordEmbedder().embed_documents(texts)), texts


def test_synthetic_route_embeds_a_sample_of_queries_and_stores_the_choice() -> None:
    index, texts = _sentences_corpus()
    embedder = WordEmbedder()
    result = index.calibrate(texts=texts, embedder=embedder, candidates=PAIR, max_queries=10)
    assert result.source == "synthetic" and result.n_queries == 10
    assert embedder.queries == 10 and embedder.documents == 0  # embedded as queries
    assert index.settings == result.settings == PAIR[result.chosen]
    again = ExemplarIndex(index.vectors, index.ids).calibrate(
        texts=texts, embedder=WordEmbedder(), candidates=PAIR, max_queries=10
    )
    assert again.scores == result.scores  # the same seed draws the same documents
    everything = index.calibrate(texts=texts, embedder=WordEmbedder(), candidates=PAIR)
    assert everything.n_queries == len(texts)


def test_synthetic_queries_answer_with_their_own_document() -> None:
    index, texts = _sentences_corpus()
    vectors, relevant = calibration.synthetic_relevance(
        index, texts, WordEmbedder(), max_queries=len(texts)
    )
    assert relevant == [{item: 1.0} for item in index.ids]
    first = synthetic_queries(texts)[0][1]
    np.testing.assert_allclose(vectors[0], bag_of_words(first))


def test_too_few_synthetic_queries_say_how_to_fix_it() -> None:
    texts = ["One sentence each.", "Nothing more here.", "Two sentences. Here.", "x", "y", "z"]
    index = ExemplarIndex(WordEmbedder().embed_documents(texts))
    with pytest.raises(ValueError, match=r"only 0 of the 6 documents.*labelled queries"):
        index.calibrate(texts=texts, embedder=WordEmbedder())
    with pytest.raises(ValueError, match="one text per document"):
        index.calibrate(texts=texts[:3], embedder=WordEmbedder())
    with pytest.raises(ValueError, match="max_queries must be at least 5"):
        index.calibrate(texts=texts, embedder=WordEmbedder(), max_queries=2)
    # Titles fix it.
    titles = [f"title of document {row}" for row in range(len(texts))]
    result = index.calibrate(texts=texts, titles=titles, embedder=WordEmbedder(), candidates=PAIR)
    assert result.n_queries == len(texts)


def test_embed_queries_uses_embed_query_unless_queries_embed_like_documents() -> None:
    class QueriesOnly:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def embed_query(self, text: str) -> np.ndarray:
            self.calls.append(text)
            return bag_of_words(text)

    embedder = QueriesOnly()
    vectors = embed_queries(embedder, ["a b c", "d e f"])  # type: ignore[arg-type]
    assert embedder.calls == ["a b c", "d e f"] and vectors.shape == (2, 64)
    with pytest.raises(ValueError, match="no query texts"):
        embed_queries(embedder, [])  # type: ignore[arg-type]


def test_the_docstring_examples_run() -> None:
    assert doctest.testmod(calibration).failed == 0
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(ExemplarIndex.calibrate, "calibrate", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# -- settings: set, reset, saved ------------------------------------------------------------


def test_settings_can_be_set_and_reset_and_are_validated() -> None:
    index, queries, _ = clustered_corpus()
    index.settings = {"mode": "knn", "C": None}
    assert index.settings == {"mode": "knn"}
    hits = index.search(queries[0], 3)
    assert all(hit.score == pytest.approx(hit.similarity, rel=1e-5) for hit in hits)
    index.settings = {}
    assert index.settings == {}
    assert same(index.search(queries[0], 3), index.search(queries[0], 3, mode=DEFAULT_MODE))
    with pytest.raises(ValueError, match="unknown search option"):
        index.settings = {"colour": "blue"}
    with pytest.raises(ValueError, match="C"):
        index.settings = {"C": -1.0}
    with pytest.raises(TypeError, match="mapping"):
        index.settings = [("mode", "knn")]  # type: ignore[assignment]
    assert index.settings == {}
    copy = index.settings
    copy["mode"] = "svm"
    assert index.settings == {}  # a copy


def test_calibrated_settings_survive_save_and_load(tmp_path: Path) -> None:
    index, queries, relevant = nuisance_corpus()
    result = index.calibrate(queries, relevant, candidates=PAIR)
    index.save(tmp_path / "index")
    loaded = ExemplarIndex.load(tmp_path / "index")
    assert loaded.settings == result.settings == PAIR["svm"]
    assert same(loaded.search(queries[0], 10), index.search(queries[0], 10))
    # Explicit arguments override the loaded settings.
    fresh = ExemplarIndex(index.vectors, index.ids)
    assert same(loaded.search(queries[0], 10, mode="knn"), fresh.search(queries[0], 10, mode="knn"))
    # Resetting and saving again leaves no settings in the manifest.
    loaded.settings = {}
    loaded.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    assert "settings" not in manifest
    assert ExemplarIndex.load(tmp_path / "index").settings == {}


@pytest.mark.parametrize(
    "settings",
    [{"mode": "cosine"}, {"colour": 1}, {"C": 0}, ["mode", "knn"], "knn"],
)
def test_bad_settings_in_a_manifest_are_refused(tmp_path: Path, settings: object) -> None:
    index, _, _ = clustered_corpus()
    index.save(tmp_path / "index")
    path = tmp_path / "index" / "index.json"
    manifest = json.loads(path.read_text())
    manifest["settings"] = settings
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="bad 'settings'"):
        ExemplarIndex.load(tmp_path / "index")


def test_settings_only_name_known_options() -> None:
    assert set(CANDIDATES["hybrid (plain kNN side)"]) <= set(SEARCH_DEFAULTS)
    for options in CANDIDATES.values():
        assert set(options) <= set(SEARCH_DEFAULTS)


# -- adapters ------------------------------------------------------------------------------

ADAPTER_TEXTS = {
    "cats-0": "Cats purr when they are content. A purring cat is usually relaxed.",
    "cats-1": "Kittens sleep most of the day. Young cats need a lot of rest.",
    "cats-2": "Cats sharpen their claws on posts. Scratching keeps claws healthy.",
    "ships-0": "Sailors raise the sails at dawn. The ship leaves the harbour at noon.",
    "ships-1": "The captain checks the anchor chain. A ship at anchor swings with the tide.",
    "ships-2": "Waves break over the bow of the ship. The crew hold on to the rails.",
    "bread-0": "Knead the dough for ten minutes. Then let the bread dough rise.",
    "bread-1": "Yeast makes bread rise in the oven. Warm water wakes the yeast up.",
    "bread-2": "A hot oven gives bread a crisp crust. Bake the loaf until golden.",
}
ADAPTER_QUERIES = ["why do cats purr", "ship anchor and harbour", "bread dough with yeast"]
ADAPTER_RELEVANT = [["cats-0", "cats-1", "cats-2"], ["ships-0", "ships-1", "ships-2"]]
ADAPTER_RELEVANT += [["bread-0", "bread-1", "bread-2"]]


def _word_embeddings():
    from langchain_core.embeddings import Embeddings

    class WordEmbeddings(Embeddings):
        def __init__(self) -> None:
            self.queries: list[str] = []

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [bag_of_words(text).tolist() for text in texts]

        def embed_query(self, text: str) -> list[float]:
            self.queries.append(text)
            return bag_of_words(text).tolist()

    return WordEmbeddings()


def test_langchain_retriever_calibrates_its_index() -> None:
    pytest.importorskip("langchain_core")
    from exemplar_svm.langchain import ExemplarSVMRetriever

    embeddings = _word_embeddings()
    retriever = ExemplarSVMRetriever.from_texts(
        list(ADAPTER_TEXTS.values()), embeddings, ids=list(ADAPTER_TEXTS), k=3
    )
    assert (retriever.mode, retriever.C, retriever.negative_weight) == (None, None, None)
    result = retriever.calibrate(ADAPTER_QUERIES, ADAPTER_RELEVANT, candidates=PAIR)
    assert embeddings.queries == ADAPTER_QUERIES  # embedded as queries
    assert result.source == "labelled" and result.n_queries == 3
    assert retriever.index.settings == PAIR[result.chosen]
    # The retriever's None fields take the index's settings ...
    query = "a cat that purrs"
    vector = bag_of_words(query)
    expected = ExemplarIndex(retriever.index.vectors, retriever.index.ids).search(
        vector, 3, **PAIR[result.chosen]
    )
    docs = retriever.invoke(query)
    assert [doc.id for doc in docs] == [hit.id for hit in expected]
    assert [doc.metadata["score"] for doc in docs] == pytest.approx([h.score for h in expected])
    # ... and a field or a per-call option that is set wins.
    knn = retriever.invoke(query, mode="knn")
    assert all(
        doc.metadata["score"] == pytest.approx(doc.metadata["similarity"], rel=1e-5) for doc in knn
    )
    pinned = ExemplarSVMRetriever.from_index(
        retriever.index, retriever.documents, embeddings, mode="knn", k=3
    )
    assert [doc.id for doc in pinned.invoke(query)] == [doc.id for doc in knn]

    # Synthetic queries from the documents' texts (and a metadata title where there is one).
    synthetic = retriever.calibrate(candidates=PAIR)
    assert synthetic.source == "synthetic" and synthetic.n_queries == len(ADAPTER_TEXTS)
    assert retriever.index.settings == synthetic.settings
    with pytest.raises(ValueError, match="both queries and relevant"):
        retriever.calibrate(ADAPTER_QUERIES)


def test_langchain_retriever_over_a_vector_store_cannot_calibrate() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.vectorstores import InMemoryVectorStore

    from exemplar_svm.langchain import ExemplarSVMRetriever

    embeddings = _word_embeddings()
    store = InMemoryVectorStore.from_texts(list(ADAPTER_TEXTS.values()), embeddings)
    retriever = ExemplarSVMRetriever.from_vectorstore(store, embeddings)
    assert retriever.invoke("cats purr")  # None fields reach the StoreIndex as defaults
    with pytest.raises(ValueError, match="in-memory ExemplarIndex"):
        retriever.calibrate()


def test_llama_index_retriever_calibrates_persists_and_filters(tmp_path: Path) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    from exemplar_svm.llama_index import ExemplarSVMRetriever

    nodes = [
        TextNode(id_=item, text=text, metadata={"topic": item.split("-")[0]})
        for item, text in ADAPTER_TEXTS.items()
    ]
    embedder = WordEmbedder()
    retriever = ExemplarSVMRetriever.from_defaults(
        nodes=nodes, embed_model=embedder, similarity_top_k=3
    )
    assert (retriever.mode, retriever.C, retriever.negative_weight) == (None, None, None)
    result = retriever.calibrate(ADAPTER_QUERIES, ADAPTER_RELEVANT, candidates=PAIR)
    assert result.n_queries == 3 and retriever.index.settings == PAIR[result.chosen]

    # Settings that are easy to recognise: kNN scores are the cosine similarities.
    retriever.index.settings = {"mode": "knn"}
    results = retriever.retrieve("a cat that purrs")
    assert all(r.score == pytest.approx(r.node.metadata["similarity"], rel=1e-5) for r in results)
    # A filtered search ranks the matching nodes with the index's settings too.
    cats = MetadataFilters(filters=[MetadataFilter(key="topic", value="cats")])
    filtered = retriever.retrieve_with_examples("a cat that purrs", filters=cats)
    assert {r.node.node_id for r in filtered} == {"cats-0", "cats-1", "cats-2"}
    assert all(r.score == pytest.approx(r.node.metadata["similarity"], rel=1e-5) for r in filtered)

    retriever.persist(tmp_path / "saved")
    loaded = ExemplarSVMRetriever.from_persist_dir(tmp_path / "saved", embedder)
    assert loaded.index.settings == {"mode": "knn"}
    assert loaded.mode is None
    again = loaded.retrieve("a cat that purrs")
    assert [r.node.node_id for r in again] == [r.node.node_id for r in results]

    synthetic = loaded.calibrate(candidates=PAIR, max_queries=5)
    assert synthetic.source == "synthetic" and synthetic.n_queries == 5
    assert loaded.index.settings == synthetic.settings
