"""fit() solves scikit-learn's LinearSVC problem exactly, on real and synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from exemplar_svm import LinearModel, fit
from exemplar_svm.svm import objective, sample_costs
from tests.conftest import corpus_embeddings, query_embeddings


def clustered(n: int, d: int, seed: int = 0, clusters: int = 8) -> np.ndarray:
    """Unit vectors in clusters around a strong shared direction, like real embeddings."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=d)
    centres = shared + 0.8 * rng.normal(size=(clusters, d))
    rows = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, d))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def reference(pos, neg, C, weights=None) -> LinearModel:
    """The notebook's LinearSVC, fitted with the same labels and sample weights."""
    X = np.vstack([pos, neg]).astype(np.float64)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    sw = None if weights is None else np.r_[np.ones(len(pos)), weights]
    svc = LinearSVC(C=C, class_weight="balanced", tol=1e-6, max_iter=10000, dual=False)
    svc.fit(X, y, sample_weight=sw)
    return LinearModel(coef=svc.coef_.ravel(), intercept=float(svc.intercept_[0]))


def gradient(model: LinearModel, pos, neg, C, weights=None) -> np.ndarray:
    """Gradient of the primal objective in (w, b); zero exactly at the optimum."""
    pos_cost, neg_cost = sample_costs(len(pos), np.ones(len(neg)) if weights is None else weights)
    X = np.vstack([pos, neg]).astype(np.float64)
    y = np.r_[np.ones(len(pos)), -np.ones(len(neg))]
    cost = np.r_[pos_cost, neg_cost]
    slack = np.maximum(0.0, 1.0 - y * (X @ model.coef + model.intercept))
    coeff = -2.0 * C * cost * slack * y
    return np.r_[model.coef + X.T @ coeff, model.intercept + coeff.sum()]


def assert_same_solution(pos, neg, C, weights=None) -> None:
    ours = fit(pos, neg, C=C, negative_weights=weights)
    ref = reference(pos, neg, C, weights)
    ours_obj = objective(ours, pos, neg, C=C, negative_weights=weights)
    ref_obj = objective(ref, pos, neg, C=C, negative_weights=weights)
    assert abs(ours_obj - ref_obj) <= 1e-6 * abs(ref_obj)
    # Independent of scikit-learn: the gradient vanishes, so this is the unique optimum.
    zero = LinearModel(coef=np.zeros(pos.shape[1]), intercept=0.0)
    grad = np.linalg.norm(gradient(ours, pos, neg, C, weights))
    # (An absolute floor: when w = 0 is optimal, the gradient at zero vanishes too.)
    assert grad <= 1e-4 * max(np.linalg.norm(gradient(zero, pos, neg, C, weights)), 1e-3)
    rows = np.vstack([pos, neg])
    ref_scores = ref.decision_function(rows)
    ours_top = np.argsort(-ours.decision_function(rows), kind="stable")[:10]
    ref_top = np.argsort(-ref_scores, kind="stable")[:10]
    # The same top 10; documents the reference scores equally (ties) may swap places.
    np.testing.assert_allclose(ref_scores[ours_top], ref_scores[ref_top], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["cranfield", "msmarco-dl19-subset"])
@pytest.mark.parametrize("C", [0.01, 0.1, 1.0])
def test_matches_liblinear_on_real_text_queries(name: str, C: float) -> None:
    corpus = corpus_embeddings(name)
    queries = query_embeddings(name)
    for query in queries[:3]:
        assert_same_solution(query[np.newaxis], corpus, C)


