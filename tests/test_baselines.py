"""Qdrant's recommend strategies in numpy: the formulas, parity with qdrant-client, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from exemplar_svm import ExemplarIndex
from exemplar_svm import evaluation as ev
from exemplar_svm.baselines import RECOMMEND_STRATEGIES, recommend_scores
from exemplar_svm.evaluation import FEEDBACK_METHODS, METRICS, Dataset, Query, evaluate
from exemplar_svm.index import top_k
from tests.conftest import dataset_path

EYE = np.eye(3, dtype=np.float32)


# -- the formulas, by hand ---------------------------------------------------------------------


def test_strategies_by_hand() -> None:
    positive, negative = EYE[:1], EYE[1:2]
    # cos(v, rows) with v = 2 e0 - e1, normalised.
    average = recommend_scores(EYE, positive, negative, "average_vector")
    assert average == pytest.approx([2 / math.sqrt(5), -1 / math.sqrt(5), 0.0])
    assert recommend_scores(EYE, positive, None, "average_vector") == pytest.approx([1, 0, 0])
    # s(t) = (t / (1 + |t|) + 1) / 2; a tie between the nearest positive and negative is negative.
    best = recommend_scores(EYE, positive, negative, "best_score")
    assert best == pytest.approx([0.75, -0.75, -0.5])
    assert recommend_scores(EYE, positive, negative, "sum_scores") == pytest.approx([1, -1, 0])
    assert RECOMMEND_STRATEGIES == ("average_vector", "best_score", "sum_scores")


def test_best_score_puts_every_document_nearer_a_positive_first() -> None:
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(200, 8)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives, negatives = corpus[:2], corpus[2:5]
    scores = recommend_scores(corpus, positives, negatives, "best_score")
    nearer = (corpus @ positives.T).max(axis=1) > (corpus @ negatives.T).max(axis=1)
    assert nearer.any() and (~nearer).any()
    assert scores[nearer].min() > 0 > scores[~nearer].max()
    # Negatives alone: the farther from its nearest negative, the better.
    alone = recommend_scores(corpus, [], negatives, "best_score")
    nearest = (corpus @ negatives.T).max(axis=1)
    assert np.array_equal(np.argsort(-alone, kind="stable"), np.argsort(nearest, kind="stable"))
    sums = recommend_scores(corpus, np.empty((0, 8)), negatives, "sum_scores")
    assert sums == pytest.approx(-(corpus @ negatives.T).sum(axis=1), abs=1e-6)


def test_examples_are_normalised_like_qdrant() -> None:
    positive, negative = EYE[:1], EYE[1:2]
    for strategy in RECOMMEND_STRATEGIES:
        scaled = recommend_scores(EYE, 3 * positive, 5 * negative, strategy)
        if strategy == "average_vector":
            # The raw examples are averaged, then the query is normalised: 2 * 3 e0 - 5 e1.
            assert scaled == pytest.approx([6 / math.sqrt(61), -5 / math.sqrt(61), 0.0])
        else:
            assert scaled == pytest.approx(recommend_scores(EYE, positive, negative, strategy))


def test_shapes_and_errors() -> None:
    scores = recommend_scores(EYE, EYE[:2], EYE[2:], "sum_scores")
    assert scores.shape == (3,) and scores.dtype == np.float64
    with pytest.raises(ValueError, match=r"unknown recommend strategy 'best'.*average_vector, "):
        recommend_scores(EYE, EYE[:1], None, "best")
    with pytest.raises(ValueError, match="'average_vector' strategy needs at least one positive"):
        recommend_scores(EYE, [], EYE[:1], "average_vector")
    for strategy in ("best_score", "sum_scores"):
        with pytest.raises(ValueError, match="needs at least one positive or negative"):
            recommend_scores(EYE, [], [], strategy)
    with pytest.raises(ValueError, match=r"positives must be a 2-D array of 3-dimensional rows"):
        recommend_scores(EYE, np.ones((1, 4)), None, "best_score")
    with pytest.raises(ValueError, match="positives must be a 2-D"):
        recommend_scores(EYE, EYE[0], None, "best_score")  # one vector needs its own row
    with pytest.raises(ValueError, match="negatives must be finite"):
        recommend_scores(EYE, EYE[:1], [[np.nan, 0, 0]], "best_score")
    with pytest.raises(ValueError, match="vectors must be a 2-D array"):
        recommend_scores(EYE[0], EYE[:1], None, "best_score")


# -- parity with qdrant-client's own implementation (local mode) -------------------------------

#: Scores closer than this count as one tie: Qdrant scores in float32 and breaks ties its own
#: way (local mode: the reverse of an unstable argsort), we break them to the lower row.
TIE = 1e-5


def assert_same_ranking(ours: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> int:
    """Qdrant's hits ``ids``/``scores`` against our scores of every row; returns the ties."""
    top = top_k(ours, np.ones(len(ours), dtype=bool), len(ids))
    assert np.all(np.diff(scores) <= 1e-7), "Qdrant's hits are best first"
    np.testing.assert_allclose(ours[ids], scores, rtol=0, atol=TIE)  # each hit, scored alike
    np.testing.assert_allclose(ours[top], scores, rtol=0, atol=TIE)  # rank by rank
    # The same documents rank by rank, but for the order within a tie; the last tie may go on
    # past the cutoff, so only its scores are compared.
    groups = np.split(np.arange(len(ids)), np.flatnonzero(np.diff(scores) < -TIE) + 1)
    for group in groups[:-1]:
        assert set(top[group]) == set(ids[group])
    return sum(len(group) for group in groups if len(group) > 1)


