"""StoreIndex: the SVM through the VectorStore protocol, against the exact in-memory SVM."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from exemplar_svm import ExemplarIndex, StoreIndex
from exemplar_svm.stores import Metric, VectorStore
from tests.conftest import corpus_embeddings, query_embeddings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from solver import clustered

SVM = {"mode": "svm", "C": 0.1, "feedback": 0}
OPTIONS: list[dict[str, Any]] = [
    SVM,
    {},
    {"mode": "knn"},
    {"prior": 1.0, "prior_direction": "contrast"},
    {"hard_negatives": 5, "hard_negative_weight": 2.0},
    {"mode": "svm", "positives": ["3"], "negatives": ["5", "9"]},
    {"positives": [np.ones(384)], "negatives": ["11"], "rocchio": 0.5},
    # The default without positives is PRF, with them the PRF + SVM hybrid.
    {"mode": "prf", "feedback_threshold": 0.0, "feedback": 10},
    {"mode": "prf", "negatives": ["5", "9"], "demote": 3.0},
    {"positives": ["3"]},
    {"mode": "hybrid", "prf_weight": 0.0, "negatives": ["5"]},
    {"mode": "knn", "negatives": ["5"], "rocchio": 1.0},
    {"mode": "svm", "feedback": 20, "feedback_threshold": 2.0},
]


class ArrayStore:
    """A plain numpy store with a chosen metric and raw (maybe unnormalised) vectors.

    It records its calls, so tests can see which ones a search needed.
    """

    def __init__(self, vectors: NDArray[Any], metric: Metric = "cosine") -> None:
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.ids = [f"doc-{i}" for i in range(len(vectors))]
        self.metric: Metric = metric
        self.calls: list[str] = []

    def count(self) -> int:
        return len(self.ids)

    def _order(self, vector: NDArray[np.float32], k: int) -> NDArray[np.intp]:
        if self.metric == "cosine":
            norms = np.linalg.norm(self.vectors, axis=1)
            scores = self.vectors @ vector / norms
        elif self.metric == "ip":
            scores = self.vectors @ vector
        else:
            scores = -np.linalg.norm(self.vectors - vector, axis=1)
        return np.argsort(-scores, kind="stable")[:k]

    def nearest(self, vector: NDArray[np.float32], k: int) -> tuple[list[str], NDArray[np.float32]]:
        self.calls.append("nearest")
        rows = self._order(vector, k)
        return [self.ids[row] for row in rows], self.vectors[rows]

    def search_by_vector(self, vector: NDArray[np.float32], k: int) -> list[str]:
        self.calls.append("search_by_vector")
        return [self.ids[row] for row in self._order(vector, k)]

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        self.calls.append("sample")
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(self.ids), min(size, len(self.ids)), replace=False))
        return [self.ids[row] for row in rows], self.vectors[rows]

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append("fetch")
        rows = [self.ids.index(item) for item in ids]
        return self.vectors[rows]


@pytest.fixture(scope="module")
def cranfield() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    return corpus_embeddings("cranfield"), query_embeddings("cranfield")


def test_protocol_is_met_by_the_in_memory_index_and_a_custom_store() -> None:
    assert isinstance(ExemplarIndex(np.eye(3)), VectorStore)
    assert isinstance(ArrayStore(np.eye(3)), VectorStore)
    with pytest.raises(TypeError, match="not a VectorStore"):
        StoreIndex(np.eye(3))  # type: ignore[arg-type]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_whole_store_background_equals_the_exact_search(
    cranfield: tuple[NDArray[np.float32], NDArray[np.float32]], options: dict[str, Any]
) -> None:
    corpus, queries = cranfield
    index = ExemplarIndex(corpus)
    through_store = StoreIndex(index, background=len(corpus))
    for query in queries[:8]:
        expected = index.search(query, 10, **options)
        got = through_store.search(query, 10, **options)
        assert [hit.id for hit in got] == [hit.id for hit in expected]
        np.testing.assert_allclose(
            [hit.score for hit in got], [hit.score for hit in expected], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            [hit.similarity for hit in got], [hit.similarity for hit in expected], atol=1e-5
        )


def test_sampled_background_matches_the_exact_svm_on_clustered_data() -> None:
    corpus = clustered(20_000, 64, 0.5, seed=3)
    index = ExemplarIndex(corpus)
    through_store = StoreIndex(index, background=1000, candidates=128, max_candidates=2048)
    overlaps = []
    for options in (SVM, {}):
        for row in range(0, 20_000, 2000):
            exact = {hit.id for hit in index.search(corpus[row], 10, **options)}
            got = {hit.id for hit in through_store.search(corpus[row], 10, **options)}
            overlaps.append(len(exact & got) / 10)
    assert np.mean(overlaps) >= 0.9
    # Ranking the store by a random direction instead would share almost nothing.
    assert through_store.background == 1000 and len(through_store.background_ids) == 1000


def test_results_come_from_the_whole_store_not_only_the_fetched_documents() -> None:
    # The query's neighbourhood is fetched, but the SVM's best documents lie elsewhere: the
    # store must be asked to rank the collection by the model.
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(3000, 32))
    store = ArrayStore(corpus)
    index = StoreIndex(store, background=300, candidates=5, max_candidates=0)
    exact = ExemplarIndex(corpus, ids=store.ids)
    query = corpus[0] + corpus[1]
    got = [hit.id for hit in index.search(query, 10, mode="svm", C=1.0, feedback=0)]
    expected = [hit.id for hit in exact.search(query, 10, mode="svm", C=1.0, feedback=0)]
    # A rough model (no margin documents fetched, a small background), but ranked over the store.
    assert len(set(got) & set(expected)) >= 4
    assert "search_by_vector" in store.calls
    known = {hit.id for hit in exact.search(query, 5, mode="knn")} | set(index.background_ids)
    assert set(got) - known, "every hit was fetched or sampled: the store ranked nothing"


def test_a_background_covering_the_store_needs_no_last_query() -> None:
    # Every document is in the problem with its own weight: the candidates hold the top k.
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(3000, 32))
    store = ArrayStore(corpus)
    index = StoreIndex(store, background=3000, candidates=5, max_candidates=0)
    exact = ExemplarIndex(corpus, ids=store.ids)
    query = corpus[0] + corpus[1]
    got = index.search(query, 10, mode="svm", C=1.0, feedback=0)
    expected = exact.search(query, 10, mode="svm", C=1.0, feedback=0)
    assert [hit.id for hit in got] == [hit.id for hit in expected]
    assert "search_by_vector" not in store.calls


# The default ("auto" without positives: PRF) trains no model, so it never needs the last query;
# the hybrid (the default with positives) does. At the default C=0.003 the margin holds most of
# this 20k store, so max_candidates are fetched and too little background is left unfetched to
# estimate anything: a larger C keeps the estimate in play.
@pytest.mark.parametrize("options", [SVM, {"mode": "hybrid", "C": 0.1}], ids=["svm", "hybrid"])
def test_an_estimated_skip_keeps_the_proven_ranking(options: dict[str, Any]) -> None:
    # Clustered embeddings at 10x the background: in 384 dimensions no bound over the sphere
    # proves the top 10, but the background's tail says when the fetched documents hold it.
    corpus = clustered(20_000, 384, 0.2, seed=4)
    estimated = ArrayStore(corpus)
    proven = ArrayStore(corpus)
    fast = StoreIndex(estimated, background=2000, skip_when="estimated")
    slow = StoreIndex(proven, background=2000, skip_when="proven")
    agree = []
    for row in range(0, 20_000, 2000):
        got = [hit.id for hit in fast.search(corpus[row], 10, **options)]
        expected = [hit.id for hit in slow.search(corpus[row], 10, **options)]
        agree.append(len(set(got) & set(expected)) / 10)
    assert np.mean(agree) >= 0.98
    assert estimated.calls.count("search_by_vector") < proven.calls.count("search_by_vector")


def test_fetched_documents_that_prove_the_top_k_skip_the_last_store_query() -> None:
    corpus = clustered(5000, 32, 0.3, seed=1)
    store = ArrayStore(corpus)
    index = StoreIndex(store, background=500)
    store.calls.clear()
    index.search(corpus[10], 10, mode="svm", C=0.1, feedback=0)
    # A wide fetch around the query: its top 10 is provably the store's top 10.
    assert store.calls.count("nearest") >= 1 and "search_by_vector" not in store.calls


def test_knn_mode_asks_the_store_once() -> None:
    corpus = clustered(2000, 16, 0.3)
    store = ArrayStore(corpus)
    index = StoreIndex(store, background=100)
    index.search(corpus[0], 5, mode="knn")
    store.calls.clear()
    hits = index.search(corpus[0], 5, mode="knn")
    assert store.calls == ["nearest"]
    assert hits[0].id == "doc-0" and hits[0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_unnormalised_vectors_in_an_ip_or_l2_store_are_refused(metric: Metric) -> None:
    corpus = np.random.default_rng(0).normal(size=(200, 8)) * 3
    index = StoreIndex(ArrayStore(corpus, metric))
    with pytest.raises(ValueError, match=r"not unit-normalised.*cosine"):
        index.search(corpus[0], 5)


@pytest.mark.parametrize("mode", ["svm", "prf", "knn"])
def test_one_unnormalised_vector_outside_the_sample_is_refused_when_read(mode: str) -> None:
    """The check is on every vector a search reads, not only the background sample: one
    vector of norm 2 among 5000, not sampled, is refused once a search reaches it."""
    corpus = clustered(5000, 16, 0.3)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    store = ArrayStore(corpus, "ip")
    index = StoreIndex(store, background=50)
    sampled = {int(item.split("-")[1]) for item in index.background_ids}
    row = next(row for row in range(5000) if row not in sampled)
    store.vectors[row] *= 2.0
    with pytest.raises(ValueError, match=r"not unit-normalised"):
        index.search(corpus[row], 5, mode=mode)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_every_metric_ranks_like_the_svm_on_normalised_or_cosine_vectors(metric: Metric) -> None:
    corpus = clustered(1500, 16, 0.4, seed=2)
    raw = corpus * (np.arange(1, 1501)[:, None] if metric == "cosine" else 1)
    index = StoreIndex(ArrayStore(raw, metric), background=1500)
    exact = ExemplarIndex(corpus, ids=[f"doc-{i}" for i in range(1500)])
    for row in (0, 700):
        got = index.search(corpus[row], 10, **SVM)
        assert [hit.id for hit in got] == [hit.id for hit in exact.search(corpus[row], 10, **SVM)]


def test_named_examples_are_left_out_and_checked() -> None:
    corpus = clustered(800, 16, 0.3)
    index = StoreIndex(ExemplarIndex(corpus), background=200)
    hits = index.search(corpus[0], 20, positives=["0", "1"], negatives="2")
    assert not {"0", "1", "2"} & {hit.id for hit in hits}
    with pytest.raises(ValueError, match="both as a positive and a negative"):
        index.search(corpus[0], 5, positives=["4"], negatives=["4"])
    with pytest.raises(ValueError, match="unknown id 'nope'"):
        index.search(corpus[0], 5, negatives=["nope"])
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.search(np.ones(3), 5)
    with pytest.raises(ValueError, match="C must be a positive"):
        index.search(corpus[0], 5, C=0)
    with pytest.raises(ValueError, match="mode 'lda' whitens with the covariance of the whole"):
        index.search(corpus[0], 5, mode="lda")


def test_small_stores_and_large_k() -> None:
    one = StoreIndex(ExemplarIndex(np.ones((1, 4))))
    assert [hit.id for hit in one.search(np.ones(4), 5, **SVM)] == ["0"]
    assert one.search(np.ones(4), 5, negatives=["0"]) == []
    two = StoreIndex(ExemplarIndex(np.eye(2)))
    assert [hit.id for hit in two.search([1.0, 0.1], 10)] == ["0", "1"]


def test_searches_are_deterministic_and_the_background_is_cached() -> None:
    corpus = clustered(5000, 32, 0.6, seed=5)
    store = ArrayStore(corpus)
    index = StoreIndex(store, background=300, candidates=32, max_candidates=256)
    first = [(hit.id, hit.score) for hit in index.search(corpus[3], 10)]
    second = [
        (hit.id, hit.score)
        for hit in StoreIndex(store, background=300, candidates=32, max_candidates=256).search(
            corpus[3], 10
        )
    ]
    assert first == second
    assert store.calls.count("sample") == 2
    index.search(corpus[4], 10)
    assert store.calls.count("sample") == 2
    index.refresh_background()
    assert store.calls.count("sample") == 3


def test_bad_settings_are_refused() -> None:
    store = ExemplarIndex(np.eye(3))
    with pytest.raises(ValueError, match="background"):
        StoreIndex(store, background=-1)
    with pytest.raises(ValueError, match="k must be"):
        StoreIndex(store, candidates=0)
    with pytest.raises(ValueError, match="skip_when must be one of 'estimated', 'proven'"):
        StoreIndex(store, skip_when="maybe")  # type: ignore[arg-type]


def test_concurrent_searches_restore_the_blas_threads() -> None:
    # Searches run numpy's BLAS on one thread (the store scans on the same cores); however
    # they overlap, the last one out restores the setting.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from concurrent.futures import ThreadPoolExecutor

    def blas_threads() -> list[int]:
        return [
            entry["num_threads"]
            for entry in threadpoolctl.threadpool_info()
            if entry["user_api"] == "blas"
        ]

    corpus = clustered(3000, 32, 0.3, seed=6)
    index = StoreIndex(ArrayStore(corpus), background=500)
    before = blas_threads()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        limited = blas_threads()
        with ThreadPoolExecutor(4) as workers:
            results = list(workers.map(lambda row: index.search(corpus[row], 5), range(12)))
        assert blas_threads() == limited
    assert blas_threads() == before
    assert [hits[0].id for hits in results[:3]] == ["doc-0", "doc-1", "doc-2"]


# -- PRF (the default without positives) and the named negatives' demotion ---------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"mode": "prf", "feedback_threshold": 0.0}, "positives"],
    ids=["default-prf", "prf-fixed", "default-with-positives"],
)
def test_sampled_background_matches_the_exact_prf_and_auto(options: Any) -> None:
    # PRF reads the background only for the z-scores that choose the feedback documents: a
    # sample of 1000 estimates them well enough to keep the top 10 of the whole corpus.
    corpus = clustered(20_000, 64, 0.5, seed=3)
    index = ExemplarIndex(corpus)
    through_store = StoreIndex(index, background=1000, candidates=128, max_candidates=2048)
    overlaps = []
    for row in range(0, 20_000, 2000):
        arguments = {"positives": [str(row + 1)]} if options == "positives" else options
        exact = {hit.id for hit in index.search(corpus[row], 10, **arguments)}
        got = {hit.id for hit in through_store.search(corpus[row], 10, **arguments)}
        overlaps.append(len(exact & got) / 10)
    assert np.mean(overlaps) >= 0.9


def test_prf_asks_the_store_twice_and_knn_once() -> None:
    corpus = clustered(2000, 16, 0.3)
    store = ArrayStore(corpus)
    index = StoreIndex(store, background=100)
    index.search(corpus[0], 5)  # draws the background
    store.calls.clear()
    hits = index.search(corpus[0], 5)  # "auto" without positives: PRF
    # The neighbours of the query (the feedback), then those of the moved query.
    assert store.calls == ["nearest", "nearest"]
    assert hits[0].id == "doc-0"
    store.calls.clear()
    index.search(corpus[0], 5, prf_weight=0.0)  # PRF that does not move is kNN
    assert store.calls == ["nearest"]


@pytest.mark.parametrize("mode", ["knn", "prf", "svm", "hybrid"])
def test_demotion_equals_the_exact_search_and_never_raises_a_score(mode: str) -> None:
    # Named negatives among the query's nearest documents demote much of its neighbourhood;
    # the store is asked for more documents until the demoted ones cannot hide a hit.
    corpus = clustered(3000, 32, 0.3, seed=8)
    store = ArrayStore(corpus)
    exact = ExemplarIndex(corpus, ids=store.ids)
    index = StoreIndex(store, background=3000)
    asked, lowered = [], 0
    for row in (0, 500, 1000):
        near = [hit.id for hit in exact.search(corpus[row], 12, mode="knn")]
        options: dict[str, Any] = {"mode": mode, "negatives": near[1:4]}
        undemoted = {
            hit.id: hit.score for hit in exact.search(corpus[row], 3000, **options, demote=0.0)
        }
        for demote in (1.0, 5.0):
            store.calls.clear()
            got = index.search(corpus[row], 10, **options, demote=demote)
            asked.append(store.calls.count("nearest"))
            expected = exact.search(corpus[row], 10, **options, demote=demote)
            assert [hit.id for hit in got] == [hit.id for hit in expected]
            np.testing.assert_allclose(
                [hit.score for hit in got], [hit.score for hit in expected], rtol=1e-4, atol=1e-5
            )
            # (up to the float32 rounding of scores computed over different rows)
            assert all(hit.score <= undemoted[hit.id] + 1e-5 for hit in got)
            lowered += sum(hit.score < undemoted[hit.id] - 1e-3 for hit in got)
    assert lowered  # some hits were demoted and stayed hits
    if mode in ("knn", "prf"):
        # At least one search needed more than its first fetch (knn asks once, PRF twice).
        assert max(asked) > (1 if mode == "knn" else 2)


@pytest.mark.parametrize("mode", ["auto", "prf", "knn", "svm", "hybrid"])
def test_demotion_pushes_a_near_copy_of_a_named_negative_out_of_the_top_k(mode: str) -> None:
    corpus = clustered(5000, 32, 0.3, seed=9)
    neighbour = int(np.argsort(-(corpus @ corpus[0]))[3])
    copy = corpus[neighbour] + 1e-3 * np.random.default_rng(0).normal(size=32)
    store = ArrayStore(np.vstack([corpus, copy]))
    index = StoreIndex(store, background=500)  # sampled: the scale of the demotion estimated
    options: dict[str, Any] = {"mode": mode, "C": 0.1}
    assert "doc-5000" in {hit.id for hit in index.search(corpus[0], 10, **options)}
    negatives = [f"doc-{neighbour}"]
    # demote=1: one standard deviation of cosine to the negative costs one of score.
    demoted = index.search(corpus[0], 10, **options, negatives=negatives, demote=1.0)
    assert "doc-5000" not in {hit.id for hit in demoted} and len(demoted) == 10
    if mode in ("prf", "knn"):
        # Without demotion a named negative changes nothing in kNN and PRF (rocchio is off).
        kept = index.search(corpus[0], 10, **options, negatives=negatives, demote=0.0)
        assert "doc-5000" in {hit.id for hit in kept}
