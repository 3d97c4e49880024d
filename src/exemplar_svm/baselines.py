"""The "more like these, not like those" methods of a vector database, in numpy.

:func:`recommend_scores` scores every row of a corpus the way Qdrant's Recommend API does for a
collection with ``Distance.COSINE``, for each of its three strategies
(:data:`RECOMMEND_STRATEGIES`).
The formulas are those of Qdrant's engine (``lib/segment/src/vector_storage/query/reco_query.rs``
and ``lib/common/common/src/math.rs``) and of qdrant-client's local mode
(``qdrant_client/local/distances.py`` and ``local_collection.py``), which agree:

``"average_vector"``
    One search with the query ``v = mean(P)``, or ``v = 2 mean(P) - mean(N)`` when there are
    negatives, normalised: the score is ``cos(v, x)``. Needs a positive.
``"best_score"``
    With ``p = max cos(P, x)`` and ``n = max cos(N, x)`` (``-inf`` for an empty set): if
    ``p > n`` the score is ``s(p)``, else ``-s(n)``, where ``s(t) = (t / (1 + |t|) + 1) / 2``
    is the engine's "scaled fast sigmoid", into (0, 1). So every document nearer a positive than
    every negative ranks above every document that is not, and among the latter the farther from
    its nearest negative the better. A tie ``p == n`` takes the negative branch.
``"sum_scores"``
    ``sum cos(P, x) - sum cos(N, x)``.

``best_score`` and ``sum_scores`` accept negatives alone (Qdrant refuses only an empty
request); ``average_vector`` needs a positive. (``best_score`` and negatives alone came with
Qdrant 1.6, ``sum_scores`` with Qdrant 1.14.)

Examples
--------
>>> import numpy as np
>>> from exemplar_svm.baselines import recommend_scores
>>> corpus = np.eye(3, dtype=np.float32)
>>> recommend_scores(corpus, corpus[:1], corpus[1:2], "best_score").round(3).tolist()
[0.75, -0.75, -0.5]
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["RECOMMEND_STRATEGIES", "RecommendStrategy", "recommend_scores"]

RecommendStrategy = Literal["average_vector", "best_score", "sum_scores"]

#: Qdrant's recommend strategies, as its API spells them.
RECOMMEND_STRATEGIES: tuple[str, ...] = get_args(RecommendStrategy)


def recommend_scores(
    vectors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike | None = None,
    strategy: str = "average_vector",
) -> NDArray[np.float64]:
    """Score every corpus row as Qdrant's Recommend API does on a cosine collection.

    Parameters
    ----------
    vectors : array-like of shape (n, d)
        The corpus, L2-normalised rows (as Qdrant stores them in a cosine collection; they are
        used as given). float32 is used without a copy.
    positives : array-like of shape (p, d)
        Vectors to be near; ``p`` may be 0 (an empty list) for ``"best_score"`` and
        ``"sum_scores"``.
    negatives : array-like of shape (q, d), optional
        Vectors to be far from; none by default.
    strategy : {"average_vector", "best_score", "sum_scores"}, default="average_vector"
        Qdrant's strategy (its default is ``"average_vector"``); see the module docstring for
        the formulas. Like Qdrant, ``"best_score"`` and ``"sum_scores"`` normalise each example
        and ``"average_vector"`` normalises the combined query vector; a zero vector stays zero.

    Returns
    -------
    ndarray of shape (n,), float64
        The score of each row, higher is better: the ``score`` Qdrant returns for the point, up
        to float32 rounding (similarities are computed in float32, as Qdrant does).

    Raises
    ------
    ValueError
        For an unknown strategy, no examples at all, no positive with ``"average_vector"``,
        shapes that do not match, or an example that is not finite.
    """
    if strategy not in RECOMMEND_STRATEGIES:
        raise ValueError(
            f"unknown recommend strategy {strategy!r}; choose one of "
            f"{', '.join(RECOMMEND_STRATEGIES)}"
        )
    corpus = np.asarray(vectors, dtype=np.float32)
    if corpus.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, d), got shape {corpus.shape}")
    dim = corpus.shape[1]
    pos = _examples(positives, dim, "positives")
    neg = _examples(negatives, dim, "negatives")
    if strategy == "average_vector":
        if not len(pos):
            raise ValueError(
                "the 'average_vector' strategy needs at least one positive (as in Qdrant); "
                "'best_score' and 'sum_scores' accept negatives alone"
            )
        mean = pos.mean(axis=0)
        query = mean if not len(neg) else mean + mean - neg.mean(axis=0)
        direction = _unit(query[np.newaxis])[0].astype(np.float32)
        average: NDArray[np.float64] = (corpus @ direction).astype(np.float64)
        return average
    if not len(pos) and not len(neg):
        raise ValueError(f"the {strategy!r} strategy needs at least one positive or negative")
    examples = _unit(np.vstack([pos, neg])).astype(np.float32)
    similarities = (corpus @ examples.T).astype(np.float64)  # (n, p + q), as in float32
    to_positives, to_negatives = similarities[:, : len(pos)], similarities[:, len(pos) :]
    if strategy == "sum_scores":
        result: NDArray[np.float64] = to_positives.sum(axis=1) - to_negatives.sum(axis=1)
        return result
    n = len(corpus)
    best_positive = to_positives.max(axis=1) if len(pos) else np.full(n, -np.inf)
    best_negative = to_negatives.max(axis=1) if len(neg) else np.full(n, -np.inf)
    nearer_positive = best_positive > best_negative
    chosen = np.where(nearer_positive, best_positive, best_negative)  # finite: one set is not empty
    scaled = 0.5 * (chosen / (1.0 + np.abs(chosen)) + 1.0)
    best: NDArray[np.float64] = np.where(nearer_positive, scaled, -scaled)
    return best


def _examples(examples: ArrayLike | None, dim: int, name: str) -> NDArray[np.float64]:
    """``examples`` as a (m, dim) float64 matrix; ``None`` or an empty sequence gives m = 0."""
    if examples is None:
        return np.empty((0, dim))
    matrix = np.asarray(examples, dtype=np.float64)
    if matrix.size == 0:
        return np.empty((0, dim))
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(
            f"{name} must be a 2-D array of {dim}-dimensional rows, got shape {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return matrix


def _unit(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows divided by their norms; a zero row stays zero (as in Qdrant)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: NDArray[np.float64] = rows / np.where(norms > 0, norms, 1.0)
    return unit