def test_matches_liblinear_on_real_documents_as_queries() -> None:
    corpus = corpus_embeddings("bbc-news")
    for row in (0, 500, 1500):
        rest = np.delete(corpus, row, axis=0)
        assert_same_solution(corpus[row : row + 1], rest, 0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_liblinear_on_clustered_synthetic_data(seed: int) -> None:
    data = clustered(3000, 64, seed=seed)
    assert_same_solution(data[:1], data[1:], 0.1)


def test_several_positives_and_weighted_negatives() -> None:
    data = clustered(1500, 32, seed=3)
    weights = np.ones(1497)
    weights[:20] = 10.0
    assert_same_solution(data[:3], data[3:], 0.1, weights)


def test_dimension_larger_than_corpus() -> None:
    data = clustered(40, 128, seed=4)
    assert_same_solution(data[:1], data[1:], 0.1)


def test_the_query_ranks_first_and_objective_is_a_minimum() -> None:
    data = clustered(500, 16, seed=5)
    model = fit(data[0], data[1:])
    assert np.argmax(model.decision_function(data)) == 0
    best = objective(model, data[0], data[1:])
    nudged = LinearModel(coef=model.coef * 1.01, intercept=model.intercept)
    assert objective(nudged, data[0], data[1:]) > best


def test_deterministic() -> None:
    data = clustered(800, 24, seed=6)
    first, second = fit(data[0], data[1:]), fit(data[0], data[1:])
    np.testing.assert_array_equal(first.coef, second.coef)
    assert first.intercept == second.intercept


def test_decision_function_scores_float32_in_blocks_like_float64() -> None:
    data = clustered(20_000, 8, seed=7)
    model = fit(data[0], data[1:200])
    expected = data.astype(np.float64) @ model.coef + model.intercept
    np.testing.assert_allclose(model.decision_function(data), expected, rtol=0, atol=1e-12)
    assert model.decision_function(data[0]).shape == (1,)
    with pytest.raises(ValueError, match="dimension mismatch"):
        model.decision_function(np.ones((2, 9)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"negatives": np.empty((0, 4))}, "negatives is empty"),
        ({"negatives": np.ones((3, 5))}, "dimension mismatch"),
        ({"positives": [[np.nan, 1, 1, 1]]}, "NaN or infinite"),
        ({"negatives": [[1, 1, np.inf, 1]]}, "NaN or infinite"),
        ({"C": 0}, "C must be a positive"),
        ({"C": float("nan")}, "C must be a finite number > 0"),
        ({"negative_weights": [1.0, 2.0]}, "negative_weights has 2 entries"),
        ({"negative_weights": [1.0, -1.0, 1.0]}, "must all be positive"),
        ({"positives": [["a", "b", "c", "d"]]}, "positives must be numeric"),
    ],
)
def test_bad_input(kwargs: dict, message: str) -> None:
    args = {"positives": np.ones((1, 4)), "negatives": np.eye(4)[:3]} | kwargs
    with pytest.raises(ValueError, match=message):
        fit(**args)


def _degenerate_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = clustered(400, 16, seed=9)
    duplicates = np.vstack([data[1:], np.repeat(data[:1], 5, axis=0)])
    identical = np.repeat(data[1:2], 50, axis=0)
    return {
        "query duplicated in the corpus": (data[:1], duplicates),
        "corpus of one document": (data[:1], data[1:2]),
        "corpus of two documents": (data[:1], data[1:3]),
        "all documents identical": (data[:1], identical),
        "query identical to every document": (data[1:2], identical),
        "several positives": (data[:4], data[4:]),
        "d larger than n": (clustered(1, 300, seed=1), clustered(20, 300, seed=2)),
    }


@pytest.mark.parametrize("case", list(_degenerate_cases()))
def test_degenerate_cases_match_liblinear(case: str) -> None:
    pos, neg = _degenerate_cases()[case]
    assert_same_solution(pos, neg, 0.1)


def test_large_working_sets_use_the_corpus_in_place() -> None:
    # At C=0.01 most rows are support vectors: the solver must not gather them all.
    corpus = clustered(3000, 32, seed=10)
    assert_same_solution(corpus[:1], corpus[1:], 0.01)


def test_a_full_memory_budget_shrinks_the_working_set_and_stays_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for fewer rows than the support vectors need: members well inside the margin must
    # make way for violators, round after round, and the result must still be the optimum.
    from exemplar_svm import _solver

    monkeypatch.setattr(_solver, "_gather_limit", lambda n, d, share: 700)
    corpus = corpus_embeddings("cranfield")
    query = query_embeddings("cranfield")[0]
    weights = np.ones(len(corpus))
    coef, intercept, _scores, info = _solver.solve(
        query[np.newaxis].astype(np.float64),
        _solver.as_corpus(corpus),
        weights,
        np.empty((0, corpus.shape[1])),
        np.empty(0),
        0.1,
    )
    assert info.rounds > 1 and info.working_set <= 700 < len(corpus)
    ours = LinearModel(coef, intercept)
    ref = reference(query[np.newaxis], corpus, 0.1)
    ours_obj = objective(ours, query[np.newaxis], corpus)
    ref_obj = objective(ref, query[np.newaxis], corpus)
    assert abs(ours_obj - ref_obj) <= 1e-6 * ref_obj