@pytest.mark.dev
def test_parity_with_qdrant_local_mode() -> None:
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    dataset = ev.load_dataset(dataset_path("bbc-news"), n_queries=20)
    vectors = dataset.vectors
    n, dim = vectors.shape
    client = QdrantClient(":memory:")
    try:
        client.create_collection(
            "bbc", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )
        client.upload_collection("bbc", vectors=vectors, ids=list(range(n)))
        labels = np.array(dataset.labels)
        row = {doc: r for r, doc in enumerate(dataset.ids)}
        rng = np.random.default_rng(0)
        compared = ties = 0
        for query in dataset.queries:
            r = row[query.id]
            same = np.flatnonzero((labels == labels[r]) & (np.arange(n) != r))
            positives = np.vstack([query.vector, vectors[rng.choice(same, 3, replace=False)]])
            negatives = vectors[rng.choice(np.flatnonzero(labels != labels[r]), 3, replace=False)]
            for strategy in RECOMMEND_STRATEGIES:
                cases = [(positives, negatives)]
                if strategy != "average_vector":
                    cases.append((positives[:0], negatives))  # negatives alone
                for pos, neg in cases:
                    hits = client.query_points(
                        "bbc",
                        query=models.RecommendQuery(
                            recommend=models.RecommendInput(
                                positive=pos.tolist(), negative=neg.tolist(), strategy=strategy
                            )
                        ),
                        limit=20,
                    ).points
                    ids = np.array([hit.id for hit in hits])
                    scores = np.array([hit.score for hit in hits])
                    assert len(ids) == 20
                    ours = recommend_scores(vectors, pos, neg, strategy)
                    ties += assert_same_ranking(ours, ids, scores)
                    compared += len(ids)
        assert compared == 20 * 20 * 5
        assert ties < compared / 4  # duplicates in bbc-news, and the examples themselves
    finally:
        client.close()


# -- in the evaluation tool --------------------------------------------------------------------


def clusters(sizes: dict[str, int], seed: int = 0, dim: int = 16) -> Dataset:
    """A query-by-example dataset of tight, labelled clusters; every document is a query."""
    rng = np.random.default_rng(seed)
    centres = {label: rng.normal(size=dim) for label in sizes}
    labels = [label for label, size in sizes.items() for _ in range(size)]
    vectors = np.array([centres[label] + 0.3 * rng.normal(size=dim) for label in labels])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"d{row}" for row in range(len(labels))]
    queries = [
        Query(
            id=doc,
            vector=vectors[row],
            relevant={
                other: 1.0
                for other, lab in zip(ids, labels, strict=True)
                if lab == label and other != doc
            },
            document=doc,
        )
        for row, (doc, label) in enumerate(zip(ids, labels, strict=True))
    ]
    return Dataset("toy", "example", ids, vectors, queries, labels)


def test_evaluate_runs_the_qdrant_baselines() -> None:
    dataset = clusters({"a": 12, "b": 10, "c": 20})
    methods = {"knn": {"mode": "knn"}} | {
        f"qdrant {strategy}": {"baseline": strategy} for strategy in RECOMMEND_STRATEGIES
    }
    report = evaluate(dataset, methods, protocol="feedback")
    for name in methods:
        result = report.methods[name]
        assert all(np.isfinite(result.scores[metric]).all() for metric in METRICS)
        assert result.mean["nDCG@10"] > 0.5
    assert report.methods["qdrant best_score"].options == {"baseline": "best_score"}
    # The query alone: each strategy ranks by cosine to the query, as kNN does.
    alone = evaluate(dataset, methods)
    for name in methods:
        for metric in METRICS:
            assert np.array_equal(
                alone.methods[name].scores[metric], alone.methods["knn"].scores[metric]
            )


def test_a_baseline_ranks_the_query_and_positives_against_the_negatives() -> None:
    dataset = clusters({"a": 8, "b": 8})
    index = ExemplarIndex(dataset.vectors, dataset.ids)
    task = ev._Task(
        dataset.vectors[0],
        {"d4": 1.0},
        ["d1", "d2"],
        ["d9", "d10"],
        frozenset({"d0", "d1", "d2", "d9", "d10"}),
    )
    for strategy in RECOMMEND_STRATEGIES:
        ranking = ev._search(index, task, 5, {"baseline": strategy})
        scores = recommend_scores(
            dataset.vectors, dataset.vectors[[0, 1, 2]], dataset.vectors[[9, 10]], strategy
        )
        allowed = np.ones(len(scores), dtype=bool)
        allowed[[0, 1, 2, 9, 10]] = False
        assert ranking == [dataset.ids[row] for row in top_k(scores, allowed, 5)]


def test_evaluate_refuses_bad_baselines() -> None:
    dataset = clusters({"a": 6, "b": 6})
    knn = {"knn": {"mode": "knn"}}
    with pytest.raises(
        ValueError, match=r"method 'x': unknown baseline 'x'; choose one of average_vector, "
    ):
        evaluate(dataset, knn | {"x": {"baseline": "x"}}, protocol="feedback")
    with pytest.raises(ValueError, match=r"a baseline takes no search options.*sets mode"):
        evaluate(dataset, knn | {"q": {"baseline": "best_score", "mode": "svm"}})


def test_feedback_methods_include_the_vector_database_baselines() -> None:
    names = list(FEEDBACK_METHODS)
    assert names[0] == "knn" and names[-1] == "default"
    assert FEEDBACK_METHODS["rocchio 0.25"] == {"mode": "knn", "rocchio": 0.25, "demote": 0.0}
    for strategy in RECOMMEND_STRATEGIES:
        assert FEEDBACK_METHODS[f"qdrant {strategy}"] == {"baseline": strategy}
