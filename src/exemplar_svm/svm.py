"""The exemplar SVM: a linear model trained per query, positives against negatives.

The solver itself lives in :mod:`exemplar_svm._solver`; scikit-learn's ``LinearSVC`` is the
reference it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_positive
from exemplar_svm._solver import as_corpus, solve

# Scoring a large float32 corpus in float64 would copy it whole; blocks keep the copy small.
_SCORE_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class LinearModel:
    """A trained linear scorer ``f(x) = coef @ x + intercept``.

    Attributes
    ----------
    coef : ndarray of shape (d,)
        The weight vector.
    intercept : float
        The bias term.
    """

    coef: NDArray[np.float64]
    intercept: float

    def decision_function(self, X: ArrayLike) -> NDArray[np.float64]:
        """Signed distance-like score of each row of ``X``; higher means more like the positives.

        Parameters
        ----------
        X : array-like of shape (n, d) or (d,)

        Returns
        -------
        ndarray of shape (n,)
        """
        array = np.asarray(X)
        if array.ndim == 1:
            array = array[np.newaxis, :]
        if array.ndim != 2 or array.shape[1] != self.coef.shape[0]:
            raise ValueError(
                f"dimension mismatch: X has shape {array.shape} but the model has "
                f"{self.coef.shape[0]} dimensions"
            )
        scores = np.empty(array.shape[0], dtype=np.float64)
        for start in range(0, array.shape[0], _SCORE_BLOCK_ROWS):
            block = array[start : start + _SCORE_BLOCK_ROWS].astype(np.float64, copy=False)
            scores[start : start + _SCORE_BLOCK_ROWS] = block @ self.coef
        scores += self.intercept
        return scores


def sample_costs(
    n_positives: int, negative_weights: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-sample loss weights of the positives and the negatives (before ``C``).

    This is scikit-learn's ``class_weight="balanced"`` computed from the sample weights: each
    class carries half of the total weight, shared among its rows in proportion to their own
    weight.
    """
    total = n_positives + float(negative_weights.sum())
    positive = np.full(n_positives, total / (2.0 * n_positives))
    negative = negative_weights * (total / (2.0 * float(negative_weights.sum())))
    return positive, negative


def objective(
    model: LinearModel,
    positives: ArrayLike,
    negatives: ArrayLike,
    *,
    C: float = 0.1,
    negative_weights: ArrayLike | None = None,
) -> float:
    """The primal objective that :func:`fit` minimises, evaluated at ``model``.

    ``1/2 (|w|^2 + b^2) + C * sum_i c_i * max(0, 1 - y_i (w @ x_i + b))^2`` with ``c_i`` from
    :func:`sample_costs`; liblinear regularises the intercept too.
    """
    pos, neg, weights = _prepare(positives, negatives, C, negative_weights)
    pos_cost, neg_cost = sample_costs(len(pos), weights)
    pos_slack = np.maximum(0.0, 1.0 - model.decision_function(pos))
    neg_slack = np.maximum(0.0, 1.0 + model.decision_function(neg))
    loss = pos_cost @ pos_slack**2 + neg_cost @ neg_slack**2
    w, b = model.coef, model.intercept
    return float(0.5 * (w @ w + b * b) + C * loss)


def fit(
    positives: ArrayLike,
    negatives: ArrayLike,
    *,
    C: float = 0.1,
    negative_weights: ArrayLike | None = None,
) -> LinearModel:
    """Train an exemplar SVM: ``positives`` labelled 1 against ``negatives`` labelled 0.

    Solves exactly the problem of ``sklearn.svm.LinearSVC(C=C, class_weight="balanced",
    loss="squared_hinge", penalty="l2", fit_intercept=True, intercept_scaling=1)`` fitted with
    ``sample_weight`` 1 for every positive and ``negative_weights`` for the negatives (see
    :func:`objective`). The solution is unique (the objective is strictly convex), so any exact
    solver returns the same model; this one reaches it with far less work than liblinear (see
    :mod:`exemplar_svm._solver`), reading the negatives in float32.

    Parameters
    ----------
    positives : array-like of shape (p, d) or (d,)
        The examples to find more of: usually the query embedding.
    negatives : array-like of shape (n, d)
        The background: usually the whole corpus.
    C : float, default=0.1
        Loss weight; smaller values keep the model closer to the mean difference of the classes.
    negative_weights : array-like of shape (n,), optional
        Relative weight of each negative (all 1 by default).

    Returns
    -------
    LinearModel

    Examples
    --------
    >>> import numpy as np
    >>> from exemplar_svm import fit
    >>> rng = np.random.default_rng(0)
    >>> corpus = rng.normal(size=(200, 8))
    >>> model = fit(corpus[0], corpus[1:])
    >>> int(np.argmax(model.decision_function(corpus)))
    0
    """
    pos, neg, weights = _prepare(positives, negatives, C, negative_weights)
    coef, intercept, _, _ = solve(
        pos, as_corpus(neg), weights, np.empty((0, pos.shape[1])), np.empty(0), C
    )
    return LinearModel(coef=coef, intercept=intercept)


# Larger inputs overflow the float32 products the solver reads the negatives through.
_LARGEST = 1e30


def _prepare(
    positives: ArrayLike, negatives: ArrayLike, C: float, negative_weights: ArrayLike | None
) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.float64]]:
    check_positive(C, "C")
    pos = as_matrix(positives, "positives")
    neg = as_matrix(negatives, "negatives", dim=pos.shape[1])
    for name, rows in (("positives", pos), ("negatives", neg)):
        largest = float(np.abs(rows).max())
        if largest > _LARGEST:
            raise ValueError(
                f"{name} has values up to {largest:.3g}, beyond the {_LARGEST:.0e} that the "
                "solver's float32 arithmetic holds; rescale the vectors (normalise them, as "
                "embeddings usually are)"
            )
    if negative_weights is None:
        weights = np.ones(len(neg))
    else:
        weights = np.asarray(negative_weights, dtype=np.float64).ravel()
        if weights.shape != (len(neg),):
            raise ValueError(
                f"negative_weights has {weights.size} entries but there are {len(neg)} negatives"
            )
        if not (np.isfinite(weights).all() and (weights > 0).all()):
            raise ValueError("negative_weights must all be positive finite numbers")
    return pos, neg, weights