@pytest.mark.parametrize(
    ("rows", "C", "gathered"),
    [(20_000, 0.1, True), (2000, 0.1, False)],
    ids=["working set gathered", "whole corpus in place"],
)
def test_solver_reports_what_it_did(rows: int, C: float, gathered: bool) -> None:
    from exemplar_svm._solver import as_corpus, solve

    corpus = clustered(rows, 32, seed=11)
    weights = np.ones(len(corpus))
    weights[0] = 0.0  # the query's own row is left out
    coef, intercept, scores, info = solve(
        corpus[:1].astype(np.float64),
        as_corpus(corpus),
        weights,
        np.empty((0, 32)),
        np.empty(0),
        C,
    )
    assert info.rounds >= 1 and info.support_vectors <= info.working_set
    # Each restricted solve computes one exact gradient more than the directions it adds.
    assert len(info.gradients) == info.directions + info.rounds
    assert info.gradients[-1] < info.gradients[0]
    if gathered:  # a seed pass, then one pass per round to verify (and score)
        assert info.passes == info.rounds + 1 and info.working_set < len(corpus) - 1
    else:  # a seed pass, a gradient per subspace and the outputs of each new direction
        assert info.passes == 2 + 2 * info.directions and info.working_set == len(corpus) - 1
    np.testing.assert_allclose(scores, corpus @ coef + intercept, rtol=1e-4, atol=1e-4)
    ref = reference(corpus[:1], corpus[1:], C)
    ours = LinearModel(coef, intercept)
    assert abs(
        objective(ours, corpus[:1], corpus[1:]) - objective(ref, corpus[:1], corpus[1:])
    ) <= 1e-6 * objective(ref, corpus[:1], corpus[1:])


@pytest.mark.parametrize("C", [0.01, 0.1])
def test_float32_passes_with_corpus_statistics_match_liblinear(C: float) -> None:
    # Over 2**20 entries the passes run in float32, and with an index's statistics the seed is
    # whitened and the subspace starts with the principal axes: still the same optimum.
    from exemplar_svm._solver import CorpusStats, as_corpus, solve

    data = clustered(3001, 400, seed=21)
    query, corpus = data[:1].astype(np.float64), as_corpus(data[1:])
    stats = CorpusStats.of(corpus)
    coef, intercept, scores, _ = solve(
        query, corpus, np.ones(3000), np.empty((0, 400)), np.empty(0), C, stats=stats
    )
    assert stats.axes(corpus)[1].shape == (3000, 8)
    ours = LinearModel(coef, intercept)
    ref = reference(query, corpus, C)
    ref_obj = objective(ref, query, corpus, C=C)
    assert abs(objective(ours, query, corpus, C=C) - ref_obj) <= 1e-6 * ref_obj
    ref_scores = ref.decision_function(corpus)
    top = np.argsort(-scores, kind="stable")[:10]
    np.testing.assert_allclose(ref_scores[top], np.sort(ref_scores)[::-1][:10], rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)


def test_principal_axes_and_their_outputs() -> None:
    from exemplar_svm._solver import CorpusStats, as_corpus

    corpus = as_corpus(clustered(500, 40, seed=22))
    stats = CorpusStats.of(corpus)
    axes, projection = stats.axes(corpus)
    assert axes.shape == (40, 8)
    np.testing.assert_allclose(axes.T @ axes, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(projection, corpus.astype(np.float64) @ axes, atol=1e-12)
    # They capture about as much variance as the 8 leading eigenvectors of the covariance.
    centred = corpus.astype(np.float64) - corpus.mean(axis=0)
    top = np.linalg.eigvalsh(centred.T @ centred / len(corpus))[::-1][:8]
    assert np.var(centred @ axes, axis=0).sum() >= 0.95 * top.sum()
    # New rows: the axes are recomputed from the updated second moment on first use.
    more = as_corpus(clustered(100, 40, seed=23))
    grown = stats.extended(corpus, more)
    both = np.vstack([corpus, more])
    assert grown.axes(both)[1].shape == (600, 8)


def test_prior_center_is_the_optimum_of_the_centred_objective() -> None:
    from exemplar_svm._solver import as_corpus, solve

    corpus = clustered(1500, 24, seed=17)
    query = corpus[0].astype(np.float64)
    center = 3.0 * query / np.linalg.norm(query)
    weights = np.ones(1499)
    coef, intercept, _, _ = solve(
        query[np.newaxis],
        as_corpus(corpus[1:]),
        weights,
        np.empty((0, 24)),
        np.empty(0),
        0.1,
        center=center,
    )
    model = LinearModel(coef, intercept)
    # The gradient of 1/2 |w - center|^2 + 1/2 b^2 + loss is the plain one shifted by -center.
    grad = gradient(model, corpus[:1], corpus[1:], 0.1) - np.r_[center, 0.0]
    zero = LinearModel(center, 0.0)
    start = gradient(zero, corpus[:1], corpus[1:], 0.1) - np.r_[center, 0.0]
    assert np.linalg.norm(grad) <= 1e-4 * np.linalg.norm(start)


def test_seed_fit_on_the_top_rows_still_reaches_the_optimum(monkeypatch) -> None:
    import exemplar_svm._solver as solver

    monkeypatch.setattr(solver, "_SEED_FIT_ROWS", 64)  # far fewer than the support vectors
    corpus = clustered(3000, 32, seed=20)
    assert_same_solution(corpus[:1], corpus[1:], 0.1)
    assert_same_solution(corpus[:2], corpus[2:], 0.01)


def test_a_full_subspace_drops_old_directions_and_still_reaches_the_optimum(monkeypatch) -> None:
    import exemplar_svm._solver as solver

    monkeypatch.setattr(solver, "_GRADIENT_DIRECTIONS", 2)  # far fewer than the solve takes
    corpus = clustered(3000, 32, seed=24)
    assert_same_solution(corpus[:1], corpus[1:], 0.1)
    assert_same_solution(corpus[:2], corpus[2:], 1.0)


@pytest.mark.parametrize("share", [0.0, 1.0], ids=["streamed", "only the active rows"])
def test_the_whole_path_gradient_with_or_without_reading_only_active_rows(
    monkeypatch: pytest.MonkeyPatch, share: float
) -> None:
    # The corpus in place (no room to gather), in float32: the gradient's pass either streams
    # every row or gathers only those inside the margin; both reach the optimum.
    from exemplar_svm import _solver

    monkeypatch.setattr(_solver, "_gather_limit", lambda n, d, share: 10)
    monkeypatch.setattr(_solver, "_sparse_share", lambda: share)
    corpus = corpus_embeddings("cranfield")
    query = query_embeddings("cranfield")[3][np.newaxis].astype(np.float64)
    coef, intercept, scores, info = _solver.solve(
        query, _solver.as_corpus(corpus), np.ones(len(corpus)), np.empty((0, 384)), np.empty(0), 0.1
    )
    assert info.working_set == len(corpus) and info.support_vectors < len(corpus) / 2
    ref = reference(query, corpus, 0.1)
    ref_obj = objective(ref, query, corpus)
    assert abs(objective(LinearModel(coef, intercept), query, corpus) - ref_obj) <= 1e-6 * ref_obj
    np.testing.assert_allclose(scores, ref.decision_function(corpus), rtol=0, atol=1e-5)


def test_solve_many_shares_passes_and_matches_single_solves() -> None:
    from exemplar_svm._solver import CorpusStats, as_corpus, solve, solve_many

    corpus = as_corpus(corpus_embeddings("msmarco-dl19-subset"))
    stats = CorpusStats.of(corpus)
    problems = [
        {
            "positives": query[np.newaxis].astype(np.float64),
            "corpus": corpus,
            "corpus_weights": np.ones(len(corpus)),
            "extra": np.empty((0, 384)),
            "extra_weights": np.empty(0),
            "C": C,
            "stats": stats,
        }
        for query, C in zip(
            query_embeddings("msmarco-dl19-subset")[:5], [0.1, 0.1, 1.0, 0.01, 0.1], strict=True
        )
    ]
    together = solve_many(problems)
    assert len(together) == len(problems)
    for problem, (_, _, scores, info) in zip(problems, together, strict=True):
        alone = solve(**problem)
        # Both near the optimum (float32 passes: as close as the float32 test above asks).
        np.testing.assert_allclose(scores, alone[2], rtol=0, atol=1e-5)
        top = np.argsort(-alone[2], kind="stable")[:10]
        np.testing.assert_allclose(np.sort(scores)[::-1][:10], alone[2][top], rtol=0, atol=1e-5)
        assert info.passes == alone[3].passes
    other = as_corpus(corpus_embeddings("cranfield"))
    with pytest.raises(ValueError, match="one corpus matrix"):
        solve_many([problems[0], {**problems[1], "corpus": other}])


def _top_solves(candidates: np.ndarray | None, k: int = 10):
    """The same problem solved for every score, and for the top k of ``candidates`` only."""
    from exemplar_svm._solver import CorpusStats, as_corpus, solve

    data = clustered(20_001, 32, seed=31)
    query, corpus = data[:1].astype(np.float64), as_corpus(data[1:])
    stats = CorpusStats.of(corpus)
    args = (query, corpus, np.ones(len(corpus)), np.empty((0, 32)), np.empty(0), 0.1)
    mask = np.ones(len(corpus), bool) if candidates is None else candidates
    return solve(*args, stats=stats), solve(*args, stats=stats, top=(k, mask)), mask


def _top_of(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    rows = np.flatnonzero(mask)
    return rows[np.lexsort((rows, -scores[rows]))[:k]]


def test_a_top_k_solve_bounds_the_last_verification_and_keeps_the_solution() -> None:
    full, top, mask = _top_solves(None)
    (coef, intercept, scores, info), (top_coef, top_intercept, top_scores, top_info) = full, top
    assert info.rounds == top_info.rounds == 2
    assert top_info.passes == info.passes - 1  # the second verification needed no pass
    np.testing.assert_allclose(top_coef, coef, rtol=0, atol=1e-9)
    assert abs(top_intercept - intercept) <= 1e-9
    # Every row scored is scored exactly; every other row was proven a non-support vector,
    # outside the top 10.
    scored = np.isfinite(top_scores)
    assert 0 < scored.sum() < len(scores) // 4
    assert np.isneginf(top_scores[~scored]).all()
    np.testing.assert_allclose(top_scores[scored], scores[scored], rtol=0, atol=1e-6)
    assert (scores[~scored] < -1).all() and top_info.support_vectors == info.support_vectors
    assert scores[~scored].max() < np.sort(scores)[-10]
    np.testing.assert_array_equal(_top_of(top_scores, mask, 10), _top_of(scores, mask, 10))


@pytest.mark.parametrize(
    ("share", "bounded"),
    [(0.5, True), (0.05, True), (0.0003, False)],
    ids=["half the rows", "5% of rows", "3 rows"],
)
def test_a_top_k_solve_scores_whatever_could_rank_among_the_candidates(
    share: float, bounded: bool
) -> None:
    # Random candidates: the best of them are support vectors, near the margin, where the bound
    # decides; with fewer candidates than hits any row could be one, and a pass scores them all.
    rng = np.random.default_rng(5)
    candidates = rng.random(20_000) < share
    full, top, mask = _top_solves(candidates)
    scores, top_scores = full[2], top[2]
    best = _top_of(scores, mask, 10)
    np.testing.assert_array_equal(_top_of(top_scores, mask, 10), best)
    np.testing.assert_allclose(top_scores[best], scores[best], rtol=0, atol=1e-6)
    if bounded:
        assert top[3].passes == full[3].passes - 1 and np.isneginf(top_scores).any()
    else:
        assert top[3].passes == full[3].passes and np.isfinite(top_scores).all()


def test_row_lengths_outside_the_principal_axes() -> None:
    from exemplar_svm._solver import CorpusStats, as_corpus

    corpus = as_corpus(clustered(800, 40, seed=24))
    stats = CorpusStats.of(corpus)
    residuals, longest = stats.residuals(corpus)
    axes, _ = stats.axes(corpus)
    rows = corpus.astype(np.float64)
    outside = np.linalg.norm(rows - (rows @ axes) @ axes.T, axis=1)
    assert (residuals >= outside).all() and (residuals <= outside + 1e-5).all()
    assert longest == pytest.approx(np.linalg.norm(rows, axis=1).max())
